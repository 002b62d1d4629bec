//! The `keel` binary as users run it: real processes, real gRPC clients.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{put, read_prefix, Cluster};

/// Checks that member `i` holds exactly `expected` under `prefix`.
async fn assert_holds(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    expected: &BTreeMap<String, String>,
    serializable: bool,
) {
    let response = read_prefix(cluster, i, prefix, serializable)
        .await
        .unwrap_or_else(|e| panic!("reading from member {i}: {e}"));
    let got: BTreeMap<String, String> = response
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "member {i} lost keys, e.g. {missing:?}");
    assert_eq!(&got, expected, "member {i} holds other values");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_and_a_restarted_cluster_read_back_everything() {
    // Snapshots every 100 entries, so restarts go through snapshot + log tail.
    let mut cluster = Cluster::start(3, &["--snapshot-count", "100"]).await;
    let mut expected = BTreeMap::new();
    for n in 0..300 {
        let (key, value) = (format!("r/{n:04}"), format!("v{n}"));
        // Every member takes writes: followers forward them.
        put(&cluster, n % 3, &key, &value).await.expect("put");
        expected.insert(key, value);
    }

    cluster.stop(2);
    for n in 300..500 {
        let (key, value) = (format!("r/{n:04}"), format!("v{n}"));
        put(&cluster, n % 2, &key, &value)
            .await
            .expect("put while one member is down");
        expected.insert(key, value);
    }
    cluster.spawn(2);
    let leader = cluster.wait_for_leader().await;
    let commit = cluster
        .status(leader)
        .await
        .expect("leader status")
        .raft_index;
    cluster.wait_applied(2, commit).await;
    assert_holds(&cluster, 2, "r/", &expected, true).await;

    let revision = cluster
        .status(leader)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    for i in 0..3 {
        cluster.stop(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_for_leader().await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        assert_holds(&cluster, i, "r/", &expected, false).await;
        hashes.push(cluster.hash_kv(i, revision).await);
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "hashes differ: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.spec.client.clone())
        .collect();
    let mut writers = Vec::new();
    for w in 0..4 {
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        let endpoints = endpoints.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut target = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (key, value) = (format!("w/{w}/{n:06}"), format!("{n}"));
                let channel = tonic::transport::Channel::from_shared(format!(
                    "http://{}",
                    endpoints[target % endpoints.len()]
                ))
                .unwrap()
                .connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(3))
                .connect_lazy();
                let result = keel_api::etcdserverpb::kv_client::KvClient::new(channel)
                    .put(keel_api::etcdserverpb::PutRequest {
                        key: key.clone().into_bytes().into(),
                        value: value.clone().into_bytes().into(),
                        ..Default::default()
                    })
                    .await;
                match result {
                    Ok(_) => {
                        acknowledged.lock().unwrap().insert(key, value);
                        n += 1;
                    }
                    // Unacknowledged: it may or may not have been applied.
                    // Move on to the next key and another member.
                    Err(_) => {
                        n += 1;
                        target += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = cluster.wait_for_leader().await;
    let before = acknowledged.lock().unwrap().len();
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let expected = acknowledged.lock().unwrap().clone();
    assert!(before > 20, "too few writes before the kill ({before})");
    assert!(
        expected.len() > before,
        "no write was acknowledged after the leader died"
    );

    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    // Acknowledged writes must all be there; unacknowledged ones may be too.
    for &i in &survivors {
        let response = read_prefix(&cluster, i, "w/", false).await.expect("read");
        let got: BTreeMap<String, String> = response
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect();
        for (key, value) in &expected {
            assert_eq!(
                got.get(key),
                Some(value),
                "member {i} lost acknowledged {key}"
            );
        }
    }

    // The killed member comes back, catches up and agrees byte for byte.
    cluster.spawn(leader);
    let current = cluster.wait_for_leader().await;
    let status = cluster.status(current).await.unwrap();
    cluster.wait_applied(leader, status.raft_index).await;
    let revision = status.header.unwrap().revision;
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(cluster.hash_kv(i, revision).await);
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "hashes differ: {hashes:?}"
    );
}

/// `--auto-compaction-*`: the leader compacts history older than the
/// retention on its own, and physically removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_automatically_by_the_retention() {
    use keel_api::etcdserverpb::RangeRequest;

    let cluster = Cluster::start(
        1,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    )
    .await;
    for i in 0..5 {
        put(&cluster, 0, "counter", &i.to_string())
            .await
            .expect("put");
    }
    let mut kv = cluster.kv(0).await;
    let old_read = RangeRequest {
        key: b"counter".to_vec().into(),
        revision: 2,
        ..Default::default()
    };
    // Liveness, not speed: the compaction must come, within a generous bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match kv.range(old_read.clone()).await {
            Err(status)
                if status
                    .message()
                    .contains("required revision has been compacted") =>
            {
                break
            }
            Ok(_) => {}
            Err(status) => panic!("reading revision 2: {status}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history was not compacted automatically"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What is current survives.
    let now = kv
        .range(RangeRequest {
            key: b"counter".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(&now.kvs[0].value[..], b"4");
}

/// A member added as a learner stays one once it has caught up: it is
/// promoted only when asked. (Its first act on joining, recording its name
/// and URLs, once read the learner flag from its own store before that
/// store held its record, asked to vote, and the leader promoted it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_as_a_learner_stays_one_after_catching_up() {
    use keel_api::etcdserverpb::cluster_client::ClusterClient;
    use keel_api::etcdserverpb::MemberListRequest;

    let mut cluster = Cluster::start(1, &[]).await;
    for i in 0..200 {
        put(&cluster, 0, &format!("k{i}"), "v").await.unwrap();
    }
    let (learner, id) = cluster.add_member(0, true).await.expect("member add");
    // Caught up: it answers with the leader's revision.
    let revision = cluster.status(0).await.unwrap().header.unwrap().revision;
    let mut caught_up = false;
    for _ in 0..100 {
        if cluster
            .status(learner)
            .await
            .and_then(|s| s.header)
            .is_some_and(|h| h.revision >= revision)
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the learner did not catch up");
    // The leader looks for learners to promote every 200 ms; give it time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let members = ClusterClient::new(cluster.channel(0).await)
        .member_list(MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner()
        .members;
    let member = members.iter().find(|m| m.id == id).expect("the learner");
    assert!(
        member.is_learner,
        "promoted without being asked: {member:?}"
    );
    assert!(!member.name.is_empty(), "it published its name: {member:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    // A follower sends the writes that queue up for the leader in batches:
    // each caller must still get the answer of its own write.
    let cluster = Cluster::start(3, &[]).await;
    let follower = (cluster.wait_for_leader().await + 1) % 3;
    let kv = cluster.kv(follower).await;
    const WRITES: usize = 400;
    let wave = |value: &'static str, prev_kv: bool| {
        let tasks: Vec<_> = (0..WRITES)
            .map(|n| {
                let mut kv = kv.clone();
                tokio::spawn(async move {
                    let request = keel_api::etcdserverpb::PutRequest {
                        key: format!("batch/{n:04}").into_bytes().into(),
                        value: format!("{value}{n}").into_bytes().into(),
                        prev_kv,
                        ..Default::default()
                    };
                    (n, kv.put(request).await.expect("put").into_inner())
                })
            })
            .collect();
        async move {
            let mut answers = Vec::new();
            for task in tasks {
                answers.push(task.await.expect("put task"));
            }
            answers
        }
    };
    wave("first", false).await;
    let answers = wave("second", true).await;
    let mut revisions = std::collections::BTreeSet::new();
    for (n, answer) in answers {
        let prev = answer.prev_kv.expect("the first wave's version");
        assert_eq!(
            (prev.key.as_ref(), prev.value.as_ref()),
            (
                format!("batch/{n:04}").as_bytes(),
                format!("first{n}").as_bytes()
            ),
            "write {n} got another write's answer"
        );
        let revision = answer.header.expect("header").revision;
        assert!(
            revisions.insert(revision),
            "two writes answered with revision {revision}"
        );
    }
    let expected = (0..WRITES)
        .map(|n| (format!("batch/{n:04}"), format!("second{n}")))
        .collect();
    assert_holds(&cluster, follower, "batch/", &expected, false).await;
}
