//! The data that crosses the boundary of the state machine: log entries, the
//! durable hard state, and the messages peers exchange.
//!
//! Every type here is plain data. Encoding them for a wire or a disk is the
//! caller's business (keel-node and keel-wal do it), so the core never
//! allocates a buffer it does not need.

use bytes::Bytes;

/// Identifies a member of the cluster. Zero is never a valid id.
pub type NodeId = u64;
/// A Raft term. Terms start at zero and only grow.
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1.
pub type Index = u64;

/// Fixed per-entry overhead counted towards message size limits, on top of the
/// payload, so that a flood of empty entries is still bounded.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// An application command (or, with an empty payload, the no-op a new
    /// leader appends to commit entries of earlier terms).
    Normal,
    /// A membership change: the payload is an encoded
    /// [`ConfChange`](crate::ConfChange). The core applies it when it hands
    /// the entry out for applying.
    ConfChange,
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// What the payload means.
    pub kind: EntryKind,
    /// The application's payload, shared and never copied by the core.
    pub data: Bytes,
}

impl Entry {
    /// A normal entry carrying `data`.
    pub fn normal(term: Term, index: Index, data: Bytes) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// Bytes this entry counts for in message and inflight size limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Bytes of application payload (what the uncommitted-size cap counts).
    pub fn payload_size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The (term, index) pair that names this entry.
    pub fn id(&self) -> EntryId {
        EntryId {
            term: self.term,
            index: self.index,
        }
    }
}

/// The name of an entry: its index and the term it was created in. Two logs
/// that hold entries with the same id hold the same entry (Log Matching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryId {
    /// The term of the entry.
    pub term: Term,
    /// The index of the entry.
    pub index: Index,
}

/// The state that must be durable before any message depending on it leaves
/// the node: the current term, the vote cast in it, and the commit index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed.
    pub commit: Index,
}

/// The membership at a point in the log, in the form the caller persists.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Members that vote and count towards quorums, sorted.
    pub voters: Vec<NodeId>,
    /// During a joint change, the old voters (a majority of these must agree
    /// too); empty otherwise.
    pub voters_outgoing: Vec<NodeId>,
    /// Members that receive the log but do not vote, sorted.
    pub learners: Vec<NodeId>,
    /// Outgoing voters that become learners when the joint change completes.
    pub learners_next: Vec<NodeId>,
}

impl ConfState {
    /// A configuration of just these voters.
    pub fn with_voters(voters: &[NodeId]) -> Self {
        ConfState {
            voters: voters.to_vec(),
            ..ConfState::default()
        }
    }
}

/// What a snapshot covers: the log up to and including `last`, and the
/// membership in effect there.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// The last entry the snapshot includes.
    pub last: EntryId,
    /// The membership as of `last`.
    pub conf_state: ConfState,
    /// The size of the snapshot data in bytes.
    pub size: u64,
}

/// One piece of a snapshot on its way from the leader to a follower.
/// Chunks arrive in order; a chunk at offset 0 starts a transfer afresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot this belongs to.
    pub meta: SnapshotMeta,
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
}

impl SnapshotChunk {
    /// Whether this chunk completes the snapshot.
    pub fn is_last(&self) -> bool {
        self.offset + self.data.len() as u64 >= self.meta.size
    }
}

