//! A replicated key-value map on three nodes in one process, over in-memory
//! channels. Run: `cargo run -p keel-node --example local_kv`.

mod kv;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{LocalNetwork, NodeConfig, RaftNode};
use kv::{put, Kv};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let network = LocalNetwork::new();
    let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
        config.initial_members = members.clone();
        config.tick_interval = Duration::from_millis(10);
        nodes.push(RaftNode::start_local(config, Kv::default(), &network).expect("starts"));
    }

    // Write through the leader, read from a follower.
    let leader_id = nodes[0]
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("a leader");
    let leader = &nodes[leader_id as usize - 1];
    leader
        .propose(put("color", "blue"))
        .await
        .expect("committed");
    let previous = leader
        .propose(put("color", "green"))
        .await
        .expect("committed");
    println!("leader is node {leader_id}; previous color was {previous:?}");

    let follower = &nodes[leader_id as usize % 3];
    let color = follower
        .read(|kv| kv.0.get("color").cloned())
        .await
        .expect("read");
    println!("node {} reads color = {color:?}", follower.status().id);
    assert_eq!(color.as_deref(), Some("green"));

    for node in &nodes {
        node.stop().await;
    }
}
