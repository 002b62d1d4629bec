//! Fail-over with a client loop: three gRPC nodes, a client that writes
//! through any running node (followers pass proposals on to the leader),
//! and the leader stopped half-way. Each error says whether the command
//! may have been applied, so the client knows when a retry is safe. Run:
//! `cargo run -p keel-node --example failover`.

mod kv;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{NodeConfig, Outcome, RaftNode};
use kv::{put, Kv};

/// The first node still running.
fn running(nodes: &[RaftNode<Kv>]) -> &RaftNode<Kv> {
    nodes
        .iter()
        .find(|n| n.status().running)
        .expect("a node runs")
}

/// Proposes through any running node until the write is in.
async fn write(nodes: &[RaftNode<Kv>], key: &str, value: &str) {
    loop {
        match running(nodes).propose(put(key, value)).await {
            Ok(_) => return,
            // Never applied: retrying is safe.
            Err(e) if e.outcome() == Outcome::NotApplied => {}
            // Maybe applied (the leader stopped with it): a put is
            // idempotent, so retrying is safe here too; a counter would
            // read the state back first.
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let members: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 27100 + id)))
        .collect();
    let mut nodes = Vec::new();
    for (&id, address) in &members {
        let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
        config.initial_members = members.clone();
        config.tick_interval = Duration::from_millis(20);
        nodes.push(
            RaftNode::start_grpc(config, Kv::default(), 7, address)
                .await
                .expect("starts"),
        );
    }
    for i in 0..20 {
        if i == 10 {
            let leader = running(&nodes)
                .wait_for_leader(Duration::from_secs(5))
                .await;
            println!("stopping the leader, node {leader:?}");
            nodes[leader.expect("a leader") as usize - 1].stop().await;
        }
        write(&nodes, &format!("job-{i}"), "done").await;
    }
    let count = running(&nodes).read(|kv| kv.0.len()).await.expect("read");
    println!("node {} holds {count} jobs", running(&nodes).status().id);
    assert_eq!(count, 20);
    for node in &nodes {
        node.stop().await;
    }
}
