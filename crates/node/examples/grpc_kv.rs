//! A replicated key-value map on three nodes talking gRPC on loopback.
//! Run: `cargo run -p keel-node --example grpc_kv`.

mod kv;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{NodeConfig, RaftNode};
use kv::{put, Kv};

const CLUSTER: u64 = 7;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let members: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", 27000 + id)))
        .collect();
    let mut nodes = Vec::new();
    for (&id, address) in &members {
        let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
        config.initial_members = members.clone();
        config.tick_interval = Duration::from_millis(20);
        let node = RaftNode::start_grpc(config, Kv::default(), CLUSTER, address).await;
        nodes.push(node.expect("starts"));
    }

    let leader_id = nodes[0]
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("a leader");
    let leader = &nodes[leader_id as usize - 1];
    leader
        .propose(put("planet", "earth"))
        .await
        .expect("committed");
    for node in &nodes {
        let v = node
            .read(|kv| kv.0.get("planet").cloned())
            .await
            .expect("read");
        let id = node.status().id;
        println!("node {id} at {} reads planet = {v:?}", members[&id]);
        assert_eq!(v.as_deref(), Some("earth"));
    }
    for node in &nodes {
        node.stop().await;
    }
}
