//! [`ServerError`]: why an operation of the core failed, as a type. Whether
//! a failure may be retried on another member is decided by its variant;
//! etcd's wording of each is the API edge's business
//! (`api::grpc::status`), not the core's.

use keel_mvcc::MvccError;
use keel_node::{ProposeError, ReadError, RefusedProposal};

use crate::cluster::ForwardError;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ServerError {
    /// Too many failed logins of one user name in a row: wait.
    #[error("too many failed authentication attempts; retry later")]
    TooManyLogins,
    /// This member does not lead (and the request must run on the leader).
    #[error("not leader")]
    NotLeader,
    /// The leader changed (or could not be reached) while the request ran.
    #[error("leader changed")]
    LeaderChanged,
    /// No leader is known.
    #[error("no leader")]
    NoLeader,
    /// The request waited on raft longer than the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The request is over `max_request_bytes`.
    #[error("request is too large")]
    TooLarge,
    /// Less than `min_free_disk_bytes` is free on the data directory's disk.
    #[error("no space left on the data directory's disk: {available} bytes free, {reserve} kept free (min_free_disk_bytes)")]
    DiskFull {
        /// Bytes free.
        available: u64,
        /// Bytes the member keeps free.
        reserve: u64,
    },
    /// The store refused the request.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The proposal may or may not have been applied (the member caught up
    /// by a snapshot past it, or the leader it was passed on to never
    /// answered).
    #[error("request result is unknown")]
    Indeterminate,
    /// This member is shutting down.
    #[error("server stopped")]
    Stopped,
    /// The consensus core refused the proposal.
    #[error("{0}")]
    Refused(String),
    /// A request that is malformed in a way the store does not check.
    #[error("{0}")]
    InvalidArgument(String),
    /// No member has the id a membership request names.
    #[error("member not found")]
    MemberNotFound,
    /// A peer URL is already used by a member.
    #[error("peer URLs already exist")]
    PeerUrlExists,
    /// Promotion of a member that is not a learner.
    #[error("member is not a learner")]
    MemberNotLearner,
    /// Promotion of a learner that has not caught up with the leader.
    #[error("learner has not caught up")]
    LearnerNotReady,
    /// A membership change refused because the members the leader hears
    /// from would not be a quorum after it (etcd's strict reconfiguration
    /// check).
    #[error("unhealthy cluster")]
    Unhealthy,
    /// A leadership move asked of a member that does not lead.
    #[error("leadership can only be moved by the leader")]
    NotLeaderToMove,
    /// A leadership move to a member that cannot lead.
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    /// A lock or candidacy whose lease ended while it waited.
    #[error("session expired")]
    SessionExpired,
    /// A proclamation by a candidate that does not lead.
    #[error("election: not leader")]
    ElectionNotLeader,
    /// An election nobody leads.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// A proclaim or resign without the leader's key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// A lease granted a TTL above etcd's limit (9,000,000,000 seconds).
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// The leader refused a request this member passed on to it; `code`
    /// (a gRPC status code) and `message` are the leader's, verbatim.
    #[error("{message}")]
    Peer {
        /// The leader's gRPC status code.
        code: i32,
        /// The leader's message.
        message: String,
    },
    /// A failure of this member itself (a task that died, a disk error).
    #[error("{0}")]
    Internal(String),
}

impl ServerError {
    /// Whether the request may be tried again on the (new) leader.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            ServerError::NotLeader | ServerError::LeaderChanged | ServerError::NoLeader
        )
    }
}

impl From<keel_mvcc::auth::AuthError> for ServerError {
    fn from(error: keel_mvcc::auth::AuthError) -> Self {
        ServerError::Mvcc(error.into())
    }
}

impl From<ProposeError> for ServerError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { leader: None, .. } => ServerError::NoLeader,
            ProposeError::NotLeader { .. } => ServerError::NotLeader,
            ProposeError::Lost => ServerError::LeaderChanged,
            ProposeError::Indeterminate => ServerError::Indeterminate,
            ProposeError::Refused(RefusedProposal::NotCaughtUp { .. }) => {
                ServerError::LearnerNotReady
            }
            ProposeError::Refused(RefusedProposal::NoActiveQuorum) => ServerError::Unhealthy,
            ProposeError::Refused(e) => ServerError::Refused(e.to_string()),
            ProposeError::Encode(e) => ServerError::InvalidArgument(e),
            ProposeError::Stopped => ServerError::Stopped,
        }
    }
}

impl From<ReadError> for ServerError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::NoLeader => ServerError::NoLeader,
            ReadError::Timeout => ServerError::Timeout,
            ReadError::Stopped => ServerError::Stopped,
        }
    }
}

impl From<ForwardError> for ServerError {
    fn from(error: ForwardError) -> Self {
        match error {
            ForwardError::Unreachable => ServerError::LeaderChanged,
            ForwardError::Unanswered(_) => ServerError::Indeterminate,
            ForwardError::Refused { code, message } => ServerError::Peer { code, message },
            ForwardError::Mvcc(e) => ServerError::Mvcc(e),
            ForwardError::BadAddress(why) => ServerError::Internal(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_leadership_failures_are_retried() {
        let retried = [
            ServerError::NotLeader,
            ServerError::LeaderChanged,
            ServerError::NoLeader,
            ServerError::from(ProposeError::Lost),
            ServerError::from(ForwardError::Unreachable),
        ];
        assert!(retried.iter().all(ServerError::is_retryable));
        let final_ = [
            ServerError::Timeout,
            ServerError::Indeterminate,
            ServerError::Stopped,
            ServerError::Mvcc(MvccError::NoSpace),
            ServerError::Peer {
                code: 14,
                message: "etcdserver: leader changed".into(),
            },
            ServerError::from(ProposeError::Stopped),
        ];
        assert!(!final_.iter().any(ServerError::is_retryable));
    }
}
