//! The node's durable state: the WAL for the log and hard state, snapshot
//! files for the state machine, and an in-memory copy of the log that the
//! Raft core reads through `Storage`.
//!
//! Ordering makes crashes safe: a snapshot file is complete and synced
//! before the WAL marker that names it is written, and older files are
//! deleted only after; on start, the snapshot used is the one the WAL's
//! marker names.
//!
//! Everything goes through a [`FileSystem`]: the real one by default, or a
//! simulator's that injects faults.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_raft::{
    ConfState, Entry, HardState, Index, MemStorage, NodeId, SnapshotChunk, SnapshotData,
    SnapshotMeta,
};
use keel_wal::{FileSystem, StdFs, Wal, WalOptions};

use crate::config::NodeConfig;
use crate::error::StartError;
use crate::replica::{LogStore, Restore};
use crate::snapshot_file::{FileSnapshot, SnapshotWriter};

/// A failure writing durable state: the node cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] keel_wal::WalError),
    /// A snapshot file could not be written or read back.
    #[error("snapshot {path}: {source}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The state machine refused a snapshot.
    #[error("the state machine refused the snapshot: {0}")]
    Restore(String),
    /// The in-memory log refused the write (a core bug).
    #[error(transparent)]
    Log(#[from] keel_raft::StorageError),
}

/// What a restarting node recovers.
pub struct Opened<F: FileSystem = StdFs> {
    /// The store, ready for the node's `Replica`.
    pub store: DiskStore<F>,
    /// The node had no state: it starts a new cluster or joins one.
    pub fresh: bool,
    /// The snapshot to restore the state machine from, if any.
    pub snapshot: Option<Arc<FileSnapshot<F>>>,
}

/// The node's [`LogStore`] on disk.
pub struct DiskStore<F: FileSystem = StdFs> {
    fs: F,
    dir: PathBuf,
    wal: Wal<F>,
    mem: MemStorage,
    /// The file a snapshot being received is streamed into.
    receiving: Option<SnapshotWriter<F>>,
}

impl DiskStore {
    /// Opens the store in `config.data_dir` (see [`open_in`](Self::open_in)).
    pub fn open(config: &NodeConfig) -> Result<Opened, StartError> {
        DiskStore::open_in(StdFs, config)
    }
}

impl<F: FileSystem> DiskStore<F> {
    /// Opens the store in `config.data_dir` on `fs`: replays the WAL, opens
    /// the snapshot its marker names, and for a new node of a new cluster
    /// (`initial_members` set, no state) writes the bootstrap entry.
    pub fn open_in(fs: F, config: &NodeConfig) -> Result<Opened<F>, StartError> {
        let dir = config.data_dir.clone();
        let options = WalOptions {
            sync: config.sync_wal,
            ..WalOptions::default()
        };
        let (mut wal, mut recovered) = Wal::open_in(fs.clone(), dir.join("wal"), options)?;
        let voters: Vec<NodeId> = config.initial_members.keys().copied().collect();
        let fresh = recovered.entries.is_empty() && recovered.snapshot.is_none();
        if fresh && !voters.is_empty() && !voters.contains(&config.id) {
            return Err(StartError::Config(format!(
                "initial_members does not include this node ({})",
                config.id
            )));
        }
        if fresh && !voters.is_empty() {
            // A new cluster: every initial member starts from the same first
            // entry, which records the initial membership in the log.
            // It records their addresses too, for the address book.
            let entry = keel_raft::bootstrap_entry_with_context(
                &voters,
                &crate::addresses::encode(&config.initial_members),
            );
            let hs = HardState {
                term: 1,
                vote: None,
                commit: 1,
            };
            wal.append(std::slice::from_ref(&entry), Some(hs))?;
            recovered.entries.push(entry);
            recovered.hard_state = hs;
        }
        remove_temporary_files(&fs, &dir);
        // A restart rebuilds the membership from its snapshot and log, never
        // from the configuration.
        let mem = MemStorage::new(if fresh {
            ConfState::with_voters(&voters)
        } else {
            ConfState::default()
        });
        let snapshot = match recovered.snapshot {
            Some(id) => {
                let path = snapshot_path(&dir, id.index);
                let file =
                    FileSnapshot::open_in(fs.clone(), &path).map_err(|e| StartError::Snapshot {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if file.meta.last != id {
                    return Err(StartError::Snapshot {
                        path,
                        reason: format!("holds {:?} but the WAL names {id:?}", file.meta.last),
                    });
                }
                let file = Arc::new(file);
                mem.apply_snapshot(file.meta.clone(), SharedSnapshot(file.clone()));
                Some(file)
            }
            None => None,
        };
        let floor = snapshot.as_ref().map_or(0, |f| f.meta.last.index);
        let entries: Vec<Entry> = recovered
            .entries
            .into_iter()
            .filter(|e| e.index > floor)
            .collect();
        mem.append(&entries)
            .map_err(|e| StartError::Config(format!("recovered log: {e}")))?;
        let mut hs = recovered.hard_state;
        hs.commit = hs.commit.max(floor);
        mem.set_hard_state(hs);
        Ok(Opened {
            fresh,
            store: DiskStore {
                fs,
                dir,
                wal,
                mem,
                receiving: None,
            },
            snapshot,
        })
    }

    /// fdatasync calls made by the WAL so far.
    pub fn syncs(&self) -> u64 {
        self.wal.syncs()
    }

    /// The log the core reads.
    pub fn storage(&self) -> MemStorage {
        self.mem.clone()
    }

    /// The directory snapshot files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The filesystem the store is on.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Records a snapshot of the local state (already complete in its file)
    /// and compacts the log up to it.
    pub fn compact(&mut self, snapshot: Arc<FileSnapshot<F>>) -> Result<(), StoreError> {
        let last = snapshot.meta.last;
        let conf_state = snapshot.meta.conf_state.clone();
        self.mem
            .create_snapshot(last.index, conf_state, SharedSnapshot(snapshot))?;
        self.wal.compact_to(last)?;
        self.mem.compact(last.index)?;
        self.wal.purge()?;
        self.remove_snapshots_except(last.index);
        Ok(())
    }

    fn snapshot_error(&self, index: Index, source: io::Error) -> StoreError {
        StoreError::Snapshot {
            path: snapshot_path(&self.dir, index),
            source,
        }
    }

    fn remove_snapshots_except(&self, keep: Index) {
        let Ok(names) = self.fs.list_dir(&self.dir) else {
            return;
        };
        let keep = snapshot_path(&self.dir, keep);
        for name in names {
            let path = self.dir.join(&name);
            if name.starts_with("snap-") && name.ends_with(".bin") && path != keep {
                if let Err(e) = self.fs.remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove an old snapshot");
                }
            }
        }
    }
}

impl<F: FileSystem> LogStore for DiskStore<F> {
    type Error = StoreError;

