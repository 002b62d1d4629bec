//! The node's durable state: the WAL for the log and hard state, snapshot
//! files for the state machine, and an in-memory copy of the log that the
//! Raft core reads through `Storage`.
//!
//! Ordering makes crashes safe: a snapshot file is written (and synced)
//! before the WAL marker that refers to it, and older files are deleted only
//! after; on start, the snapshot used is the one the WAL's marker names.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel_raft::{ConfState, Entry, EntryId, HardState, Index, MemStorage, NodeId, SnapshotMeta};
use keel_wal::{Wal, WalOptions};

use crate::config::NodeConfig;
use crate::error::StartError;

/// A failure writing durable state: the node cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] keel_wal::WalError),
    /// A snapshot file could not be written.
    #[error("writing snapshot {path}: {source}")]
    Snapshot {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The in-memory log refused the write (a core bug).
    #[error(transparent)]
    Log(#[from] keel_raft::StorageError),
}

/// What a restarting node recovers.
pub(crate) struct Opened {
    pub(crate) store: LogStore,
    /// The snapshot data to restore the state machine from, if any.
    pub(crate) snapshot: Option<(SnapshotMeta, Bytes)>,
}

pub(crate) struct LogStore {
    dir: PathBuf,
    wal: Wal,
    mem: MemStorage,
}

impl LogStore {
    pub(crate) fn open(config: &NodeConfig) -> Result<Opened, StartError> {
        let dir = config.data_dir.clone();
        let options = WalOptions {
            sync: config.sync_wal,
            ..WalOptions::default()
        };
        let (mut wal, mut recovered) = Wal::open(dir.join("wal"), options)?;
        let voters: Vec<NodeId> = config.initial_members.keys().copied().collect();
        let fresh = recovered.entries.is_empty() && recovered.snapshot.is_none();
        if fresh && !voters.is_empty() {
            // A new cluster: every initial member starts from the same first
            // entry, which records the initial membership in the log.
            let entry = keel_raft::bootstrap_entry(&voters);
            let hs = HardState {
                term: 1,
                vote: None,
                commit: 1,
            };
            wal.append(std::slice::from_ref(&entry), Some(hs))?;
            recovered.entries.push(entry);
            recovered.hard_state = hs;
        }
        let mem = MemStorage::new(ConfState::with_voters(&voters));
        let snapshot = match recovered.snapshot {
            Some(id) => {
                let path = snapshot_path(&dir, id.index);
                let (meta, data) =
                    read_snapshot(&path).map_err(|reason| StartError::Snapshot { path, reason })?;
                mem.apply_snapshot(meta.clone(), data.clone());
                Some((meta, data))
            }
            None => None,
        };
        let floor = snapshot.as_ref().map_or(0, |(m, _)| m.last.index);
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
            store: LogStore { dir, wal, mem },
            snapshot,
        })
    }

    /// fdatasync calls made by the WAL so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.wal.syncs()
    }

    /// The log the core reads.
    pub(crate) fn storage(&self) -> MemStorage {
        self.mem.clone()
    }

    /// Makes entries and hard state durable: one WAL write, one sync.
    pub(crate) fn persist(
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

    /// Persists the membership as of the applied index.
    pub(crate) fn set_conf_state(&self, conf_state: ConfState) {
        self.mem.set_conf_state(conf_state);
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub(crate) fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: Bytes,
    ) -> Result<(), StoreError> {
        self.write_snapshot_file(&meta, &data)?;
        self.wal.install_snapshot(meta.last)?;
        self.mem.apply_snapshot(meta.clone(), data);
        self.remove_snapshots_except(meta.last.index);
        Ok(())
    }

    /// Records a snapshot of the local state at `last` and compacts the log.
    pub(crate) fn compact(
        &mut self,
        last: EntryId,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<(), StoreError> {
        let meta = self
            .mem
            .create_snapshot(last.index, conf_state, data.clone())?;
        self.write_snapshot_file(&meta, &data)?;
        self.wal.compact_to(meta.last)?;
        self.mem.compact(last.index)?;
        self.wal.purge()?;
        self.remove_snapshots_except(last.index);
        Ok(())
    }

    fn write_snapshot_file(&self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), StoreError> {
        let path = snapshot_path(&self.dir, meta.last.index);
        let tmp = path.with_extension("tmp");
        let err = |source| StoreError::Snapshot {
            path: path.clone(),
            source,
        };
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&encode_snapshot(meta, data)).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &path).map_err(err)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }

    fn remove_snapshots_except(&self, keep: Index) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snap-") && path != snapshot_path(&self.dir, keep) {
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove an old snapshot");
                }
            }
        }
    }
}

