//! The replicated log as the state machine sees it: the persisted part read
//! through [`Storage`] followed by the [`Unstable`] tail, with the commit and
//! apply bookkeeping on top.

use crate::error::StorageError;
use crate::log_unstable::Unstable;
use crate::message::{Entry, EntryId, Index, Term};
use crate::storage::{limit_size, Storage};

/// The log: `first_index..=last_index`, committed up to `committed`.
///
/// Invariant: `applied <= applying <= committed <= last_index`, checked
/// wherever one of them moves (see [`RaftLog::assert_invariant`]).
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    storage: S,
    unstable: Unstable,
    /// The id of the last entry known durable in storage (the position just
    /// before the unstable tail when the tail is empty).
    stable_last: EntryId,
    /// The last index covered by the latest snapshot this log knows of
    /// (entries at or below it may be compacted away).
    snapshot_index: Index,
    /// The highest index known to be committed.
    committed: Index,
    /// The highest index handed out for applying.
    applying: Index,
    /// The highest index the application reported applied.
    applied: Index,
}

/// Why an append from the leader could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppendRefusal {
    /// The entry at `prev` is missing or has another term: the consistency check failed.
    Mismatch,
    /// The append would overwrite a committed entry: the leader is broken.
    OverwritesCommitted(Index),
    /// Storage failed while comparing entries.
    Storage(StorageError),
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `storage`, resuming with `applied` as the applied
    /// index. The caller has checked what it read from disk
    /// (`applied <= committed <= last`): a violation here is a bug.
    pub(crate) fn new(storage: S, committed: Index, applied: Index) -> Result<Self, StorageError> {
        let snapshot_index = storage.first_index()?.saturating_sub(1);
        let last = storage.last_index()?;
        let last_term = storage.term(last)?;
        let log = RaftLog {
            storage,
            unstable: Unstable::new(last + 1),
            stable_last: EntryId {
                term: last_term,
                index: last,
            },
            snapshot_index,
            committed,
            applying: applied,
            applied,
        };
        log.assert_invariant();
        Ok(log)
    }

    /// Asserts `applied <= applying <= committed <= last`: entries are
    /// applied only once handed out, handed out only once committed, and
    /// committed only once in the log.
    fn assert_invariant(&self) {
        let last = self.last_index();
        assert!(
            self.applied <= self.applying
                && self.applying <= self.committed
                && self.committed <= last,
            "log invariant applied <= applying <= committed <= last broken: \
             applied {} applying {} committed {} last {last}",
            self.applied,
            self.applying,
            self.committed,
        );
    }

    /// The storage the log reads through.
    pub(crate) fn storage(&self) -> &S {
        &self.storage
    }

    pub(crate) fn last_index(&self) -> Index {
        self.unstable
            .last_index()
            .unwrap_or(self.unstable.offset() - 1)
    }

    pub(crate) fn last_term(&self) -> Term {
        match self.unstable.last_index() {
            Some(i) => self.unstable.term(i).unwrap_or(0),
            None => self.stable_last.term,
        }
    }

    /// The id of the last entry.
    pub(crate) fn last_id(&self) -> EntryId {
        EntryId {
            term: self.last_term(),
            index: self.last_index(),
        }
    }

    /// Everything up to here is durable and part of this log.
    pub(crate) fn persisted_index(&self) -> Index {
        self.unstable.offset() - 1
    }

    pub(crate) fn committed(&self) -> Index {
        self.committed
    }

    pub(crate) fn applied(&self) -> Index {
        self.applied
    }

    /// The highest index handed out for applying.
    pub(crate) fn applying(&self) -> Index {
        self.applying
    }

    /// The last index covered by the latest snapshot this log knows of.
    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The first index still in the log (storage may compact on its own;
    /// the core learns of it from `StorageError::Compacted`).
    pub(crate) fn first_index(&self) -> Index {
        self.storage
            .first_index()
            .unwrap_or(0)
            .max(self.snapshot_index + 1)
    }

    /// The term of the entry at `index`.
    pub(crate) fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.snapshot_index {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(t) = self.unstable.term(index) {
            return Ok(t);
        }
        if index == self.stable_last.index {
            return Ok(self.stable_last.term);
        }
        self.storage.term(index)
    }

    /// Whether the log holds an entry with this id.
    pub(crate) fn matches(&self, id: EntryId) -> bool {
        self.term(id.index) == Ok(id.term)
    }

    /// Raft §5.4.1: is a log ending at `last` at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last: EntryId) -> bool {
        let mine = self.last_id();
        last.term > mine.term || (last.term == mine.term && last.index >= mine.index)
    }

    /// The largest index `<= index` whose term is `<= term`, with its term.
    /// Used on both sides of fast conflict backtracking: one such probe skips
    /// every entry of a term the other side does not have.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                Ok(t) => return (i, t),
                // Compacted: everything at or below the compaction point is
                // committed and so matches; let the other side probe from here.
                Err(_) => return (i, 0),
            }
        }
    }

    /// The index of the first of `entries` that is not already in the log
    /// with the same term, or `None` if all of them are.
    fn find_conflict(&self, entries: &[Entry]) -> Option<Index> {
        entries
            .iter()
            .find(|e| !self.matches(e.id()))
            .map(|e| e.index)
    }

    /// The follower side of AppendEntries: if our log holds `prev`, append
    /// `entries` (replacing any conflicting suffix) and advance the commit index
    /// to `min(commit, last new index)`. Returns the last index now known to
    /// match the leader's log.
    pub(crate) fn maybe_append(
        &mut self,
        prev: EntryId,
        commit: Index,
        entries: &[Entry],
    ) -> Result<Index, AppendRefusal> {
        if !self.matches(prev) {
            return match self.term(prev.index) {
                Err(e @ StorageError::Other(_)) => Err(AppendRefusal::Storage(e)),
                _ => Err(AppendRefusal::Mismatch),
            };
        }
        let last_new = prev.index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(entries) {
            if conflict <= self.committed {
                return Err(AppendRefusal::OverwritesCommitted(conflict));
            }
            let start = (conflict - prev.index - 1) as usize;
            self.unstable.truncate_and_append(&entries[start..]);
            self.assert_invariant();
        }
        // Raft's rule, not an invariant: entries past the last new one are
        // not known to match the leader's, so the leader's commit index
        // counts only up to it.
        self.commit_to(commit.min(last_new));
        Ok(last_new)
    }

    /// Appends entries created by this node as leader; returns the new last index.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> Index {
        if let Some(first) = entries.first() {
            assert!(
                first.index == self.last_index() + 1,
                "leader append invariant broken: entry {} does not follow the last index {}",
                first.index,
                self.last_index()
            );
        }
        self.unstable.truncate_and_append(entries);
        self.last_index()
    }

    /// Raises the commit index to `index` (never lowers it). Callers pass
    /// only indexes known to be in the log: a peer's commit index is first
    /// checked or clamped by the caller.
    pub(crate) fn commit_to(&mut self, index: Index) {
        assert!(
            index <= self.last_index(),
            "commit invariant broken: commit_to({index}) beyond the last index {}",
            self.last_index()
        );
        if index > self.committed {
            self.committed = index;
        }
    }

    /// Entries in `[low, high)`, at most `max_size` bytes (at least one entry).
    pub(crate) fn slice(
        &self,
        low: Index,
        high: Index,
        max_size: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable(high - 1));
        }
        let offset = self.unstable.offset();
        let mut out = if low < offset {
            self.storage.entries(low, high.min(offset), max_size)?
        } else {
            Vec::new()
        };
        let stored_all = out.last().map_or(low >= offset, |e| e.index + 1 == offset);
        if high > offset && stored_all {
            out.extend_from_slice(self.unstable.slice(low.max(offset), high));
        }
        limit_size(&mut out, max_size);
        Ok(out)
    }

    /// Entries from `low` to the end of the log, at most `max_size` bytes.
    pub(crate) fn entries_from(
        &self,
        low: Index,
        max_size: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.slice(low, self.last_index() + 1, max_size)
    }

    /// Unstable entries not yet handed out for persisting.
    pub(crate) fn pending_entries(&self) -> &[Entry] {
        self.unstable.pending()
    }

    /// Hands every unstable entry out for persisting.
    pub(crate) fn mark_in_progress(&mut self) {
        self.unstable.mark_in_progress();
    }

    /// The caller persisted the log up to `id`.
    pub(crate) fn stable_to(&mut self, id: EntryId) {
        if self.unstable.stable_to(id) {
            self.stable_last = id;
        }
    }

    /// Whether committed entries wait to be handed out for applying.
    pub(crate) fn has_entries_to_apply(&self) -> bool {
        self.committed > self.applying
    }

    /// Hands out the next committed entries to apply (at most `max_size` bytes).
    pub(crate) fn take_entries_to_apply(
        &mut self,
        max_size: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if !self.has_entries_to_apply() {
            return Ok(Vec::new());
        }
        let entries = self.slice(self.applying + 1, self.committed + 1, max_size)?;
        if let Some(last) = entries.last() {
            self.applying = last.index;
            self.assert_invariant();
        }
        Ok(entries)
    }

    /// Replaces the whole log with a snapshot: it now starts right after
    /// `last`, which is committed and (once installed) applied.
    pub(crate) fn restore(&mut self, last: EntryId) {
        self.unstable = Unstable::new(last.index + 1);
        self.stable_last = last;
        self.snapshot_index = last.index;
        self.committed = self.committed.max(last.index);
        self.applying = last.index;
        self.assert_invariant();
    }

    /// The application applied everything handed out so far.
    pub(crate) fn applied_to_handed_out(&mut self) {
        self.applied = self.applying;
        self.assert_invariant();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use bytes::Bytes;

    fn ent(term: Term, index: Index) -> Entry {
        Entry::normal(term, index, Bytes::new())
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let s = MemStorage::with_voters(&[1]);
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, t)| ent(*t, i as u64 + 1))
            .collect();
        s.append(&ents).unwrap();
        RaftLog::new(s, 0, 0).unwrap()
    }

    fn id(term: Term, index: Index) -> EntryId {
        EntryId { term, index }
    }

    #[test]
    fn up_to_date_compares_last_term_then_index() {
        let log = log_with(&[1, 2, 2]);
        assert!(log.is_up_to_date(id(3, 1)), "higher last term wins");
        assert!(
            !log.is_up_to_date(id(1, 10)),
            "lower last term loses even if longer"
        );
        assert!(log.is_up_to_date(id(2, 3)), "same term, same length");
        assert!(!log.is_up_to_date(id(2, 2)), "same term, shorter");
    }

    #[test]
    fn append_consistency_check() {
        let mut log = log_with(&[1, 2, 2]);
        assert_eq!(
            log.maybe_append(id(3, 3), 0, &[]),
            Err(AppendRefusal::Mismatch),
            "wrong term"
        );
        assert_eq!(
            log.maybe_append(id(2, 4), 0, &[]),
            Err(AppendRefusal::Mismatch),
            "missing"
        );
        assert_eq!(log.maybe_append(id(2, 3), 2, &[ent(3, 4)]), Ok(4));
        assert_eq!(log.committed(), 2);
        // A conflicting suffix is replaced.
        assert_eq!(
            log.maybe_append(id(1, 1), 2, &[ent(2, 2), ent(4, 3)]),
            Ok(3)
        );
        assert_eq!(log.last_id(), id(4, 3));
        // A stale, shorter append does not truncate matching entries beyond it.
        assert_eq!(log.maybe_append(id(1, 1), 2, &[ent(2, 2)]), Ok(2));
        assert_eq!(log.last_index(), 3);
    }

    #[test]
    fn never_overwrites_committed() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(2);
        assert_eq!(
            log.maybe_append(id(1, 1), 2, &[ent(5, 2)]),
            Err(AppendRefusal::OverwritesCommitted(2))
        );
    }

    #[test]
    fn commit_is_clamped_to_last_new_entry() {
        let mut log = log_with(&[1, 1, 1, 1]);
        assert_eq!(log.maybe_append(id(1, 1), 4, &[]), Ok(1));
        assert_eq!(
            log.committed(),
            1,
            "entries beyond the append are unverified"
        );
    }

    #[test]
    fn a_leader_commit_beyond_the_log_counts_up_to_the_last_new_entry() {
        let mut log = log_with(&[1, 1]);
        assert_eq!(log.maybe_append(id(1, 2), 10, &[ent(1, 3)]), Ok(3));
        assert_eq!(log.committed(), 3);
    }

    #[test]
    fn find_conflict_by_term_skips_terms() {
        let log = log_with(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(log.find_conflict_by_term(7, 4), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0), (0, 0));
        assert_eq!(log.find_conflict_by_term(100, 5), (7, 5));
    }

    #[test]
    fn slice_spans_storage_and_unstable() {
        let mut log = log_with(&[1, 1]);
        log.append(&[ent(2, 3), ent(2, 4)]);
        let all = log.entries_from(1, u64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(log.slice(2, 4, u64::MAX).unwrap().len(), 2);
        assert_eq!(log.slice(1, 4, 0).unwrap().len(), 1);
        assert!(log.slice(1, 6, u64::MAX).is_err());
    }

    #[test]
    #[should_panic(expected = "commit invariant broken: commit_to(4) beyond the last index 3")]
    fn commit_to_beyond_the_log_is_a_bug() {
        log_with(&[1, 1, 1]).commit_to(4);
    }

    #[test]
    #[should_panic(expected = "log invariant applied <= applying <= committed <= last broken")]
    fn a_log_applied_beyond_its_commit_index_is_a_bug() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1), ent(1, 2)]).unwrap();
        let _ = RaftLog::new(s, 1, 2);
    }

    #[test]
    #[should_panic(expected = "log invariant applied <= applying <= committed <= last broken")]
    fn a_log_committed_beyond_its_end_is_a_bug() {
        let s = MemStorage::with_voters(&[1]);
        s.append(&[ent(1, 1)]).unwrap();
        let _ = RaftLog::new(s, 2, 0);
    }

    #[test]
    #[should_panic(
        expected = "leader append invariant broken: entry 5 does not follow the last index 3"
    )]
    fn a_leader_append_with_a_gap_is_a_bug() {
        log_with(&[1, 1, 1]).append(&[ent(1, 5)]);
    }

    #[test]
    fn apply_hands_out_each_entry_once() {
        let mut log = log_with(&[1, 1, 1]);
        log.commit_to(2);
        assert_eq!(log.take_entries_to_apply(u64::MAX).unwrap().len(), 2);
        assert!(!log.has_entries_to_apply());
        log.commit_to(3);
        let next = log.take_entries_to_apply(u64::MAX).unwrap();
        assert_eq!(next[0].index, 3);
        log.applied_to_handed_out();
        assert_eq!(log.applied(), 3);
    }
}
