//! Removing the history below the compaction point, in the background.
//!
//! Applying a `Compact` only moves the compaction point: from then on reads
//! below it are refused, and nothing that remains below it can be seen (a
//! read at or above the point takes each key's first version at or below
//! its revision, and the versions compaction removes are all older than
//! that). The versions are removed afterwards by [`Store::compact_step`],
//! a bounded chunk at a time between applied batches, so a compaction of a
//! long history never stalls the apply path. A chunk ends on a key
//! boundary, so each key loses its old versions atomically.
//!
//! What counts as removable is [`Garbage`]'s rule, which `hash_kv` applies
//! too, so the hash does not depend on how far removal has got.

use std::sync::PoisonError;

use fjall::Readable;

use crate::encoding::{key_start, split_version_key};
use crate::store::{revision_bytes, PHYSICAL};
use crate::{MvccError, Store};

/// Where a removal pass has got to.
#[derive(Debug)]
pub(crate) struct Pass {
    /// The compaction point when the pass began: once it reaches the end,
    /// nothing at or below this remains to remove.
    target: i64,
    /// The storage key to continue from.
    resume: Vec<u8>,
}

/// Which `kv` entries, visited in storage order (each key's versions
/// newest first), compaction at `compacted` removes: every version at or
/// below it except the newest one of each key, and that one too if it is
/// a deletion.
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

    /// Whether the version of `key` at `revision` (a deletion when
    /// `tombstone`) is removable; entries must come in storage order.
    pub(crate) fn is_garbage(&mut self, key: &[u8], revision: i64, tombstone: bool) -> bool {
        if self.key.as_deref() != Some(key) {
            self.key = Some(key.to_vec());
            self.settled = false;
        }
        if revision > self.compacted {
            return false;
        }
        let garbage = self.settled || tombstone;
        self.settled = true;
        garbage
    }
}

impl Store {
    /// Removes up to about `max_entries` entries' worth of history below the
    /// compaction point (never splitting one key's versions) and returns
    /// whether more remains. Cheap when there is nothing to do; the server
    /// calls it in a loop off the request path.
    pub fn compact_step(&self, max_entries: usize) -> Result<bool, MvccError> {
        let max_entries = max_entries.max(1);
        let mut progress = self.lock_writer();
        let state = self.state();
        if state.restoring || state.physical >= state.compacted {
            *progress = None;
            return Ok(false);
        }
        let pass = progress.get_or_insert_with(|| Pass {
            target: state.compacted,
            resume: Vec::new(),
        });
        let inner = &self.inner;
        let kv = &inner.keyspaces.kv;
        let snapshot = inner.db.snapshot();
        let mut batch = inner.db.batch();
        // The current point, not the pass's: removing more is as safe.
        let mut garbage = Garbage::new(state.compacted);
        let mut last_key: Option<Vec<u8>> = None;
        for (scanned, entry) in snapshot.range(kv, pass.resume.clone()..).enumerate() {
            let (stored, value) = entry.into_inner()?;
            let (key, revision) = split_version_key(&stored)?;
            if last_key.as_deref() != Some(key.as_slice()) {
                if scanned >= max_entries {
                    pass.resume = key_start(&key);
                    batch.commit()?;
                    return Ok(true);
                }
                last_key = Some(key.clone());
            }
            if garbage.is_garbage(&key, revision, value.is_empty()) {
                batch.remove(kv, stored);
            }
        }
        let done = pass.target;
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
