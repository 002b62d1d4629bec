//! What can go wrong with the log on disk.

use std::path::PathBuf;

/// A WAL failure. Corruption names the file and offset, so an operator can
/// look at it (and restore the node from a peer).
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record before the tail is damaged: the log cannot be trusted.
    #[error("corrupt WAL record in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Segment files are missing from the sequence.
    #[error("WAL segment {missing} is missing (found {found:?} after it); refusing to start")]
    MissingSegment {
        /// The sequence number not found.
        missing: u64,
        /// The next segment that exists.
        found: PathBuf,
    },
    /// An append would leave a gap or go below the snapshot.
    #[error("cannot append entry {index}: the log ends at {last}")]
    NonContiguous {
        /// The first index appended.
        index: u64,
        /// The log's last index.
        last: u64,
    },
}

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.into();
    move |source| WalError::Io { op, path, source }
}
