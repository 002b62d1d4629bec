//! The cluster scenarios over gRPC on loopback.

mod common;

use common::Net;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_commits_and_reads_linearizably_from_followers() {
    common::elects_commits_and_reads_linearizably_from_followers(Net::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_leader_stops_and_loses_no_acknowledged_write() {
    common::fails_over_when_the_leader_stops_and_loses_no_acknowledged_write(Net::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_everything_from_its_wal() {
    common::a_restarted_cluster_recovers_everything_from_its_wal(Net::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() {
    common::a_lagging_node_catches_up_by_snapshot(Net::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed() {
    common::a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed(Net::Grpc).await;
}
