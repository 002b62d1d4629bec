//! `keel snapshot status BACKUP`: what a backup (from `etcdctl snapshot
//! save` or the Maintenance API) holds, checked end to end: the SHA-256
//! trailer over the whole file, then the stream's own CRC as the store is
//! restored from it into a scratch directory, which gives the revision,
//! the keys and the hash `etcdctl endpoint hashkv` reports for a member at
//! that revision.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use keel_api::etcdserverpb::RangeRequest;
use keel_mvcc::{Store, StoreOptions};
use sha2::{Digest, Sha256};

/// The SHA-256 a backup ends with.
const TRAILER: u64 = 32;

/// The snapshot commands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum SnapshotCommand {
    /// Check a backup and print its hash, revision, keys and size.
    Status {
        /// The backup file.
        backup: PathBuf,
        /// Output format: table (etcdctl's) or json.
        #[arg(long, short = 'w', default_value = "table")]
        write_out: String,
    },
}

/// What a backup holds.
struct Status {
    hash: u32,
    revision: i64,
    keys: i64,
    size: u64,
}

/// Runs a snapshot command.
pub(crate) fn run(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Status { backup, write_out } => {
            let status = status(&backup)?;
            match write_out.as_str() {
                "json" => println!(
                    "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
                    status.hash, status.revision, status.keys, status.size
                ),
                "table" => print_table(&status),
                other => bail!("unknown output format {other:?} (table, json)"),
            }
            Ok(())
        }
    }
}

/// Checks `path` and reads what it holds.
fn status(path: &Path) -> anyhow::Result<Status> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    if size < TRAILER {
        bail!("{} is not a keel backup: too short", path.display());
    }
    let body = size - TRAILER;
    let mut hasher = Sha256::new();
    io::copy(&mut (&mut file).take(body), &mut hasher)?;
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact(&mut trailer)?;
    if hasher.finalize()[..] != trailer[..] {
        bail!(
            "{}: snapshot file integrity check failed (SHA-256 mismatch)",
            path.display()
        );
    }
    let scratch = std::env::temp_dir().join(format!("keel-snapshot-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = (|| -> anyhow::Result<Status> {
        let store =
            Store::open(&scratch, StoreOptions::default()).context("opening a scratch store")?;
        file.seek(SeekFrom::Start(0))?;
        store
            .restore(&mut (&mut file).take(body))
            .with_context(|| format!("{} does not restore", path.display()))?;
        let hash = store.hash_kv(0)?;
        let keys = store
            .range(&RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                count_only: true,
                ..RangeRequest::default()
            })?
            .count;
        Ok(Status {
            hash: hash.hash,
            revision: hash.revision,
            keys,
            size,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Prints `status` as etcdctl's table.
fn print_table(status: &Status) {
    let cells = [
        format!("{:x}", status.hash),
        status.revision.to_string(),
        status.keys.to_string(),
        human_size(status.size),
    ];
    let heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    let widths: Vec<usize> = heads
        .iter()
        .zip(&cells)
        .map(|(h, c)| h.len().max(c.len()) + 2)
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(*w)))
        .collect::<String>()
        + "+";
    let row = |items: &[String], right: bool| {
        items
            .iter()
            .zip(&widths)
            .map(|(item, w)| {
                if right {
                    format!("|{item:>width$} ", width = w - 1)
                } else {
                    format!("|{item:^w$}")
                }
            })
            .collect::<String>()
            + "|"
    };
    println!("{rule}");
    println!("{}", row(&heads.map(String::from), false));
    println!("{rule}");
    println!("{}", row(&cells, true));
    println!("{rule}");
}

/// A size as etcdctl prints it (decimal units, one decimal).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
