//! etcd's gRPC errors: the codes and messages etcd clients recognise
//! (clients match on the message text, so it must be exact).

use keel_mvcc::MvccError;
use keel_node::{ProposeError, ReadError};
use tonic::{Code, Status};

/// `etcdserver: no leader`, for requests that cannot proceed without one.
pub fn no_leader() -> Status {
    Status::unavailable("etcdserver: no leader")
}

/// A request that waited on raft longer than the request timeout.
pub fn timeout() -> Status {
    Status::unavailable("etcdserver: request timed out")
}

/// A request over `max_request_bytes`.
pub fn request_too_large() -> Status {
    Status::invalid_argument("etcdserver: request is too large")
}

/// The member named in a membership request does not exist.
pub fn member_not_found() -> Status {
    Status::not_found("etcdserver: member not found")
}

/// A peer URL is already used by a member.
pub fn peer_url_exists() -> Status {
    Status::failed_precondition("etcdserver: Peer URLs already exists")
}

/// Promotion of a member that is not a learner.
pub fn member_not_learner() -> Status {
    Status::failed_precondition("etcdserver: can only promote a learner member")
}

/// Promotion of a learner that has not caught up.
pub fn learner_not_ready() -> Status {
    Status::failed_precondition(
        "etcdserver: can only promote a learner member which is in sync with leader",
    )
}

/// A leadership transfer to a member that cannot take it.
pub fn bad_leader_transferee() -> Status {
    Status::failed_precondition("etcdserver: bad leader transferee")
}

/// A store error as etcd reports it.
pub fn mvcc(error: MvccError) -> Status {
    match error {
        MvccError::Compacted => {
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
        }
        MvccError::FutureRevision => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        MvccError::NoSpace => {
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
        }
        MvccError::EmptyKey => Status::invalid_argument("etcdserver: key is not provided"),
        e @ MvccError::Restoring => Status::unavailable(format!("etcdserver: {e}")),
        e @ MvccError::KeyTooLong => Status::invalid_argument(format!("etcdserver: {e}")),
        MvccError::KeyNotFound => Status::invalid_argument("etcdserver: key not found"),
        MvccError::DuplicateKey => {
            Status::invalid_argument("etcdserver: duplicate key given in txn request")
        }
        MvccError::TooManyOps => {
            Status::invalid_argument("etcdserver: too many operations in txn request")
        }
        MvccError::ValueProvided => Status::invalid_argument("etcdserver: value is provided"),
        MvccError::LeaseProvided => Status::invalid_argument("etcdserver: lease is provided"),
        MvccError::InvalidArgument(why) => Status::invalid_argument(format!("etcdserver: {why}")),
        e @ (MvccError::Storage(_) | MvccError::Corrupt(_)) => {
            tracing::error!(error = %e, "store failure");
            Status::internal(format!("etcdserver: {e}"))
        }
    }
}

/// A proposal that did not produce a response.
pub fn propose(error: ProposeError) -> Status {
    match error {
        ProposeError::NotLeader { leader: None, .. } => no_leader(),
        ProposeError::NotLeader { .. } => Status::unavailable("etcdserver: not leader"),
        ProposeError::Lost => Status::unavailable("etcdserver: leader changed"),
        ProposeError::Indeterminate => Status::unavailable(
            "etcdserver: request result is unknown (member caught up by snapshot)",
        ),
        ProposeError::Refused(keel_node::RefusedProposal::NotCaughtUp { .. }) => {
            learner_not_ready()
        }
        ProposeError::Refused(e) => Status::new(Code::Unavailable, format!("etcdserver: {e}")),
        ProposeError::Encode(e) => Status::invalid_argument(format!("etcdserver: {e}")),
        ProposeError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

/// A linearizable read that could not be confirmed.
pub fn read(error: ReadError) -> Status {
    match error {
        ReadError::NoLeader => no_leader(),
        ReadError::Timeout => timeout(),
        ReadError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

/// Whether a status means "try again on the current leader".
pub fn is_retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && matches!(
            status.message(),
            "etcdserver: not leader" | "etcdserver: leader changed" | "etcdserver: no leader"
        )
}
