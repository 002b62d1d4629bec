//! Backups (from `etcdctl snapshot save`, the Maintenance API or the admin
//! API's download), checked end to end: the SHA-256 trailer over the whole
//! file, then the stream's own CRC as a store is restored from it.
//!
//! - `keel snapshot status BACKUP` restores into a scratch directory and
//!   prints the revision, the keys and the hash `etcdctl endpoint hashkv`
//!   reports for a member at that revision.
//! - `keel snapshot restore BACKUP --data-dir DIR --name ... --initial-cluster
//!   ...` makes a new member's data directory from it, as `etcdutl snapshot
//!   restore` does: the keys, their history and the leases of the backup,
//!   the members of the new cluster, no alarms and an empty raft log.
//!   `keel serve` with the same name, initial cluster and token then starts
//!   the new cluster from it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use keel_api::etcdserverpb::{Member, RangeRequest};
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
    /// Make a new member's data directory from a backup.
    Restore(RestoreArgs),
}

/// Where a restored member goes, and the new cluster it starts.
#[derive(clap::Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    backup: PathBuf,
    /// The new member's data directory (must not exist yet).
    #[arg(long, default_value = "keel-data")]
    data_dir: PathBuf,
    /// The new member's name.
    #[arg(long, default_value = "default")]
    name: String,
    /// The new cluster's members: `name=peer-url,...` (default: this one).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The new cluster's token.
    #[arg(long, default_value = "keel-cluster")]
    initial_cluster_token: String,
    /// This member's peer URL in the new cluster.
    #[arg(long, alias = "initial-advertise-peer-urls", default_value = crate::config::DEFAULT_PEER_URL)]
    advertise_peer_url: String,
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
        SnapshotCommand::Restore(args) => restore(&args),
    }
}

/// Opens a backup and checks its SHA-256 trailer: the file, positioned
/// at its start, with the length of its body (without the trailer).
fn verified(path: &Path) -> anyhow::Result<(File, u64)> {
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
    file.seek(SeekFrom::Start(0))?;
    Ok((file, body))
}

/// Restores the store in `dir` from a verified backup.
fn restore_store(path: &Path, dir: &Path) -> anyhow::Result<Store> {
    let (mut file, body) = verified(path)?;
    let store = Store::open(dir, StoreOptions::default())
        .with_context(|| format!("opening a store in {}", dir.display()))?;
    store
        .restore(&mut (&mut file).take(body))
        .with_context(|| format!("{} does not restore", path.display()))?;
    Ok(store)
}

/// Checks `path` and reads what it holds.
fn status(path: &Path) -> anyhow::Result<Status> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("opening {}", path.display()))?
        .len();
    let scratch = std::env::temp_dir().join(format!("keel-snapshot-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = (|| -> anyhow::Result<Status> {
        let store = restore_store(path, &scratch)?;
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

/// Makes a new member's data directory from a backup.
fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let initial = match &args.initial_cluster {
        Some(list) => crate::config::parse_initial_cluster(list).context("--initial-cluster")?,
        None => vec![(args.name.clone(), args.advertise_peer_url.clone())],
    };
    if !initial
        .iter()
        .any(|(name, url)| *name == args.name && *url == args.advertise_peer_url)
    {
        bail!(
            "--initial-cluster has no entry `{}={}` for this member (--name and --advertise-peer-url)",
            args.name,
            args.advertise_peer_url
        );
    }
    if args.data_dir.exists() {
        bail!(
            "{} exists: restore makes a new data directory, remove it or choose another",
            args.data_dir.display()
        );
    }
    let members: Vec<Member> = initial
        .iter()
        .map(|(name, url)| Member {
            id: crate::identity::initial_member_id(url, &args.initial_cluster_token),
            name: name.clone(),
            peer_ur_ls: vec![url.clone()],
            ..Member::default()
        })
        .collect();
    let staging = args.data_dir.with_extension("restoring");
    let _ = std::fs::remove_dir_all(&staging);
    let reseeded = restore_store(&args.backup, &staging.join("kv")).and_then(|store| {
        store.reseed(&members).context("seeding the new cluster")?;
        Ok(store.hash_kv(0)?)
    });
    let restored = match reseeded {
        Ok(hash) => hash,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Whole or not at all: the directory appears once its store is complete.
    std::fs::rename(&staging, &args.data_dir)
        .with_context(|| format!("moving the restored store to {}", args.data_dir.display()))?;
    println!(
        "restored {} (revision {}, hash {:x}) into {} for member {} of {} members; start it with `keel serve --name {} --data-dir {} --initial-cluster ... --initial-cluster-token {}`",
        args.backup.display(),
        restored.revision,
        restored.hash,
        args.data_dir.display(),
        args.name,
        members.len(),
        args.name,
        args.data_dir.display(),
        args.initial_cluster_token,
    );
    Ok(())
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
