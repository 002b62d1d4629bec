//! The read side of the durable log, implemented by the caller, and an
//! in-memory implementation for tests, the simulator and benchmarks.
//!
//! The core only ever reads through [`Storage`]; the caller writes what each
//! [`Ready`](crate::Ready) asks it to persist.

use std::sync::{Arc, RwLock};

use crate::error::StorageError;
use bytes::Bytes;

use crate::message::{ConfState, Entry, EntryId, HardState, Index, SnapshotMeta, Term};

/// What the core needs to know about the log when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The persisted membership.
    pub conf_state: ConfState,
}

/// Read access to the persisted log.
///
/// The log always begins with a "dummy" position `first_index() - 1` whose
/// term is known (zero for a fresh log, the snapshot's term after compaction).
pub trait Storage {
    /// The persisted hard state and membership.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries with indexes in `[low, high)`, stopping early once their total
    /// [`Entry::size`] would pass `max_size` (but always returning at least one
    /// entry when the range is not empty).
    fn entries(&self, low: Index, high: Index, max_size: u64) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// The index of the first entry still available.
    fn first_index(&self) -> Result<Index, StorageError>;

    /// The index of the last persisted entry (`first_index() - 1` when empty).
    fn last_index(&self) -> Result<Index, StorageError>;

    /// The latest snapshot's metadata, for sending to a follower that needs
    /// compacted entries. [`StorageError::SnapshotUnavailable`] means "not
    /// yet": the leader asks again later.
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;

    /// Up to `max_len` bytes of the snapshot `meta` from `offset`.
    /// [`StorageError::SnapshotOutOfDate`] if that snapshot was replaced.
    fn snapshot_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        max_len: u64,
    ) -> Result<Bytes, StorageError>;
}

/// The bytes of a snapshot, readable at any offset: a buffer in memory or a
/// file on disk, so that a snapshot of gigabytes is served chunk by chunk.
pub trait SnapshotData: Send + Sync + std::fmt::Debug {
    /// The size in bytes.
    fn len(&self) -> u64;

    /// Whether the snapshot holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset` (the caller keeps within the size).
    fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, StorageError>;
}

impl SnapshotData for Bytes {
    fn len(&self) -> u64 {
        Bytes::len(self) as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        let start = (offset as usize).min(Bytes::len(self));
        let end = start.saturating_add(len as usize).min(Bytes::len(self));
        Ok(self.slice(start..end))
    }
}

/// Keeps entries in total size under `max_size`, but never returns fewer than
/// one entry. Shared by every place that cuts a batch of entries.
pub(crate) fn limit_size(entries: &mut Vec<Entry>, max_size: u64) {
    let mut total = 0u64;
    let keep = entries
        .iter()
        .position(|e| {
            total += e.size();
            total > max_size
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
}

#[derive(Debug, Default)]
struct MemInner {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the position just before `entries[0]`.
    offset_index: Index,
    offset_term: Term,
    entries: Vec<Entry>,
    snapshot: Option<(SnapshotMeta, Arc<dyn SnapshotData>)>,
}

impl MemInner {
    fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as u64
    }
}

/// An in-memory [`Storage`]. Cloning gives another handle to the same log, so
/// a test can keep one handle as "the disk" while the node reads through another.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<RwLock<MemInner>>,
}

impl MemStorage {
    /// An empty log with the given initial membership.
    pub fn new(conf_state: ConfState) -> Self {
        let storage = MemStorage::default();
        storage.write().conf_state = conf_state;
        storage
    }

