//! What can go wrong in the store, in etcd's terms.

/// An error from the store. The server maps each kind to etcd's gRPC
/// status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is at or below the compaction point.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store's revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// The NOSPACE alarm is raised: writes that add data are refused.
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A request without a key.
    #[error("key is not provided")]
    EmptyKey,
    /// A key or range end longer than
    /// [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES).
    #[error("key is too long (at most {} bytes)", crate::MAX_KEY_BYTES)]
    KeyTooLong,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// A transaction branch writes the same key twice.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction with more compares or operations than allowed.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// `ignore_value` together with a value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// A lease that does not exist (never granted, revoked or expired).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant with the ID of a lease that exists.
    #[error("lease already exists")]
    LeaseExists,
    /// A snapshot is being restored (or its restore was interrupted and
    /// must be redone): reads wait for it.
    #[error("a snapshot is being restored; retry")]
    Restoring,
    /// Refused by the auth rules (etcd's message).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A malformed request (unknown enum value and the like).
    #[error("{0}")]
    InvalidArgument(String),
    /// The storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Stored or streamed data is not what the store wrote.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl From<fjall::Error> for MvccError {
    fn from(e: fjall::Error) -> Self {
        MvccError::Storage(e.to_string())
    }
}
