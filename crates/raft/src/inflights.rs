//! The window of appends sent to one follower and not yet acknowledged,
//! bounded both by message count and by bytes.

use std::collections::VecDeque;

use crate::message::Index;

/// Appends in flight to one peer, oldest first. Each is remembered by the last
/// index it carried and its size.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    window: VecDeque<(Index, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window of at most `max_count` messages and `max_bytes` bytes.
    pub(crate) fn new(max_count: usize, max_bytes: u64) -> Self {
        Inflights {
            window: VecDeque::with_capacity(max_count.min(256)),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Records an append whose last entry is `last_index`. Indexes must grow.
    pub(crate) fn add(&mut self, last_index: Index, bytes: u64) {
        debug_assert!(
            self.window.back().is_none_or(|(i, _)| *i < last_index),
            "inflight indexes must grow"
        );
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is `<= index` (they were acknowledged).
    pub(crate) fn free_le(&mut self, index: Index) {
        while let Some(&(i, b)) = self.window.front() {
            if i > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= b;
        }
    }

    /// Frees the oldest append (used when a heartbeat shows the peer is alive
    /// but acknowledgements were lost).
    pub(crate) fn free_first(&mut self) {
        if let Some((_, b)) = self.window.pop_front() {
            self.bytes -= b;
        }
    }

    /// Whether no more appends may be sent.
    pub(crate) fn full(&self) -> bool {
        self.window.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    /// Forgets everything.
    pub(crate) fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// How many appends are in flight.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.window.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_count() {
        let mut w = Inflights::new(2, u64::MAX);
        w.add(1, 10);
        assert!(!w.full());
        w.add(3, 10);
        assert!(w.full());
        w.free_le(2);
        assert!(!w.full());
        assert_eq!(w.count(), 1);
    }

    #[test]
    fn full_by_bytes() {
        let mut w = Inflights::new(100, 100);
        w.add(1, 60);
        assert!(!w.full());
        w.add(2, 60);
        assert!(w.full(), "120 bytes in flight passes the 100 byte cap");
        w.free_first();
        assert!(!w.full());
        w.free_le(10);
        assert_eq!(w.count(), 0);
        w.add(11, 1);
        w.reset();
        assert_eq!(w.count(), 0);
    }
}
