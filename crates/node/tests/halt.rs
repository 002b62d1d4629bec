//! A node whose state machine cannot go on stops, with a clear error,
//! instead of logging and carrying on: a committed entry that does not
//! decode, or `apply_batch` answering with the wrong number of responses.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_node::{LocalNetwork, NodeConfig, ProposeError, RaftNode, Role, StateMachine};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// A command that encodes whatever it holds but refuses to decode `POISON`,
/// as a command written by a newer, incompatible version would.
#[derive(Serialize)]
struct Command(u8);

const POISON: u8 = 0xFF;

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            POISON => Err(D::Error::custom("poisoned command")),
            v => Ok(Command(v)),
        }
    }
}

/// Sums commands; with `drop_responses`, `apply_batch` returns none.
#[derive(Default)]
struct Sum {
    total: u64,
    drop_responses: bool,
}

impl StateMachine for Sum {
    type Command = Command;
    type Response = u64;
    type Snapshot = u64;

    fn apply(&mut self, _index: u64, Command(v): Command) -> u64 {
        self.total += u64::from(v);
        self.total
    }

    fn apply_batch(&mut self, commands: Vec<(u64, Command)>) -> Vec<u64> {
        let responses: Vec<u64> = commands
            .into_iter()
            .map(|(index, c)| self.apply(index, c))
            .collect();
        if self.drop_responses {
            Vec::new()
        } else {
            responses
        }
    }

    fn snapshot(&self) -> u64 {
        self.total
    }

    fn write_snapshot(view: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        keel_node::write_serde_snapshot(&view, out)
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        self.total = keel_node::read_serde_snapshot(snapshot)?;
        Ok(())
    }
}

/// A single-node cluster, waited on until it leads.
async fn single_node(dir: &tempfile::TempDir, sm: Sum) -> RaftNode<Sum> {
    let mut config = NodeConfig::new(1, dir.path());
    config.initial_members = BTreeMap::from([(1, "local".to_string())]);
    config.tick_interval = Duration::from_millis(5);
    config.sync_wal = false;
    let network = LocalNetwork::new();
    let node = RaftNode::start(config, sm, network.transport(1)).expect("starts");
    network.register(1, node.inbox());
    let mut status = node.watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.role == Role::Leader),
    )
    .await
    .expect("elected in time")
    .expect("running");
    node
}

/// Waits until the node reports that it stopped.
async fn stopped(node: &RaftNode<Sum>) {
    let mut status = node.watch();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| !s.running))
        .await
        .expect("the node stops in time")
        .ok();
}

#[tokio::test]
async fn a_committed_entry_that_does_not_decode_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(&dir, Sum::default()).await;
    assert_eq!(node.propose(Command(2)).await, Ok(2));
    assert_eq!(
        node.propose(Command(POISON)).await,
        Err(ProposeError::Indeterminate),
        "the proposal is answered when the node stops: committed, not applied here"
    );
    stopped(&node).await;
    assert!(!node.status().running);
    assert_eq!(node.propose(Command(1)).await, Err(ProposeError::Stopped));
}

#[tokio::test]
async fn a_state_machine_answering_the_wrong_number_of_commands_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let sm = Sum {
        drop_responses: true,
        ..Sum::default()
    };
    let node = single_node(&dir, sm).await;
    // Committed, so it may be applied elsewhere: not `Stopped`.
    assert_eq!(
        node.propose(Command(2)).await,
        Err(ProposeError::Indeterminate)
    );
    stopped(&node).await;
    assert!(!node.status().running);
}
