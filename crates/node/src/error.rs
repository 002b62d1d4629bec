//! Errors of the runtime, each saying what the caller can do next.

use keel_raft::NodeId;

/// Why a proposal did not produce a response.
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
    /// This node caught up by installing a snapshot past the entry, so it
    /// cannot tell whether the command was applied.
    #[error("outcome unknown: the node caught up by snapshot; check the state before retrying")]
    Indeterminate,
    /// The core refused it (pipeline full, transfer or membership change in
    /// progress, invalid membership change).
    #[error(transparent)]
    Refused(#[from] keel_raft::ProposeError),
    /// The command could not be encoded.
    #[error("encoding the command: {0}")]
    Encode(String),
    /// The node has shut down.
    #[error("the node has stopped")]
    Stopped,
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
    Refused(#[from] keel_raft::TransferError),
    /// The node has shut down.
    #[error("the node has stopped")]
    Stopped,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
