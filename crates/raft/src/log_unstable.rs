//! The tail of the log that has not been persisted yet.
//!
//! Entries arrive here first (proposals on the leader, appends on a follower),
//! are handed to the caller in a [`Ready`](crate::Ready) ("in progress"), and
//! leave once the caller reports them durable.

use crate::message::{Entry, EntryId, Index, Term};

/// Entries not yet known to be durable, starting at index `offset`.
#[derive(Debug)]
pub(crate) struct Unstable {
    /// Entries `offset..offset + entries.len()`.
    entries: Vec<Entry>,
    /// The index of `entries[0]` (or where the next entry would go).
    offset: Index,
    /// Entries below this index have been handed out for persisting.
    in_progress: Index,
}

impl Unstable {
    /// An empty tail whose first entry will have index `offset`.
    pub(crate) fn new(offset: Index) -> Self {
        Unstable {
            entries: Vec::new(),
            offset,
            in_progress: offset,
        }
    }

    /// The index of the last unstable entry, if there is one.
    pub(crate) fn last_index(&self) -> Option<Index> {
        self.entries.last().map(|e| e.index)
    }

    /// The term at `index`, if this tail holds it.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            return None;
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    /// The first index this tail covers; lower indexes live in storage.
    pub(crate) fn offset(&self) -> Index {
        self.offset
    }

    /// Entries not yet handed out for persisting.
    pub(crate) fn pending(&self) -> &[Entry] {
        let start = (self.in_progress - self.offset) as usize;
        &self.entries[start.min(self.entries.len())..]
    }

    /// Marks every entry as handed out for persisting.
    pub(crate) fn mark_in_progress(&mut self) {
        self.in_progress = self.offset + self.entries.len() as u64;
    }

    /// The caller persisted everything up to `id`: drop it from the tail.
    /// Ignored (returning false) if the tail no longer holds `id` because it
    /// was replaced meanwhile.
    pub(crate) fn stable_to(&mut self, id: EntryId) -> bool {
        if self.term(id.index) != Some(id.term) {
            return false;
        }
        let n = (id.index + 1 - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = id.index + 1;
        self.in_progress = self.in_progress.max(self.offset);
        true
    }

    /// Appends `entries`, replacing whatever they conflict with. The caller
    /// guarantees `entries[0].index <= last index + 1`.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let from = first.index;
        let end = self.offset + self.entries.len() as u64;
        assert!(
            from <= end,
            "unstable log invariant broken: entries from {from} leave a gap after the last index {}",
            end.saturating_sub(1)
        );
        debug_assert!(
            entries.windows(2).all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term),
            "unstable log invariant broken: appended entries are not contiguous with non-decreasing terms"
        );
        if from == end {
            // The common case: a straight append.
        } else if from <= self.offset {
            // Replaces the whole tail (and a suffix of storage, which the caller
            // truncates when it persists these entries).
            self.entries.clear();
            self.offset = from;
            self.in_progress = from;
        } else {
            self.entries.truncate((from - self.offset) as usize);
            self.in_progress = self.in_progress.min(from);
        }
        self.entries.extend_from_slice(entries);
    }

    /// Entries with indexes in `[low, high)`; the caller checks the bounds.
    pub(crate) fn slice(&self, low: Index, high: Index) -> &[Entry] {
        &self.entries[(low - self.offset) as usize..(high - self.offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ents(term: Term, range: std::ops::RangeInclusive<Index>) -> Vec<Entry> {
        range
            .map(|i| Entry::normal(term, i, Bytes::new()))
            .collect()
    }

    #[test]
    fn append_then_persist() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&ents(1, 1..=3));
        assert_eq!(u.pending().len(), 3);
        u.mark_in_progress();
        assert!(u.pending().is_empty());
        u.stable_to(EntryId { term: 1, index: 2 });
        assert_eq!(u.offset(), 3);
        assert_eq!(u.last_index(), Some(3));
        assert_eq!(u.term(2), None);
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&ents(1, 1..=3));
        u.mark_in_progress();
        u.truncate_and_append(&ents(2, 2..=2));
        assert_eq!(
            u.pending().len(),
            1,
            "the replacement needs persisting again"
        );
        u.stable_to(EntryId { term: 1, index: 3 });
        assert_eq!(u.last_index(), Some(2));
        u.stable_to(EntryId { term: 2, index: 2 });
        assert_eq!(u.last_index(), None);
        assert_eq!(u.offset(), 3);
    }

    #[test]
    #[should_panic(
        expected = "unstable log invariant broken: entries from 5 leave a gap after the last index 3"
    )]
    fn an_append_with_a_gap_is_a_bug() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&ents(1, 1..=3));
        u.truncate_and_append(&ents(1, 5..=5));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "appended entries are not contiguous")]
    fn appending_entries_out_of_order_is_a_bug() {
        let mut u = Unstable::new(1);
        let mut entries = ents(1, 1..=3);
        entries.swap(1, 2);
        u.truncate_and_append(&entries);
    }

    #[test]
    fn truncate_before_offset_replaces_everything() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&ents(1, 5..=6));
        u.mark_in_progress();
        u.truncate_and_append(&ents(3, 3..=4));
        assert_eq!(u.offset(), 3);
        assert_eq!(u.last_index(), Some(4));
        assert_eq!(u.pending().len(), 2);
    }
}
