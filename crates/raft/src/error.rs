//! The typed errors of keel-raft. Input from peers, storage and callers never
//! panics the core: it is refused with one of these, carrying the reason.

use crate::membership::ConfChangeError;
use crate::message::{Index, NodeId, Term};

/// What a [`Storage`](crate::Storage) implementation can report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The entry was removed by log compaction.
    #[error("log entry {0} has been compacted")]
    Compacted(Index),
    /// The entry is beyond the end of the stored log.
    #[error("log entry {0} is not available")]
    Unavailable(Index),
    /// No snapshot exists yet (or it is being built); try again later.
    #[error("no snapshot is available yet")]
    SnapshotUnavailable,
    /// The snapshot asked for was replaced by a newer one.
    #[error("snapshot at index {0} was replaced by a newer one")]
    SnapshotOutOfDate(Index),
    /// Anything else: an I/O error, a corrupt record. The string says what.
    #[error("storage failed: {0}")]
    Other(String),
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Node ids must be non-zero.
    #[error("node id must not be 0")]
    ZeroId,
    /// The heartbeat interval must be at least one tick.
    #[error("heartbeat_tick must be at least 1")]
    ZeroHeartbeat,
    /// Elections must wait longer than a heartbeat interval.
    #[error("election_tick ({election}) must be greater than heartbeat_tick ({heartbeat})")]
    ElectionNotAboveHeartbeat {
        /// The configured election timeout in ticks.
        election: u32,
        /// The configured heartbeat interval in ticks.
        heartbeat: u32,
    },
    /// The inflight window must allow at least one message.
    #[error("max_inflight_msgs must be at least 1")]
    ZeroInflight,
    /// A byte limit that must be positive was zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// Lease-based reads are only safe when leaders step down on losing a quorum.
    #[error("lease-based reads require check_quorum")]
    LeaseWithoutCheckQuorum,
    /// The applied index is below the snapshot storage starts from: the
    /// entries in between are gone, so the state machine cannot catch up.
    #[error("applied index {applied} is below the snapshot index {snapshot} in storage")]
    AppliedBeforeSnapshot {
        /// The applied index from the configuration.
        applied: Index,
        /// The index of the snapshot in storage.
        snapshot: Index,
    },
    /// The applied index handed in is beyond the commit index in storage.
    #[error("applied index {applied} is beyond the stored commit index {commit}")]
    AppliedBeyondCommit {
        /// The applied index from the configuration.
        applied: Index,
        /// The commit index found in storage.
        commit: Index,
    },
    /// Storage could not be read while starting.
    #[error("reading initial state: {0}")]
    Storage(#[from] StorageError),
}

/// Why a proposal was refused. The caller may retry, elsewhere or later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the one this node knows of.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader {
        /// The current leader, if this node knows one.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; retry on the new leader.
    #[error("leadership is being transferred to node {to}")]
    TransferInProgress {
        /// The transfer target.
        to: NodeId,
    },
    /// A membership change is still being applied; one at a time.
    #[error("membership change at index {index} is not applied yet")]
    ConfChangeInProgress {
        /// The index of the pending change.
        index: Index,
    },
    /// This leader was just elected: it takes membership changes once the
    /// first entry of its term (at `index`) is applied, which takes a
    /// round trip. Retry shortly.
    #[error("a new leader; membership changes are taken once its first entry (index {index}) is applied")]
    NewLeader {
        /// The index of the leader's first entry.
        index: Index,
    },
    /// The change is not valid against the current membership.
    #[error(transparent)]
    InvalidConfChange(#[from] ConfChangeError),
    /// Only a learner that has caught up can be promoted to voter.
    #[error("node {id} is not a caught-up learner (matched {matched}, leader at {last}); add it as a learner and let it catch up first")]
    NotCaughtUp {
        /// The node.
        id: NodeId,
        /// What it is known to hold.
        matched: Index,
        /// The leader's last index.
        last: Index,
    },
    /// The change would leave the cluster without a quorum of members the
    /// leader has heard from lately (etcd's strict reconfiguration check):
    /// removing a member that is up while others are down, or adding a
    /// voter while too few are up, would stop the cluster. Bring the
    /// members back (or remove the ones that are down) first.
    #[error("the members heard from lately would not be a quorum of the new configuration")]
    NoActiveQuorum,
    /// The leader holds too many uncommitted bytes; retry once some commit.
    #[error("too many uncommitted bytes at the leader ({pending} pending, limit {limit})")]
    UncommittedSizeExceeded {
        /// Uncommitted payload bytes at the leader right now.
        pending: u64,
        /// The configured cap.
        limit: u64,
    },
}

/// Why a message from a peer was refused. The message is dropped and the node
/// carries on; the reason is for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message was addressed to another node.
    #[error("message addressed to node {to}, this is node {me}")]
    WrongRecipient {
        /// The message's `to`.
        to: NodeId,
        /// This node's id.
        me: NodeId,
    },
    /// The sender is not a member of this node's configuration.
    #[error("message from unknown peer {0}")]
    UnknownPeer(NodeId),
    /// A message whose fields contradict each other or the sender's term.
    #[error("invalid {kind} from {from} at term {term}: {reason}")]
    InvalidMessage {
        /// The sender.
        from: NodeId,
        /// The message kind.
        kind: &'static str,
        /// The message's term.
        term: Term,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the log failed while handling the message.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand leadership over.
    #[error("not the leader (leader is {leader:?})")]
    NotLeader {
        /// The current leader, if this node knows one.
        leader: Option<NodeId>,
    },
    /// The target must be a voter of the current configuration.
    #[error("node {0} is not a voter")]
    NotAVoter(NodeId),
}

/// Why a linearizable read could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    /// No leader is known to confirm the read; retry after an election.
    #[error("no leader is known")]
    NoLeader,
}
