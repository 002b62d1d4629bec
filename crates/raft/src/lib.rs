//! # keel-raft
//!
//! A Raft consensus state machine with no I/O: no threads, no clock, no
//! sockets, no files, and no randomness but the seeded generator handed in.
//! The caller feeds it ticks, peer messages and proposals through a
//! [`RawNode`], and takes back a [`Ready`] batch: hard state and entries to
//! persist, messages to send, committed entries to apply. Because every
//! output is a function of the inputs, a whole cluster can run inside a
//! deterministic simulator (keel-sim) and any failure replays from its seed.
//!
//! Implemented: leader election with randomized timeouts, PreVote and
//! CheckQuorum; log replication with fast conflict backtracking, per-peer
//! probe/replicate flow control with pipelining and an inflight window bounded
//! by count and bytes, batching of proposals per Ready, and a cap on the
//! leader's uncommitted bytes; snapshots streamed in chunks to followers that
//! fell behind the compacted log; learners, promoted only once caught up;
//! membership changes through joint consensus (single-voter changes in one
//! step); leadership transfer; linearizable reads by ReadIndex (from the
//! leader or forwarded by followers) or by leader lease.
//!
//! ```
//! use bytes::Bytes;
//! use keel_raft::{Config, MemStorage, RawNode, Role};
//! use rand::SeedableRng;
//!
//! // A cluster of one elects itself and commits at once.
//! let storage = MemStorage::with_voters(&[1]);
//! let rng = Box::new(rand::rngs::StdRng::seed_from_u64(7));
//! let mut node = RawNode::new(Config::new(1), storage.clone(), rng).unwrap();
//! node.campaign();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..10 {
//!     if node.role() == Role::Leader && !proposed {
//!         node.propose(Bytes::from_static(b"hello")).unwrap();
//!         proposed = true;
//!     }
//!     let ready = node.ready();
//!     storage.append(&ready.entries).unwrap();
//!     if let Some(hs) = ready.hard_state {
//!         storage.set_hard_state(hs);
//!     }
//!     applied.extend(ready.committed_entries.into_iter().filter(|e| !e.data.is_empty()));
//!     node.advance();
//! }
//! assert_eq!(applied[0].data, Bytes::from_static(b"hello"));
//! ```

mod conf_change;
mod config;
mod error;
mod forward;
mod inflights;
mod log;
mod log_unstable;
mod membership;
mod message;
mod progress;
pub mod quorum;
mod raft;
mod raw_node;
mod read;
mod read_only;
mod replication;
mod snapshot;
mod storage;
mod transfer;

pub use config::{Config, ReadMode};
pub use error::{
    ConfigError, ProposeError, ReadIndexError, StepError, StorageError, TransferError,
};
pub use forward::ForwardedProposal;
pub use membership::{
    bootstrap_entry, bootstrap_entry_with_context, ConfChange, ConfChangeError, ConfChangeOp,
    Membership,
};
pub use message::{
    Append, AppendResponse, ConfState, Entry, EntryId, EntryKind, HardState, Heartbeat,
    HeartbeatResponse, Index, Message, MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term,
    VoteRequest, VoteResponse, ENTRY_OVERHEAD_BYTES,
};
pub use progress::ProgressState;
pub use raft::{Role, SoftState};
pub use raw_node::{RawNode, Ready, Status};
pub use read_only::ReadState;
pub use storage::{InitialState, MemStorage, SnapshotData, Storage};