/// A message between two peers. Every message carries the sender's term, so
/// that a receiver can apply the rule "a higher term wins" before anything
/// else (Raft §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages peers exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Leader → follower: entries to append after `prev`, and the leader's commit index.
    Append(Append),
    /// Follower → leader: the outcome of an [`Append`].
    AppendResponse(AppendResponse),
    /// Leader → follower: "I am still here", with a commit index safe for the follower.
    Heartbeat(Heartbeat),
    /// Follower → leader: the follower is alive and follows this leader.
    HeartbeatResponse(HeartbeatResponse),
    /// Candidate → voter: a request for a vote (or a pre-vote).
    Vote(VoteRequest),
    /// Voter → candidate: the answer to a [`VoteRequest`].
    VoteResponse(VoteResponse),
    /// Leader → follower: a chunk of a snapshot (InstallSnapshot).
    Snapshot(SnapshotChunk),
    /// Follower → leader: the offset the follower expects next of the
    /// snapshot whose last index is `index`. (A completed snapshot is
    /// acknowledged with an [`AppendResponse`] instead.)
    SnapshotResponse {
        /// The snapshot's last index.
        index: Index,
        /// The next offset the follower will accept (0: start over).
        next_offset: u64,
        /// The chunk answered was not taken (out of order, or an unknown
        /// transfer): resend from `next_offset`.
        rejected: bool,
    },
    /// Leader → transfer target: campaign now, without waiting for a timeout.
    TimeoutNow,
    /// Follower → leader: a linearizable read forwarded for confirmation.
    ReadIndex {
        /// The follower's id for the read.
        request: u64,
    },
    /// Leader → follower: the read index for a forwarded read.
    ReadIndexResponse {
        /// The follower's id for the read.
        request: u64,
        /// The index to wait for before serving the read.
        index: Index,
    },
    /// Follower → leader: a command proposed on the follower, for the
    /// leader to append.
    Propose {
        /// The follower's id for the proposal.
        request: u64,
        /// The command.
        data: Bytes,
    },
    /// Leader (or whoever received a [`Propose`](Self::Propose)) →
    /// follower: where the command was appended, or why it was not.
    ProposeResponse {
        /// The follower's id for the proposal.
        request: u64,
        /// The entry the command became, or the refusal (never appended).
        result: Result<EntryId, crate::ProposeError>,
    },
}

/// The AppendEntries request (Raft §5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    /// Index of the entry just before `entries`.
    pub prev_index: Index,
    /// Term of the entry at `prev_index`.
    pub prev_term: Term,
    /// Entries to append, with consecutive indexes starting at `prev_index + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: Index,
}

/// The answer to an [`Append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendResponse {
    /// The follower's log matches the leader's up to and including `index`.
    Accepted {
        /// The last index known to match.
        index: Index,
    },
    /// The follower's log has no entry at `rejected_index` with the expected term.
    Rejected {
        /// The `prev_index` of the rejected append.
        rejected_index: Index,
        /// Fast backtracking hint: the largest index in the follower's log whose
        /// term is at most the rejected `prev_term`.
        hint_index: Index,
        /// The term of the follower's entry at `hint_index`.
        hint_term: Term,
    },
}

/// The heartbeat a leader sends every heartbeat interval.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// A commit index no greater than what the follower is known to hold.
    pub commit: Index,
    /// The leader's latest read-confirmation round, echoed back in the response.
    pub read_round: u64,
}

/// The answer to a [`Heartbeat`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HeartbeatResponse {
    /// The `read_round` of the heartbeat answered.
    pub read_round: u64,
}

/// The RequestVote request (Raft §5.2, §5.4.1), also used for pre-votes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// A pre-vote asks "would you vote for me?" without changing anyone's term.
    pub pre_vote: bool,
    /// The candidate's last log entry, for the up-to-date check.
    pub last: EntryId,
    /// The campaign follows a leadership transfer: voters answer even if
    /// they heard from the (old) leader within the election timeout.
    pub transfer: bool,
}

/// The answer to a [`VoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// Whether this answers a pre-vote.
    pub pre_vote: bool,
    /// Whether the vote is granted.
    pub granted: bool,
}

impl Message {
    /// Whether only a member may send this: answers to our requests, and
    /// forwarded reads and proposals. (Requests from a leader or candidate are taken from
    /// anyone, since a lagging node may not know every member yet.)
    pub fn needs_known_sender(&self) -> bool {
        matches!(
            self.body,
            MessageBody::AppendResponse(_)
                | MessageBody::HeartbeatResponse(_)
                | MessageBody::VoteResponse(_)
                | MessageBody::SnapshotResponse { .. }
                | MessageBody::ReadIndex { .. }
                | MessageBody::Propose { .. }
        )
    }

    /// A short name of the message kind, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            MessageBody::Append(_) => "Append",
            MessageBody::AppendResponse(_) => "AppendResponse",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
            MessageBody::Vote(v) if v.pre_vote => "PreVote",
            MessageBody::Vote(_) => "Vote",
            MessageBody::VoteResponse(v) if v.pre_vote => "PreVoteResponse",
            MessageBody::VoteResponse(_) => "VoteResponse",
            MessageBody::Snapshot(_) => "Snapshot",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ProposeResponse { .. } => "ProposeResponse",
        }
    }
}
