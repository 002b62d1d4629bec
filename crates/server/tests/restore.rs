//! `keel snapshot restore`: a backup taken from a running cluster becomes
//! the data directories of a new three-member cluster, which starts from
//! it with the same keys, history and hash, and takes writes.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::{Cluster, MaintenanceClient};
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::{LeaseGrantRequest, PutRequest, SnapshotRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_three_member_cluster_with_the_same_hash() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    for i in 0..20 {
        common::put(&cluster, leader, &format!("k{}", i % 7), &format!("v{i}"))
            .await
            .unwrap();
    }
    let lease = LeaseClient::new(cluster.channel(leader).await)
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let put = cluster
        .kv(leader)
        .await
        .put(PutRequest {
            key: Bytes::from_static(b"leased"),
            value: Bytes::from_static(b"yes"),
            lease,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let revision = put.header.unwrap().revision;
    let hash = cluster.hash_kv(leader, revision).await;

    // The backup, as etcdctl snapshot save receives it.
    let mut stream = MaintenanceClient::new(cluster.channel(leader).await)
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut backup = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        backup.extend_from_slice(&chunk.blob);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    std::fs::write(&file, &backup).unwrap();

    // The old cluster goes; each member's data directory is made anew from
    // the backup, for a cluster of the same names and peer URLs.
    for i in 0..3 {
        cluster.stop(i);
    }
    let initial = keel_testkit::initial_cluster(
        &cluster
            .members
            .iter()
            .map(|m| m.spec.clone())
            .collect::<Vec<_>>(),
    );
    let exe = env!("CARGO_BIN_EXE_keel");
    for m in &cluster.members {
        std::fs::remove_dir_all(&m.spec.data_dir).unwrap();
        let out = Command::new(exe)
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&m.spec.data_dir)
            .args(["--name", &m.spec.name, "--initial-cluster", &initial])
            .args(["--initial-cluster-token", "testkit"])
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.spec.peer))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A second restore into the same directory is refused.
        let again = Command::new(exe)
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&m.spec.data_dir)
            .output()
            .unwrap();
        assert!(!again.status.success());
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader().await;
    let next = common::put(&cluster, leader, "after", "restore")
        .await
        .unwrap();
    assert_eq!(
        next,
        revision + 1,
        "the new cluster continues the revisions"
    );
    for i in 0..3 {
        cluster.wait_applied(i, 1).await;
        for _ in 0..50 {
            if common::read_prefix(&cluster, i, "after", true)
                .await
                .is_ok_and(|r| r.count == 1)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(cluster.hash_kv(i, revision).await, hash, "member {i}");
        let leased = common::read_prefix(&cluster, i, "leased", true)
            .await
            .unwrap();
        assert_eq!(leased.kvs[0].lease, lease, "member {i}");
        let status = cluster.status(i).await.unwrap();
        assert!(status.errors.is_empty(), "{status:?}");
    }
    // The lease came along and still holds its key.
    let ttl = LeaseClient::new(cluster.channel(leader).await)
        .lease_time_to_live(keel_api::etcdserverpb::LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ttl.ttl > 0, "{ttl:?}");
    assert_eq!(ttl.keys, vec![Bytes::from_static(b"leased")]);
    let members =
        keel_api::etcdserverpb::cluster_client::ClusterClient::new(cluster.channel(leader).await)
            .member_list(keel_api::etcdserverpb::MemberListRequest { linearizable: true })
            .await
            .unwrap()
            .into_inner()
            .members;
    let mut names: Vec<String> = members.into_iter().map(|m| m.name).collect();
    names.sort();
    assert_eq!(names, ["k1", "k2", "k3"]);
}
