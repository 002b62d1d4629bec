//! Errors of the runtime, each saying what the caller can do next.

use keel_raft::NodeId;

/// Whether a command whose proposal failed may have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was not applied and never will be: retrying cannot apply it twice.
    NotApplied,
    /// It may have been applied, or may still be: check the state (or make
    /// the command idempotent) before retrying.
    Unknown,
}

/// Why a proposal did not produce a response. [`outcome`](Self::outcome)
/// says whether the command may have been applied all the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals: send it to `leader` (at `address`).
    #[error("not the leader; try node {leader:?} at {address:?}")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// Its address, if configured.
        address: Option<String>,
    },
    /// The entry was overwritten by a new leader before committing: it was
    /// not applied. Retrying is safe.
    #[error("the proposal was lost in a leadership change; retry")]
    Lost,
    /// The entry was in the log, but this node cannot tell whether it was
    /// applied: the node stopped before applying it (it may still commit on
    /// the others), or caught up by a snapshot past it.
    #[error("outcome unknown: the command may have been applied; check the state before retrying")]
    Indeterminate,
    /// The core refused it (pipeline full, transfer or membership change in
    /// progress, invalid membership change).
    #[error(transparent)]
    Refused(#[from] crate::RefusedProposal),
    /// The command could not be encoded.
    #[error("encoding the command: {0}")]
    Encode(String),
    /// The node had stopped before the proposal reached its log.
    #[error("the node has stopped")]
    Stopped,
}

impl ProposeError {
    /// Whether the command may have been applied despite this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProposeError::Indeterminate => Outcome::Unknown,
            ProposeError::NotLeader { .. }
            | ProposeError::Lost
            | ProposeError::Refused(_)
            | ProposeError::Encode(_)
            | ProposeError::Stopped => Outcome::NotApplied,
        }
    }
}

/// Why a linearizable read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read; retry after an election.
    #[error("no leader is known; retry after an election")]
    NoLeader,
    /// The read was not confirmed in time (leader change, lost messages).
    #[error("the read was not confirmed in time; retry")]
    Timeout,
    /// The node has shut down.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The core refused it.
    #[error(transparent)]
    Refused(#[from] crate::RefusedTransfer),
    /// The node has shut down.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another node (in this process or another) runs on the data directory.
    #[error("{0} is in use by another running node; two nodes must never share a data directory")]
    Locked(std::path::PathBuf),
    /// The transport's port could not be bound.
    #[error("listening on {0}: {1}")]
    Bind(String, String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The WAL could not be opened or replayed.
    #[error(transparent)]
    Wal(#[from] keel_wal::WalError),
    /// The snapshot on disk could not be read or restored.
    #[error("snapshot {path}: {reason}")]
    Snapshot {
        /// The snapshot file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The Raft core refused the recovered state.
    #[error(transparent)]
    Raft(#[from] keel_raft::ConfigError),
}