    /// One WAL write, one sync.
    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), StoreError> {
        self.wal.append(entries, hard_state)?;
        self.mem.append(entries)?;
        if let Some(hs) = hard_state {
            self.mem.set_hard_state(hs);
        }
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: ConfState) {
        self.mem.set_conf_state(conf_state);
    }

    /// Streams the chunk into the snapshot's file.
    fn receive_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), StoreError> {
        let index = chunk.meta.last.index;
        if chunk.offset == 0 {
            let writer = SnapshotWriter::create_in(
                self.fs.clone(),
                snapshot_path(&self.dir, index),
                chunk.meta.last,
                chunk.meta.conf_state.clone(),
            )
            .map_err(|e| self.snapshot_error(index, e))?;
            self.receiving = Some(writer);
        }
        let Some(writer) = self.receiving.as_mut() else {
            // The core hands out chunks in order from offset 0 within one life.
            let e = io::Error::other("a snapshot chunk without its beginning");
            return Err(self.snapshot_error(index, e));
        };
        writer
            .write_all(&chunk.data)
            .map_err(|e| self.snapshot_error(index, e))
    }

    /// Completes the file, restores from it, then writes the WAL marker
    /// that names it (so a crash in between leaves the old state).
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        restore: Restore<'_>,
    ) -> Result<(), StoreError> {
        let index = meta.last.index;
        let writer = self.receiving.take().ok_or_else(|| {
            self.snapshot_error(index, io::Error::other("no snapshot was being received"))
        })?;
        let snapshot = writer.finish().map_err(|e| self.snapshot_error(index, e))?;
        if snapshot.meta != meta {
            let e = io::Error::other("the received snapshot does not match its metadata");
            return Err(self.snapshot_error(index, e));
        }
        {
            let mut reader = snapshot
                .reader()
                .map_err(|e| self.snapshot_error(index, e))?;
            restore(&mut reader).map_err(StoreError::Restore)?;
        }
        let snapshot = Arc::new(snapshot);
        self.wal.install_snapshot(meta.last)?;
        self.mem
            .apply_snapshot(snapshot.meta.clone(), SharedSnapshot(snapshot));
        self.remove_snapshots_except(index);
        Ok(())
    }
}

/// Where the snapshot ending at `index` lives.
pub fn snapshot_path(dir: &Path, index: Index) -> PathBuf {
    dir.join(format!("snap-{index:016x}.bin"))
}

/// A snapshot file shared by the core (serving chunks) and the store.
#[derive(Debug)]
struct SharedSnapshot<F: FileSystem>(Arc<FileSnapshot<F>>);

impl<F: FileSystem> SnapshotData for SharedSnapshot<F> {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<bytes::Bytes, keel_raft::StorageError> {
        self.0.read_at(offset, len)
    }
}

/// Snapshots half written when the node stopped are of no use.
fn remove_temporary_files<F: FileSystem>(fs: &F, dir: &Path) {
    let Ok(names) = fs.list_dir(dir) else {
        return;
    };
    for name in names {
        if name.ends_with(".tmp") {
            let _ = fs.remove_file(&dir.join(name));
        }
    }
}
