//! The cluster scenarios over in-process channels.

mod common;

use common::Net;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_commits_and_reads_linearizably_from_followers() {
    common::elects_commits_and_reads_linearizably_from_followers(Net::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_leader_stops_and_loses_no_acknowledged_write() {
    common::fails_over_when_the_leader_stops_and_loses_no_acknowledged_write(Net::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_everything_from_its_wal() {
    common::a_restarted_cluster_recovers_everything_from_its_wal(Net::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() {
    common::a_lagging_node_catches_up_by_snapshot(Net::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed() {
    common::a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed(Net::Local).await;
}

/// Only the in-process network can lose messages at random on command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_through_a_network_that_loses_a_fifth_of_all_batches() {
    let c = common::Cluster::new(Net::Local, 3, 0, 20).await;
    c.local.set_loss(0.2, 7);
    let mut total = 0;
    for _ in 0..50 {
        total = c.add("lossy", 1).await;
    }
    assert_eq!(total, 50);
    c.local.set_loss(0.0, 0);
    for id in 1..=3 {
        assert_eq!(c.read(id, "lossy").await, Some(50));
    }
}
