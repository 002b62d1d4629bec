//! # keel-node
//!
//! A replicated state machine of your own types: a [`RaftNode`] runs the
//! keel-raft consensus core on tokio over a write-ahead log and a
//! [`Transport`], applies committed commands to your [`StateMachine`], and
//! answers each proposal with your state machine's typed response.
//!
//! ## Quickstart
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! use keel_node::{LocalNetwork, NodeConfig, RaftNode, StateMachine};
//!
//! /// The replicated state: a counter.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64; // add this much
//!     type Response = u64; // the new total
//!     type Snapshot = u64;
//!
//!     fn apply(&mut self, _index: u64, add: u64) -> u64 {
//!         self.0 += add;
//!         self.0
//!     }
//!     fn snapshot(&self) -> u64 {
//!         self.0
//!     }
//!     fn write_snapshot(total: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
//!         keel_node::write_serde_snapshot(&total, out)
//!     }
//!     fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
//!         self.0 = keel_node::read_serde_snapshot(snapshot)?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let dir = tempfile::tempdir().unwrap();
//! let network = LocalNetwork::new(); // or RaftNode::start_grpc, one call per node
//! let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     let mut config = NodeConfig::new(id, dir.path().join(id.to_string()));
//!     config.initial_members = members.clone();
//!     config.tick_interval = Duration::from_millis(10);
//!     nodes.push(RaftNode::start_local(config, Counter::default(), &network).unwrap());
//! }
//! // Any node takes proposals: a follower passes them on to the leader.
//! let total = nodes[0].propose(5).await.unwrap();
//! assert_eq!(total, 5);
//! // A linearizable read, on any node.
//! assert_eq!(nodes[2].read(|c| c.0).await.unwrap(), 5);
//! for node in &nodes {
//!     node.stop().await;
//! }
//! # }
//! ```
//!
//! The [`guide`] covers operations: a client loop that survives fail-over,
//! membership changes over gRPC, restarts, and which errors are safe to
//! retry.
//!
//! ## How it runs
//!
//! The node loop takes every queued proposal and message, then handles the
//! resulting Ready: the leader's appends leave for the peers while the batch
//! is written to the WAL with one fdatasync (group commit), acknowledgements
//! leave once it is durable, committed commands are applied, and waiting
//! proposals and reads are answered. That Ready handling lives in
//! [`replica::Replica`], generic over the log store and the transport and
//! free of tokio, so that keel-sim runs the very same code under its
//! deterministic simulator.
//!
//! The gRPC transport is the `grpc` feature (on by default); without it
//! the crate builds no protobuf or tonic code. The `tls` feature adds TLS
//! between peers: `GrpcTransport::with_tls` for the sending side, and
//! tonic's `ServerTlsConfig` around [`RaftService`] for the receiving one.

mod addresses;
#[doc = include_str!("../GUIDE.md")]
pub mod guide {}

/// Raft messages in their protobuf form, for the gRPC transport (and for
/// tests that speak it raw); not part of the supported API.
#[cfg(feature = "grpc")]
#[doc(hidden)]
pub mod codec;
mod config;
mod error;
#[cfg(all(test, feature = "grpc"))]
mod fuzz_tests;
#[cfg(feature = "grpc")]
mod grpc;
mod node;
pub mod replica;
pub mod snapshot_file;
mod state_machine;
pub mod store;
mod transport;

pub use config::{NodeConfig, RaftTuning};
pub use error::{Outcome, ProposeError, ReadError, StartError, TransferError};
#[cfg(feature = "grpc")]
pub use grpc::{serve, GrpcTransport, RaftService};
/// Why the core refused a proposal (the reason inside [`ProposeError::Refused`]).
pub type RefusedProposal = keel_raft::ProposeError;
/// Why the core refused a transfer (the reason inside [`TransferError::Refused`]).
pub type RefusedTransfer = keel_raft::TransferError;
pub use keel_raft::{ConfChange, ConfChangeOp, ConfState, Index, Message, NodeId, Role};
pub use node::{Leadership, RaftNode, Replication, Status};
pub use state_machine::{read_serde_snapshot, write_serde_snapshot, StateMachine};
pub use store::StoreError;
pub use transport::{LocalNetwork, LocalTransport, MessageSink, Transport};
