//! The cluster scenarios over in-process channels.

mod common;

use common::Net;

all_scenarios!(Local);

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
