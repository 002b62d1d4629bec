//! A replicated key-value map on three nodes talking gRPC on loopback.
//! Run: `cargo run -p keel-node --example grpc_kv`.

mod kv;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{serve, GrpcTransport, NodeConfig, RaftNode, RaftService, Role};
use kv::{put, Kv};

const CLUSTER: u64 = 7;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Bind first, so every node knows every address before starting.
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listeners.insert(id, listener);
    }
    let members: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("bound").to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
        config.initial_members = members.clone();
        config.tick_interval = Duration::from_millis(20);
        let transport = GrpcTransport::new(CLUSTER, members.clone());
        let node = RaftNode::start(config, Kv::default(), transport).expect("starts");
        let service = RaftService::new(CLUSTER, node.inbox());
        tokio::spawn(serve(listener, service, std::future::pending()));
        nodes.push(node);
    }

    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    leader
        .propose(put("planet", "earth"))
        .await
        .expect("committed");
    for node in &nodes {
        let v = node
            .read(|kv| kv.0.get("planet").cloned())
            .await
            .expect("read");
        println!(
            "node {} at {} reads planet = {v:?}",
            node.status().id,
            members[&node.status().id]
        );
        assert_eq!(v.as_deref(), Some("earth"));
    }
    for node in &nodes {
        node.stop().await;
    }
}
