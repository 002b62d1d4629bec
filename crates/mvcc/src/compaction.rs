//! Removing the history below the compaction point, in the background.
//!
//! Applying a `Compact` only moves the compaction point: from then on reads
//! below it are refused, and nothing that remains below it can be seen (a
//! read at or above the point takes each key's first version at or below
//! its revision, and the versions compaction removes are all older than
//! that). The versions are removed afterwards by [`Store::compact_step`],
//! a bounded chunk at a time between applied batches, so a compaction of a
//! long history never stalls the apply path, however many versions one key
//! has. A chunk may end inside a key's versions; a deletion that hides
//! older versions is removed only after them, so a read between two chunks
//! never finds a version the deletion hid.
//!
//! What counts as removable is [`Garbage`]'s rule, which `hash_kv` applies
//! too, so the hash does not depend on how far removal has got. The
//! `changes` index below the point goes first: history below it is never
//! read.

use std::sync::PoisonError;

use fjall::Readable;

use crate::encoding::{change_key, is_tombstone, split_version_key};
use crate::schema::{revision_bytes, PHYSICAL};
use crate::{MvccError, Store};

/// Where a removal pass has got to.
#[derive(Debug)]
pub(crate) struct Pass {
    /// The rule of the pass, at the compaction point when it began (once
    /// the pass reaches the end, nothing at or below that point remains to
    /// remove), and where in the current key it is.
    garbage: Garbage,
    /// The storage key to continue from.
    resume: Vec<u8>,
    /// The current key's deletion that hides its older versions: removed
    /// once they are.
    hiding: Option<Vec<u8>>,
}

/// What compaction does with a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It stays.
    Keep,
    /// It goes.
    Remove,
    /// It goes, after the key's older versions: it is the deletion that
    /// hides them.
    RemoveLast,
}

/// Which `kv` entries, visited in storage order (each key's versions
/// newest first), compaction at `compacted` removes: every version at or
/// below it except the newest one of each key, and that one too if it is
/// a deletion older than the point. A deletion at the point itself stays
/// (until a later compaction), as etcd keeps it: a watch may start at the
/// compaction point and must see what happened there.
#[derive(Debug)]
pub(crate) struct Garbage {
    compacted: i64,
    key: Option<Vec<u8>>,
    /// Whether the current key's newest version at or below the point has
    /// been seen.
    settled: bool,
}

impl Garbage {
    /// The rule for compaction point `compacted`.
    pub(crate) fn new(compacted: i64) -> Garbage {
        Garbage {
            compacted,
            key: None,
            settled: false,
        }
    }

    /// The fate of the version of `key` at `revision` (a deletion when
    /// `tombstone`); entries must come in storage order.
    pub(crate) fn fate(&mut self, key: &[u8], revision: i64, tombstone: bool) -> Fate {
        if self.key.as_deref() != Some(key) {
            self.key = Some(key.to_vec());
            self.settled = false;
        }
        if revision > self.compacted {
            return Fate::Keep;
        }
        let newest = !self.settled;
        self.settled = true;
        match (newest, tombstone) {
            (true, false) => Fate::Keep,
            (true, true) if revision == self.compacted => Fate::Keep,
            (true, true) => Fate::RemoveLast,
            (false, _) => Fate::Remove,
        }
    }

    /// Whether `key` is the key whose versions are being visited.
    fn is_current(&self, key: &[u8]) -> bool {
        self.key.as_deref() == Some(key)
    }
}

impl Store {
    /// Removes the history below the compaction point, examining up to
    /// `max_entries` entries, and returns whether more remains. Cheap when
    /// there is nothing to do; the server calls it in a loop off the
    /// request path.
    pub fn compact_step(&self, max_entries: usize) -> Result<bool, MvccError> {
        let mut progress = self.lock_writer();
        let state = self.state();
        if state.restoring || state.physical >= state.compacted {
            *progress = None;
            return Ok(false);
        }
        let pass = progress.get_or_insert_with(|| Pass {
            garbage: Garbage::new(state.compacted),
            resume: Vec::new(),
            hiding: None,
        });
        let inner = &self.inner;
        let kv = &inner.keyspaces.kv;
        let snapshot = inner.db.snapshot();
        let mut batch = inner.db.batch();
        let below = change_key(state.compacted, 0);
        let changes = &inner.keyspaces.changes;
        let mut removed = 0;
        for entry in snapshot
            .range(changes, ..below.to_vec())
            .take(max_entries.max(1))
        {
            batch.remove(changes, entry.key()?);
            removed += 1;
        }
        if removed > 0 {
            batch.commit()?;
            return Ok(true);
        }
        for (examined, entry) in snapshot.range(kv, pass.resume.clone()..).enumerate() {
            let (stored, value) = entry.into_inner()?;
            if examined >= max_entries.max(1) {
                pass.resume = stored.to_vec();
                batch.commit()?;
                return Ok(true);
            }
            let (key, revision) = split_version_key(&stored)?;
            if !pass.garbage.is_current(&key) {
                // The previous key's older versions are gone.
                if let Some(hiding) = pass.hiding.take() {
                    batch.remove(kv, hiding);
                }
            }
            match pass.garbage.fate(&key, revision, is_tombstone(&value)) {
                Fate::Keep => {}
                Fate::Remove => batch.remove(kv, stored),
                Fate::RemoveLast => pass.hiding = Some(stored.to_vec()),
            }
        }
        if let Some(hiding) = pass.hiding.take() {
            batch.remove(kv, hiding);
        }
        let done = pass.garbage.compacted;
        batch.insert(&inner.keyspaces.meta, PHYSICAL, revision_bytes(done));
        {
            let mut published = inner.state.write().unwrap_or_else(PoisonError::into_inner);
            batch.commit()?;
            published.physical = done;
        }
        *progress = None;
        Ok(done < state.compacted)
    }

    /// The revision below which compaction has removed all history (at
    /// most the compaction point).
    pub fn physically_compacted(&self) -> i64 {
        self.state().physical
    }
}
