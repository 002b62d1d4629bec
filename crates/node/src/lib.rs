//! # keel-node
//!
//! The runtime that makes keel-raft a usable library: a [`RaftNode`] runs
//! the consensus core on tokio over a write-ahead log ([`keel_wal`]) and a
//! [`Transport`], applying committed commands to your [`StateMachine`] and
//! answering each proposal with your state machine's typed response.
//!
//! The node loop takes every queued proposal and message, then handles the
//! resulting Ready: the leader's appends leave for the peers while the batch
//! is written to the WAL with one fdatasync (group commit), acknowledgements
//! leave once it is durable, committed commands are applied, and waiting
//! proposals and reads are answered. That Ready handling lives in
//! [`replica::Replica`], generic over the log store and the transport and
//! free of tokio, so that keel-sim runs the very same code under its
//! deterministic simulator.

pub mod codec;
mod config;
mod error;
mod grpc;
mod node;
pub mod replica;
mod snapshot_file;
mod state_machine;
mod store;
mod transport;

pub use config::NodeConfig;
pub use error::{ProposeError, ReadError, StartError, TransferError};
pub use grpc::{serve, GrpcTransport, RaftService};
/// Why the core refused a proposal (the reason inside [`ProposeError::Refused`]).
pub use keel_raft::ProposeError as RefusedProposal;
/// Why the core refused a transfer (the reason inside [`TransferError::Refused`]).
pub use keel_raft::TransferError as RefusedTransfer;
pub use keel_raft::{ConfChange, ConfChangeOp, ConfState, Index, NodeId, Role};
pub use node::{RaftNode, Status};
pub use state_machine::{read_serde_snapshot, write_serde_snapshot, StateMachine};
pub use store::StoreError;
pub use transport::{LocalNetwork, LocalTransport, MessageSink, Transport};
