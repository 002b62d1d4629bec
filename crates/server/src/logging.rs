//! Logging with tracing: a filter from the config (or `RUST_LOG`), text on a
//! terminal or JSON, and optionally rolling files capped in size and count.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};

/// The name of the live log file in the log directory; rolled files get
/// `.1` (newest) to `.N` appended.
pub(crate) const LOG_FILE: &str = "keel.log";

/// A plain level (`info`, `debug`, ...) applies to keel; the storage
/// engine's own chatter stays at warnings unless a full filter is given.
fn quiet_storage(level: &str) -> String {
    let verbose = ["info", "debug", "trace"].contains(&level.to_ascii_lowercase().as_str());
    if !verbose {
        level.to_string()
    } else {
        format!("{level},fjall=warn,lsm_tree=warn")
    }
}

/// Keeps the file writer alive; dropping it flushes what is buffered.
pub(crate) struct LogGuard {
    _flush_on_drop: Option<WorkerGuard>,
}

/// Installs the global subscriber for `config`.
pub(crate) fn init(config: &Config) -> anyhow::Result<LogGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("RUST_LOG `{directives}` is not a valid filter"))?,
        _ => EnvFilter::try_new(quiet_storage(&config.log_level))
            .with_context(|| format!("log_level `{}` is not a valid filter", config.log_level))?,
    };
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !io::stderr().is_terminal(),
    };
    let console = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .boxed()
    };
    let (file_layer, guard) = match &config.log_dir {
        Some(dir) => {
            let file = RollingFile::open(dir, config.log_max_bytes, config.log_max_files)?;
            let (writer, guard) = tracing_appender::non_blocking(file);
            let layer = if json {
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer)
                    .boxed()
            } else {
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer)
                    .boxed()
            };
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file_layer)
        .try_init()
        .context("installing the logger")?;
    Ok(LogGuard {
        _flush_on_drop: guard,
    })
}

/// A log file that rolls over at a size: `keel.log` is renamed `keel.log.1`
/// (and older ones shift up), keeping at most `max_files` files in all.
pub(crate) struct RollingFile {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    file: File,
    written: u64,
}

impl RollingFile {
    /// Opens (appending to) `dir/keel.log`, creating `dir` if needed.
    pub(crate) fn open(
        dir: &Path,
        max_bytes: u64,
        max_files: usize,
    ) -> anyhow::Result<RollingFile> {
        fs::create_dir_all(dir).with_context(|| format!("creating log dir {}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening log file {}", path.display()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RollingFile {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.max(1),
            max_files: max_files.max(1),
            file,
            written,
        })
    }

    fn rolled(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{LOG_FILE}.{n}"))
    }

    fn roll(&mut self) -> io::Result<()> {
        self.file.flush()?;
        // The live file plus max_files - 1 rolled ones.
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = fs::remove_file(self.rolled(keep));
            for n in (1..keep).rev() {
                let from = self.rolled(n);
                if from.exists() {
                    fs::rename(&from, self.rolled(n + 1))?;
                }
            }
            fs::rename(self.dir.join(LOG_FILE), self.rolled(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(LOG_FILE))?;
        }
        self.written = 0;
        Ok(())
    }
}

impl Write for RollingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.roll()?;
        }
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_levels_keep_the_storage_engine_at_warnings() {
        assert_eq!(
            super::quiet_storage("info"),
            "info,fjall=warn,lsm_tree=warn"
        );
        assert_eq!(super::quiet_storage("error"), "error");
        assert_eq!(super::quiet_storage("keel=debug"), "keel=debug");
    }

    use super::*;

    #[test]
    fn files_roll_at_the_size_cap_and_the_oldest_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RollingFile::open(dir.path(), 100, 3).unwrap();
        for i in 0..20 {
            writeln!(log, "line {i:02} {}", "x".repeat(30)).unwrap();
        }
        log.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["keel.log", "keel.log.1", "keel.log.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 100, "{name} is {len} bytes");
        }
        // The newest lines are in the live file, the ones before in .1.
        let live = fs::read_to_string(dir.path().join("keel.log")).unwrap();
        assert!(live.contains("line 19"));
        let previous = fs::read_to_string(dir.path().join("keel.log.1")).unwrap();
        assert!(previous.contains("line 17") || previous.contains("line 16"));
        assert!(!fs::read_to_string(dir.path().join("keel.log.2"))
            .unwrap()
            .contains("line 00"));
    }

    #[test]
    fn reopening_appends_and_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RollingFile::open(dir.path(), 1000, 2).unwrap();
            log.write_all(&[b'a'; 900]).unwrap();
        }
        let mut log = RollingFile::open(dir.path(), 1000, 2).unwrap();
        log.write_all(&[b'b'; 200]).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("keel.log.1")).unwrap().len(),
            900
        );
        assert_eq!(
            fs::metadata(dir.path().join("keel.log")).unwrap().len(),
            200
        );
    }
}
