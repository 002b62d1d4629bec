//! A replicated key-value map on three nodes in one process, over in-memory
//! channels. Run: `cargo run -p keel-node --example local_kv`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use keel_node::{LocalNetwork, NodeConfig, RaftNode, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// The replicated state: a map from keys to values.
#[derive(Default)]
struct Kv(BTreeMap<String, String>);

/// What clients can ask for.
#[derive(Serialize, Deserialize)]
enum Command {
    Put { key: String, value: String },
}

impl StateMachine for Kv {
    type Command = Command;
    type Response = Option<String>; // The previous value.

    fn apply(&mut self, _index: u64, command: Command) -> Option<String> {
        match command {
            Command::Put { key, value } => self.0.insert(key, value),
        }
    }

    fn snapshot(&self) -> Bytes {
        postcard::to_allocvec(&self.0)
            .expect("a map always encodes")
            .into()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0 = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

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
        let node = RaftNode::start(config, Kv::default(), network.transport(id)).expect("starts");
        network.register(id, node.inbox());
        nodes.push(node);
    }

    // Wait for a leader, then write through it and read from a follower.
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let put = |k: &str, v: &str| Command::Put {
        key: k.into(),
        value: v.into(),
    };
    leader
        .propose(put("color", "blue"))
        .await
        .expect("committed");
    let previous = leader
        .propose(put("color", "green"))
        .await
        .expect("committed");
    println!(
        "leader is node {}; previous color was {previous:?}",
        leader.status().id
    );

    let follower = nodes
        .iter()
        .find(|n| n.status().id != leader.status().id)
        .expect("a follower");
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
