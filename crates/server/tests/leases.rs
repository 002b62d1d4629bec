//! Leases on real members: leases kept alive through a follower outlive a
//! leader kill while the others expire on every member alike, and a
//! lease's expiry stays within its bounds however often the leader moves,
//! and leases come back from a cluster restart with their full TTL.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{read_prefix, Cluster, MaintenanceClient};
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Grants a lease of `ttl` seconds through member `i` and attaches `key`.
async fn lease_with_key(cluster: &Cluster, i: usize, ttl: i64, key: &str) -> i64 {
    let id = LeaseClient::new(cluster.channel(i).await)
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    cluster
        .kv(i)
        .await
        .put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            lease: id,
            ..Default::default()
        })
        .await
        .expect("put with lease");
    id
}

async fn count(cluster: &Cluster, i: usize, prefix: &str) -> Option<usize> {
    read_prefix(cluster, i, prefix, true)
        .await
        .ok()
        .map(|r| r.kvs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_kept_alive_through_a_follower_outlive_a_leader_kill_and_the_rest_expire_everywhere()
{
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // 1,000 leases, each with a key: half kept alive (TTL 5 s), half not
    // (TTL 1 s, the minimum with these election timeouts).
    let mut kept = Vec::new();
    for chunk in 0..10 {
        let mut grants = tokio::task::JoinSet::new();
        for n in chunk * 100..(chunk + 1) * 100 {
            let (ttl, key) = if n % 2 == 0 {
                (5, format!("kept/{n:04}"))
            } else {
                (1, format!("dropped/{n:04}"))
            };
            let channel = cluster.channel(follower).await;
            grants.spawn(async move {
                let id = LeaseClient::new(channel.clone())
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
                    .expect("grant")
                    .into_inner()
                    .id;
                keel_api::etcdserverpb::kv_client::KvClient::new(channel)
                    .put(PutRequest {
                        key: Bytes::from(key),
                        value: Bytes::from_static(b"v"),
                        lease: id,
                        ..Default::default()
                    })
                    .await
                    .expect("put with lease");
                (ttl, id)
            });
        }
        while let Some(granted) = grants.join_next().await {
            let (ttl, id) = granted.unwrap();
            if ttl == 5 {
                kept.push(id);
            }
        }
    }
    assert_eq!(kept.len(), 500);

    // Keep-alives for the kept leases through the follower, twice a second,
    // on one stream as etcd's clients send them.
    let (requests, request_stream) = mpsc::channel(1024);
    let mut responses = LeaseClient::new(cluster.channel(follower).await)
        .lease_keep_alive(ReceiverStream::new(request_stream))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let ids = kept.clone();
    let sender = tokio::spawn(async move {
        loop {
            for id in &ids {
                if requests
                    .send(LeaseKeepAliveRequest { id: *id })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let reader = tokio::spawn(async move {
        let mut lost = 0;
        while let Ok(Some(response)) = responses.message().await {
            if response.ttl <= 0 {
                lost += 1;
            }
        }
        lost
    });

    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(leader);

    // For six seconds every kept key stays, on both members left.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for i in [follower, other] {
            if let Some(n) = count(&cluster, i, "kept/").await {
                assert_eq!(n, 500, "a kept lease expired early on member {i}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The others are gone from both.
    for i in [follower, other] {
        assert_eq!(count(&cluster, i, "dropped/").await, Some(0), "member {i}");
    }
    sender.abort();
    let _ = sender.await;

    // Both members hold the same history.
    let revision = read_prefix(&cluster, follower, "kept/", false)
        .await
        .expect("read")
        .header
        .unwrap()
        .revision;
    let applied = cluster.status(follower).await.unwrap().raft_index;
    cluster.wait_applied(other, applied).await;
    assert_eq!(
        cluster.hash_kv(follower, revision).await,
        cluster.hash_kv(other, revision).await
    );
    drop(cluster);
    assert_eq!(reader.await.unwrap(), 0, "a kept lease was answered TTL 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_expires_within_its_bounds_however_often_the_leader_moves() {
    const TTL: i64 = 3;
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let id = lease_with_key(&cluster, leader, TTL, "bounded").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.status(i).await.unwrap().header.unwrap().member_id);
    }

    // One keep-alive, through another member.
    let (requests, request_stream) = mpsc::channel(1);
    let mut responses = LeaseClient::new(cluster.channel((leader + 1) % 3).await)
        .lease_keep_alive(ReceiverStream::new(request_stream))
        .await
        .unwrap()
        .into_inner();
    let sent = Instant::now();
    requests.send(LeaseKeepAliveRequest { id }).await.unwrap();
    let answer = responses.message().await.unwrap().unwrap();
    let acked = Instant::now();
    assert_eq!(answer.ttl, TTL);

    // Leadership moves every 400 ms while the key is watched for.
    let mut moves = 0;
    let gone = loop {
        let current = cluster.wait_for_leader().await;
        let target = ids[(current + 1) % 3];
        moves += usize::from(
            MaintenanceClient::new(cluster.channel(current).await)
                .move_leader(MoveLeaderRequest { target_id: target })
                .await
                .is_ok(),
        );
        let next_move = Instant::now() + Duration::from_millis(400);
        let mut gone = None;
        while Instant::now() < next_move {
            if count(&cluster, (current + 2) % 3, "bounded").await == Some(0) {
                gone = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(at) = gone {
            break at;
        }
        assert!(
            acked.elapsed() < Duration::from_secs(20),
            "the lease never expired"
        );
    };
    assert!(moves >= 4, "the leader moved only {moves} times");
    let ttl = Duration::from_secs(TTL as u64);
    assert!(
        gone >= sent + ttl,
        "expired {:?} after the keep-alive was sent, under its TTL",
        gone - sent
    );
    // TTL, plus the renewal interval (none: a keep-alive is answered once
    // applied), plus an election timeout (0.5 s), plus the expiry task's
    // tick and a proposal across a leader move.
    let bound = ttl + Duration::from_millis(500) + Duration::from_millis(1500);
    assert!(
        gone <= acked + bound,
        "expired {:?} after the keep-alive was answered",
        gone - acked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_their_keys_survive_a_cluster_restart_without_expiring_at_once() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let short = lease_with_key(&cluster, leader, 4, "restart/short").await;
    let long = lease_with_key(&cluster, leader, 60, "restart/long").await;
    // Every member has applied them before the restart.
    let applied = cluster.status(leader).await.unwrap().raft_index;
    for i in 0..3 {
        cluster.wait_applied(i, applied).await;
    }
    for i in 0..3 {
        cluster.stop(i);
    }
    // Longer than the short lease's TTL passes while the cluster is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader().await;
    // Both leases came back with their full TTL from the restart: nothing
    // expired at once.
    let mut leases = LeaseClient::new(cluster.channel(leader).await);
    for (id, ttl) in [(short, 4), (long, 60)] {
        let left = leases
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
            .await
            .expect("time to live")
            .into_inner();
        assert_eq!(left.granted_ttl, ttl);
        assert!(left.ttl > 0 && left.ttl <= ttl, "{left:?}");
        assert_eq!(left.keys.len(), 1, "{left:?}");
    }
    assert_eq!(count(&cluster, leader, "restart/").await, Some(2));
    // Then the short one runs out, and only it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&cluster, leader, "restart/").await != Some(1) {
        assert!(Instant::now() < deadline, "the short lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = read_prefix(&cluster, leader, "restart/", false)
        .await
        .unwrap();
    assert_eq!(kept.kvs[0].key, "restart/long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_get_etcds_answers_and_lose_nothing() {
    let cluster = Cluster::start(1, &[]).await;
    let mut leases = LeaseClient::new(cluster.channel(0).await);
    // A TTL of 0 or below is raised to the minimum (1 s with these election
    // timeouts), as etcd does.
    for ttl in [0, -5] {
        let granted = leases
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .expect("grant")
            .into_inner();
        assert_eq!(granted.ttl, 1, "TTL {ttl}");
    }
    let too_large = leases
        .lease_grant(LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await
        .expect_err("too large");
    assert_eq!(too_large.message(), "etcdserver: too large lease TTL");
    leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 77 })
        .await
        .expect("an ID of the client's");
    let duplicate = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 77 })
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.message(), "etcdserver: lease already exists");
    let unknown = leases
        .lease_revoke(LeaseRevokeRequest { id: 78 })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.message(), "etcdserver: requested lease not found");

    // A keep-alive of an unknown lease is answered TTL 0, and the stream
    // goes on.
    let (requests, request_stream) = mpsc::channel(4);
    let mut answers = leases
        .lease_keep_alive(ReceiverStream::new(request_stream))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(LeaseKeepAliveRequest { id: 78 })
        .await
        .unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl, 0);
    requests
        .send(LeaseKeepAliveRequest { id: 77 })
        .await
        .unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl, 60);

    // A put with a revoked lease is refused; the lease's keys are gone and
    // the other keys stay.
    let id = lease_with_key(&cluster, 0, 60, "bad/leased").await;
    put_plain(&cluster, "bad/plain").await;
    leases
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("revoke");
    let refused = cluster
        .kv(0)
        .await
        .put(PutRequest {
            key: Bytes::from_static(b"bad/late"),
            value: Bytes::from_static(b"v"),
            lease: id,
            ..Default::default()
        })
        .await
        .expect_err("a revoked lease");
    assert_eq!(refused.message(), "etcdserver: requested lease not found");
    let left = read_prefix(&cluster, 0, "bad/", false).await.unwrap();
    let keys: Vec<_> = left.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, ["bad/plain"]);
    // Lease 77 was not touched by any of it.
    let alive = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: 77,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alive.granted_ttl, 60);
}

async fn put_plain(cluster: &Cluster, key: &str) {
    common::put(cluster, 0, key, "v").await.expect("put");
}
