//! The only place that knows etcd's gRPC errors: each [`ServerError`] as
//! the status code and message etcd sends for it (clients match on the
//! message text, so it must be exact).

use keel_mvcc::auth::AuthError;
use keel_mvcc::MvccError;
use tonic::{Code, Status};

use crate::core::ServerError;

/// etcd's message for a request sent to a member that does not lead.
pub(crate) const NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's message for a proposal dropped by a change of leader.
pub(crate) const LEADER_CHANGED: &str = "etcdserver: leader changed";
/// etcd's message for a request while no leader is known.
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Status {
        match error {
            ServerError::NotLeader => Status::unavailable(NOT_LEADER),
            ServerError::LeaderChanged => Status::unavailable(LEADER_CHANGED),
            ServerError::NoLeader => Status::unavailable(NO_LEADER),
            ServerError::Timeout => Status::unavailable("etcdserver: request timed out"),
            ServerError::TooLarge => Status::invalid_argument("etcdserver: request is too large"),
            e @ ServerError::DiskFull { .. } => {
                Status::resource_exhausted(format!("etcdserver: {e}"))
            }
            ServerError::Mvcc(e) => mvcc(e),
            ServerError::TooManyLogins => Status::resource_exhausted(
                "etcdserver: too many failed authentication attempts; retry later",
            ),
            ServerError::Indeterminate => Status::unavailable(
                "etcdserver: request result is unknown: it may or may not have been applied",
            ),
            ServerError::Stopped => Status::unavailable("etcdserver: server stopped"),
            ServerError::Refused(why) => Status::unavailable(format!("etcdserver: {why}")),
            ServerError::InvalidArgument(why) => {
                Status::invalid_argument(format!("etcdserver: {why}"))
            }
            ServerError::MemberNotFound => Status::not_found("etcdserver: member not found"),
            ServerError::PeerUrlExists => {
                Status::failed_precondition("etcdserver: Peer URLs already exists")
            }
            ServerError::MemberNotLearner => {
                Status::failed_precondition("etcdserver: can only promote a learner member")
            }
            ServerError::LearnerNotReady => Status::failed_precondition(
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            ServerError::Unhealthy => Status::unavailable("etcdserver: unhealthy cluster"),
            ServerError::NotLeaderToMove => Status::failed_precondition("etcdserver: not leader"),
            ServerError::BadLeaderTransferee => {
                Status::failed_precondition("etcdserver: bad leader transferee")
            }
            e @ (ServerError::SessionExpired
            | ServerError::ElectionNotLeader
            | ServerError::ElectionNoLeader
            | ServerError::MissingLeaderKey) => Status::unknown(e.to_string()),
            ServerError::LeaseTtlTooLarge => {
                Status::out_of_range("etcdserver: too large lease TTL")
            }
            ServerError::Peer { code, message } => Status::new(Code::from(code), message),
            ServerError::Internal(why) => {
                tracing::error!(error = %why, "internal failure");
                Status::internal(why)
            }
        }
    }
}

/// An auth refusal with etcd's code (its message is etcd's already).
fn auth(error: AuthError) -> Status {
    let code = match error {
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidToken => Code::Unauthenticated,
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt
        | AuthError::NameTooLong => Code::InvalidArgument,
        AuthError::NotEnabled
        | AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted => Code::FailedPrecondition,
    };
    Status::new(code, error.to_string())
}

/// A store error as etcd reports it.
fn mvcc(error: MvccError) -> Status {
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
        MvccError::LeaseNotFound => Status::not_found("etcdserver: requested lease not found"),
        MvccError::LeaseExists => Status::failed_precondition("etcdserver: lease already exists"),
        MvccError::InvalidArgument(why) => Status::invalid_argument(format!("etcdserver: {why}")),
        MvccError::Auth(e) => auth(e),
        e @ (MvccError::Storage(_) | MvccError::Corrupt(_)) => {
            tracing::error!(error = %e, "store failure");
            Status::internal(format!("etcdserver: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_strings_that_clients_match_on() {
        let cases = [
            (
                ServerError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ServerError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                ServerError::TooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ServerError::Mvcc(MvccError::Compacted),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ServerError::Mvcc(MvccError::LeaseNotFound),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                ServerError::Mvcc(MvccError::Auth(AuthError::PermissionDenied)),
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                ServerError::Mvcc(MvccError::Auth(AuthError::InvalidToken)),
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                ServerError::Mvcc(MvccError::Auth(AuthError::UserEmpty)),
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                ServerError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                ServerError::Peer {
                    code: Code::FailedPrecondition as i32,
                    message: "etcdserver: Peer URLs already exists".into(),
                },
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
        ];
        for (error, code, message) in cases {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }
}
