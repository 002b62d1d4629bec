//! Settings rebuilt when their files change, as etcd re-reads its
//! certificates: renewing a certificate needs no restart. A cheap check
//! (the files' modification times and sizes) runs at most once a second,
//! on use; a rebuild that fails keeps the settings in use and says why.

use std::fs;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::files::TlsFiles;

/// How often the files are looked at, at most.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies a file's version: its modification time and size
/// (`None`: it could not be read).
type Stamp = Option<(SystemTime, u64)>;

/// A value built from [`TlsFiles`], built again once they change.
pub(crate) struct Reloading<T> {
    files: TlsFiles,
    build: fn(&TlsFiles) -> anyhow::Result<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    value: T,
    /// Bumped at each rebuild.
    generation: u64,
    /// The files' stamps the last time they were looked at.
    stamps: Vec<Stamp>,
    checked: Instant,
}

impl<T: Clone> Reloading<T> {
    /// Builds the value from `files` with `build`; an error here (a file
    /// missing or unusable) is the caller's to report.
    pub(crate) fn new(
        files: TlsFiles,
        build: fn(&TlsFiles) -> anyhow::Result<T>,
    ) -> anyhow::Result<Self> {
        let stamps = stamps(&files);
        let value = build(&files)?;
        Ok(Reloading {
            files,
            build,
            state: Mutex::new(State {
                value,
                generation: 0,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The value as of the files now (checked at most once a second), and
    /// its generation, which changes whenever the value is rebuilt.
    pub(crate) fn current(&self) -> (u64, T) {
        let state = self.refreshed();
        (state.generation, state.value.clone())
    }

    /// The generation [`current`](Self::current) would return, without
    /// copying the value.
    pub(crate) fn generation(&self) -> u64 {
        self.refreshed().generation
    }

    /// The state, rebuilt first if the files changed since the last look
    /// (if that was a second ago or more).
    fn refreshed(&self) -> MutexGuard<'_, State<T>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = stamps(&self.files);
            if now != state.stamps {
                // Remembered even if the rebuild fails: the next change of
                // the files tries again, and the warning is not repeated
                // every second meanwhile.
                state.stamps = now;
                match (self.build)(&self.files) {
                    Ok(value) => {
                        state.value = value;
                        state.generation += 1;
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                    }
                    Err(e) => tracing::warn!(
                        error = format!("{e:#}"),
                        "TLS files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        }
        state
    }
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    files
        .paths()
        .map(|path| {
            let meta = fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}