fn snapshot_path(dir: &Path, index: Index) -> PathBuf {
    dir.join(format!("snap-{index:016x}.bin"))
}

const MAGIC: &[u8; 4] = b"KSNP";

fn put_ids(b: &mut BytesMut, ids: &[NodeId]) {
    b.put_u32_le(ids.len() as u32);
    for id in ids {
        b.put_u64_le(*id);
    }
}

fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 128);
    b.put_slice(MAGIC);
    b.put_u64_le(meta.last.term);
    b.put_u64_le(meta.last.index);
    let cs = &meta.conf_state;
    for ids in [
        &cs.voters,
        &cs.voters_outgoing,
        &cs.learners,
        &cs.learners_next,
    ] {
        put_ids(&mut b, ids);
    }
    b.put_u64_le(data.len() as u64);
    b.put_slice(data);
    let crc = crc32c::crc32c(&b);
    b.put_u32_le(crc);
    b.freeze()
}

fn read_snapshot(path: &Path) -> Result<(SnapshotMeta, Bytes), String> {
    let raw = fs::read(path).map_err(|e| e.to_string())?;
    if raw.len() < MAGIC.len() + 4 || &raw[..4] != MAGIC {
        return Err("not a keel snapshot file".into());
    }
    let (body, crc) = raw.split_at(raw.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let mut b = &body[4..];
    let short = || "truncated".to_string();
    let u64_of = |b: &mut &[u8]| {
        if b.len() < 8 {
            Err(short())
        } else {
            Ok(b.get_u64_le())
        }
    };
    let term = u64_of(&mut b)?;
    let index = u64_of(&mut b)?;
    let mut lists = Vec::new();
    for _ in 0..4 {
        if b.len() < 4 {
            return Err(short());
        }
        let n = b.get_u32_le() as usize;
        if b.len() < n * 8 {
            return Err(short());
        }
        lists.push((0..n).map(|_| b.get_u64_le()).collect::<Vec<_>>());
    }
    let len = u64_of(&mut b)? as usize;
    if b.len() != len {
        return Err("data length mismatch".into());
    }
    let learners_next = lists.pop().expect("4 lists");
    let learners = lists.pop().expect("4 lists");
    let voters_outgoing = lists.pop().expect("4 lists");
    let voters = lists.pop().expect("4 lists");
    let meta = SnapshotMeta {
        last: EntryId { term, index },
        conf_state: ConfState {
            voters,
            voters_outgoing,
            learners,
            learners_next,
        },
        size: len as u64,
    };
    Ok((meta, Bytes::copy_from_slice(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_files_round_trip_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SnapshotMeta {
            last: EntryId { term: 3, index: 42 },
            conf_state: ConfState {
                voters: vec![1, 2],
                voters_outgoing: vec![1, 2, 3],
                learners: vec![4],
                learners_next: vec![3],
            },
            size: 5,
        };
        let path = dir.path().join("s");
        fs::write(&path, encode_snapshot(&meta, b"state")).unwrap();
        let (back, data) = read_snapshot(&path).unwrap();
        assert_eq!(back, meta);
        assert_eq!(&data[..], b"state");
        let mut raw = fs::read(&path).unwrap();
        raw[20] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert!(read_snapshot(&path).is_err());
    }
}