    /// An empty log whose voters are `voters`.
    pub fn with_voters(voters: &[u64]) -> Self {
        Self::new(ConfState::with_voters(voters))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, MemInner> {
        // A poisoned lock means a thread panicked while holding it; the data is
        // still consistent because every write below is a single operation.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, MemInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Persists the hard state.
    pub fn set_hard_state(&self, hard_state: HardState) {
        self.write().hard_state = hard_state;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state
    }

    /// Appends `entries`, first removing any persisted suffix they replace.
    ///
    /// Fails if the entries would leave a gap after the current last index or
    /// start inside the compacted prefix.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut inner = self.write();
        if first.index <= inner.offset_index {
            return Err(StorageError::Compacted(first.index));
        }
        if first.index > inner.last_index() + 1 {
            return Err(StorageError::Unavailable(first.index));
        }
        let keep = (first.index - inner.offset_index - 1) as usize;
        inner.entries.truncate(keep);
        inner.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Persists the membership (as of the applied index).
    pub fn set_conf_state(&self, conf_state: ConfState) {
        self.write().conf_state = conf_state;
    }

    /// Records a snapshot of the state machine at `index` (which must be in
    /// the log), holding `data` and the membership `conf_state` at that point.
    pub fn create_snapshot(
        &self,
        index: Index,
        conf_state: ConfState,
        data: impl SnapshotData + 'static,
    ) -> Result<SnapshotMeta, StorageError> {
        let term = self.term(index)?;
        let meta = SnapshotMeta {
            last: EntryId { term, index },
            conf_state,
            size: data.len(),
        };
        self.write().snapshot = Some((meta.clone(), Arc::new(data)));
        Ok(meta)
    }

    /// Drops the entries up to and including `index`, which the latest
    /// snapshot must cover.
    pub fn compact(&self, index: Index) -> Result<(), StorageError> {
        let mut inner = self.write();
        let covered = inner.snapshot.as_ref().map_or(0, |(m, _)| m.last.index);
        if index > covered || index > inner.last_index() {
            return Err(StorageError::Other(format!(
                "cannot compact to {index}: the snapshot covers up to {covered}"
            )));
        }
        if index <= inner.offset_index {
            return Ok(());
        }
        let term = inner.entries[(index - inner.offset_index - 1) as usize].term;
        let drop = (index - inner.offset_index) as usize;
        inner.entries.drain(..drop);
        inner.offset_index = index;
        inner.offset_term = term;
        Ok(())
    }

    /// Replaces the log with a snapshot received from the leader: the log now
    /// starts right after it, and its membership becomes the persisted one.
    pub fn apply_snapshot(&self, meta: SnapshotMeta, data: impl SnapshotData + 'static) {
        let mut inner = self.write();
        inner.entries.clear();
        inner.offset_index = meta.last.index;
        inner.offset_term = meta.last.term;
        inner.conf_state = meta.conf_state.clone();
        inner.hard_state.commit = inner.hard_state.commit.max(meta.last.index);
        inner.hard_state.term = inner.hard_state.term.max(meta.last.term);
        inner.snapshot = Some((meta, Arc::new(data)));
    }

    /// The latest snapshot and its data, if any.
    pub fn snapshot(&self) -> Option<(SnapshotMeta, Arc<dyn SnapshotData>)> {
        self.read().snapshot.clone()
    }

    /// A copy of every stored entry (for checkers and tests).
    pub fn all_entries(&self) -> Vec<Entry> {
        self.read().entries.clone()
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let inner = self.read();
        Ok(InitialState {
            hard_state: inner.hard_state,
            conf_state: inner.conf_state.clone(),
        })
    }

    fn entries(&self, low: Index, high: Index, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        let inner = self.read();
        if low <= inner.offset_index {
            return Err(StorageError::Compacted(low));
        }
        if high > inner.last_index() + 1 {
            return Err(StorageError::Unavailable(high - 1));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let start = (low - inner.offset_index - 1) as usize;
        let end = (high - inner.offset_index - 1) as usize;
        let mut out = inner.entries[start..end].to_vec();
        limit_size(&mut out, max_size);
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let inner = self.read();
        if index < inner.offset_index {
            return Err(StorageError::Compacted(index));
        }
        if index == inner.offset_index {
            return Ok(inner.offset_term);
        }
        inner
            .entries
            .get((index - inner.offset_index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable(index))
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.read().offset_index + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.read().last_index())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        self.read()
            .snapshot
            .as_ref()
            .map(|(meta, _)| meta.clone())
            .ok_or(StorageError::SnapshotUnavailable)
    }

    fn snapshot_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        max_len: u64,
    ) -> Result<Bytes, StorageError> {
        let inner = self.read();
        // The whole meta identifies a snapshot: one taken again at the same
        // index may hold other bytes (and another size).
        let Some((current, data)) = inner.snapshot.as_ref().filter(|(m, _)| m == meta) else {
            return Err(StorageError::SnapshotOutOfDate(meta.last.index));
        };
        let len = max_len.min(current.size.saturating_sub(offset));
        data.read_at(offset.min(current.size), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ent(term: Term, index: Index) -> Entry {
        Entry::normal(term, index, Bytes::new())
    }

    #[test]
    fn append_replaces_conflicting_suffix() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1), ent(1, 2), ent(1, 3)]).unwrap();
        s.append(&[ent(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.term(0).unwrap(), 0);
    }

    #[test]
    fn append_with_gap_is_refused() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1)]).unwrap();
        assert_eq!(s.append(&[ent(1, 3)]), Err(StorageError::Unavailable(3)));
        assert_eq!(s.append(&[ent(1, 0)]), Err(StorageError::Compacted(0)));
    }

    #[test]
    fn entries_respects_size_but_returns_at_least_one() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1), ent(1, 2), ent(1, 3)]).unwrap();
        assert_eq!(s.entries(1, 4, 0).unwrap().len(), 1);
        assert_eq!(s.entries(1, 4, 2 * ENTRY).unwrap().len(), 2);
        assert_eq!(s.entries(1, 4, u64::MAX).unwrap().len(), 3);
        assert!(matches!(
            s.entries(1, 5, u64::MAX),
            Err(StorageError::Unavailable(_))
        ));
        assert!(s.term(4).is_err());
    }

    const ENTRY: u64 = crate::message::ENTRY_OVERHEAD_BYTES;

    #[test]
    fn snapshot_compaction_and_chunks() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1), ent(1, 2), ent(2, 3)]).unwrap();
        assert_eq!(s.snapshot_meta(), Err(StorageError::SnapshotUnavailable));
        assert!(s.compact(2).is_err(), "nothing covers the entries yet");
        let meta = s
            .create_snapshot(
                2,
                ConfState::with_voters(&[1]),
                Bytes::from_static(b"abcdefg"),
            )
            .unwrap();
        assert_eq!(meta.last, EntryId { term: 1, index: 2 });
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(matches!(s.term(1), Err(StorageError::Compacted(1))));
        assert_eq!(&s.snapshot_chunk(&meta, 0, 3).unwrap()[..], b"abc");
        assert_eq!(&s.snapshot_chunk(&meta, 6, 3).unwrap()[..], b"g");
        let newer = s
            .create_snapshot(3, ConfState::default(), Bytes::new())
            .unwrap();
        assert_eq!(
            s.snapshot_chunk(&meta, 0, 3),
            Err(StorageError::SnapshotOutOfDate(2))
        );
        // keel-sim seed 9 (5 nodes, chaos): a snapshot taken again at the
        // same index with other bytes was served under the old meta, and
        // its chunks ran past the old size.
        let again = s
            .create_snapshot(3, ConfState::default(), Bytes::from_static(b"xy"))
            .unwrap();
        assert_eq!(again.last, newer.last);
        assert_eq!(
            s.snapshot_chunk(&newer, 0, 3),
            Err(StorageError::SnapshotOutOfDate(3))
        );
        assert_eq!(&s.snapshot_chunk(&again, 0, 3).unwrap()[..], b"xy");
        s.apply_snapshot(
            SnapshotMeta {
                last: EntryId { term: 5, index: 10 },
                ..newer
            },
            Bytes::new(),
        );
        assert_eq!(s.first_index().unwrap(), 11);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.hard_state().commit, 10);
    }
}
