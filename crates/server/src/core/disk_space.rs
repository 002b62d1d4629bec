//! The space left on the data directory's disk, and the reserve writes
//! must leave. A member that runs out of disk cannot append to its raft
//! log, and a member that cannot persist must stop; so writes are refused
//! (with an error that says why) while less than the reserve is free, and
//! accepted again by themselves once space returns. Reads go on.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::ServerError;

/// How long one reading of the free space is trusted.
const FRESH_FOR: Duration = Duration::from_millis(10);

/// The data directory's free space, read at most every [`FRESH_FOR`].
#[derive(Debug)]
pub(crate) struct DiskSpace {
    dir: PathBuf,
    reserve: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskSpace {
    /// Keeps `reserve` bytes free on the disk holding `dir` (0: no check).
    pub(crate) fn new(dir: &Path, reserve: u64) -> DiskSpace {
        DiskSpace {
            dir: dir.to_path_buf(),
            reserve,
            last: Mutex::new(None),
        }
    }

    /// Whether a write may go ahead: an error if less than the reserve is
    /// free. A disk whose space cannot be read is let through (the write
    /// path reports its own errors).
    pub(crate) fn check(&self) -> Result<(), ServerError> {
        if self.reserve == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let available = match *last {
            Some((at, available)) if now.duration_since(at) < FRESH_FOR => available,
            _ => match available_bytes(&self.dir) {
                Ok(available) => {
                    *last = Some((now, available));
                    available
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the data directory's free space");
                    return Ok(());
                }
            },
        };
        if available < self.reserve {
            return Err(ServerError::DiskFull {
                available,
                reserve: self.reserve,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged process may still write on the disk holding `dir`.
fn available_bytes(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs(3) writes into the zeroed struct we own and reads the
    // NUL-terminated path, which outlives the call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat
    };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_reserve_and_let_through_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(DiskSpace::new(dir.path(), 0).check().is_ok());
        assert!(DiskSpace::new(dir.path(), 1).check().is_ok());
        match DiskSpace::new(dir.path(), u64::MAX).check() {
            Err(ServerError::DiskFull { available, reserve }) => {
                assert_eq!(reserve, u64::MAX);
                assert!(available > 0);
            }
            other => panic!("{other:?}"),
        }
        // A directory that is gone does not block writes.
        let gone = dir.path().join("gone");
        assert!(DiskSpace::new(&gone, u64::MAX).check().is_ok());
    }
}
