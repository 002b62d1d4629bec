//! What the leader knows about one peer's log, and how it decides what to send.
//!
//! A peer is either being *probed* (the leader does not know where their logs
//! match, so it sends one append at a time and waits) or *replicated to*
//! (logs match up to `matched`, so the leader streams appends optimistically,
//! bounded by the inflight window), or *sent a snapshot* (the entries it needs
//! were compacted, so it receives the state machine's snapshot in chunks).

use crate::inflights::Inflights;
use crate::message::{Index, SnapshotMeta};

/// How the leader sends to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// One append per round trip until the match point is found.
    Probe,
    /// Pipelined appends, up to the inflight window.
    Replicate,
    /// Receiving a snapshot, chunk by chunk, within the inflight window.
    Snapshot,
}

/// A snapshot being streamed to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotTransfer {
    /// The snapshot being sent.
    pub(crate) meta: SnapshotMeta,
    /// The offset of the next chunk to send.
    pub(crate) next_offset: u64,
    /// The offset the peer last said it expects.
    pub(crate) acked_offset: u64,
    /// The end of the furthest chunk sent in this transfer. After a rewind
    /// `next_offset` is below it, and the peer may rightly expect more than
    /// `next_offset` (the chunks arrived, their acknowledgements were lost).
    pub(crate) sent_offset: u64,
    /// The final chunk went out; wait for the peer's answer.
    pub(crate) sent_last: bool,
}

/// The leader's view of one peer.
///
/// Invariant: `matched < next` (the next entry to send is past what the peer
/// is known to hold), checked wherever either moves.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to be replicated on the peer.
    pub(crate) matched: Index,
    /// The next index to send.
    pub(crate) next: Index,
    pub(crate) state: ProgressState,
    /// In probe state: an append is outstanding, wait for its answer.
    pub(crate) probe_sent: bool,
    /// Heard from within the current election timeout (for CheckQuorum).
    pub(crate) recent_active: bool,
    /// Heard from within the previous election timeout (with
    /// `recent_active`: whether the peer counts as up for a membership
    /// change).
    pub(crate) was_active: bool,
    /// Send an append at the next flush even if it carries no entries.
    pub(crate) force_send: bool,
    /// The highest commit index sent to the peer.
    pub(crate) sent_commit: Index,
    pub(crate) inflights: Inflights,
    /// In snapshot state: the transfer under way.
    pub(crate) snapshot: Option<SnapshotTransfer>,
}

impl Progress {
    /// A peer about which nothing is known yet; probing starts at `next`.
    pub(crate) fn new(next: Index, max_inflight: usize, max_inflight_bytes: u64) -> Self {
        let progress = Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            recent_active: false,
            was_active: false,
            force_send: false,
            sent_commit: 0,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            snapshot: None,
        };
        progress.assert_invariant();
        progress
    }

    /// Asserts `matched < next`.
    fn assert_invariant(&self) {
        assert!(
            self.matched < self.next,
            "progress invariant matched < next broken: matched {} next {}",
            self.matched,
            self.next
        );
    }

    /// Back to probing from just after the match point.
    pub(crate) fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
    }

    /// Logs match: start pipelining from just after the match point.
    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.snapshot = None;
        self.inflights.reset();
    }

    /// The peer needs entries we no longer have: stream it `meta` from the start.
    pub(crate) fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.snapshot = Some(SnapshotTransfer {
            meta,
            next_offset: 0,
            acked_offset: 0,
            sent_offset: 0,
            sent_last: false,
        });
        self.inflights.reset();
    }

    /// A chunk ending at `end` (`bytes` long, `last` if it completes the
    /// snapshot) went out.
    pub(crate) fn sent_chunk(&mut self, end: u64, bytes: u64, last: bool) {
        if let Some(t) = self.snapshot.as_mut() {
            t.next_offset = end;
            t.sent_offset = t.sent_offset.max(end);
            t.sent_last = last;
            if bytes > 0 {
                self.inflights.add(end, bytes);
            }
        }
    }

    /// The peer answered a chunk of the snapshot ending at `index`: it
    /// expects `next_offset` next. A rejection (a lost chunk, a restarted
    /// peer) rewinds the transfer to that offset.
    pub(crate) fn snapshot_answered(&mut self, index: Index, next_offset: u64, rejected: bool) {
        let Some(t) = self
            .snapshot
            .as_mut()
            .filter(|t| t.meta.last.index == index)
        else {
            return;
        };
        if next_offset > t.sent_offset {
            return; // Nonsense: more than we sent.
        }
        if rejected {
            t.acked_offset = next_offset;
            self.rewind_snapshot();
            return;
        }
        t.acked_offset = t.acked_offset.max(next_offset);
        // After a rewind, chunks the peer already holds need not go again.
        t.next_offset = t.next_offset.max(t.acked_offset);
        self.inflights.free_le(next_offset);
    }

    /// The transfer stalled (window full, or everything sent and the last
    /// acknowledgement lost): resend from what the peer last acknowledged.
    pub(crate) fn rewind_snapshot(&mut self) {
        if let Some(t) = self.snapshot.as_mut() {
            t.next_offset = t.acked_offset;
            t.sent_last = false;
            self.inflights.reset();
        }
    }

    /// The peer acknowledged `index`. Returns whether that is news.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        self.assert_invariant();
        updated
    }

    /// The peer rejected an append at `rejected`, and its log is known to hold
    /// nothing useful beyond `hint`. Returns false if the rejection is stale
    /// (answers an append sent before something we learned since).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Snapshot {
            return false; // The snapshot settles it.
        }
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next != rejected + 1 {
            return false;
        }
        self.next = rejected.min(hint + 1).max(self.matched + 1);
        self.probe_sent = false;
        self.assert_invariant();
        true
    }

    /// Whether sending must wait for an answer.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => {
                self.inflights.full() || self.snapshot.as_ref().is_none_or(|t| t.sent_last)
            }
        }
    }

    /// Records that an append carrying `count` entries (`bytes` in total, the
    /// last at `last_index`) and commit `commit` was sent.
    pub(crate) fn sent_append(
        &mut self,
        last_index: Index,
        count: usize,
        bytes: u64,
        commit: Index,
    ) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next = last_index + 1;
                    self.assert_invariant();
                    self.inflights.add(last_index, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
        self.sent_commit = self.sent_commit.max(commit.min(last_index));
        self.force_send = false;
    }

    /// Whether the peer could advance its commit index if told `commit`: it
    /// holds (or was sent) entries past the commit index it last heard of.
    pub(crate) fn can_bump_commit(&self, commit: Index) -> bool {
        commit.min(self.next - 1) > self.sent_commit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keel-sim seed 1 (5 nodes, lossy): chunks arrived but their acks were
    /// lost; after the rewind the peer's "I expect offset 10" was dismissed
    /// as more than was sent, and the transfer resent offset 8 forever.
    #[test]
    fn a_rewound_snapshot_transfer_jumps_to_what_the_peer_holds() {
        let meta = SnapshotMeta {
            size: 20,
            ..SnapshotMeta::default()
        };
        let mut p = Progress::new(1, 4, u64::MAX);
        p.become_snapshot(meta);
        for offset in 0..10 {
            p.sent_chunk(offset + 1, 1, false);
        }
        p.snapshot_answered(0, 8, false);
        p.rewind_snapshot();
        assert_eq!(p.snapshot.as_ref().unwrap().next_offset, 8);
        p.sent_chunk(9, 1, false);
        // The peer already holds 8 and 9.
        p.snapshot_answered(0, 10, true);
        assert_eq!(p.snapshot.as_ref().unwrap().next_offset, 10);
        p.snapshot_answered(0, 11, true);
        assert_eq!(
            p.snapshot.as_ref().unwrap().next_offset,
            10,
            "beyond anything sent: ignored"
        );
    }

    #[test]
    #[should_panic(expected = "progress invariant matched < next broken: matched 0 next 0")]
    fn a_progress_with_next_at_its_match_is_a_bug() {
        Progress::new(0, 4, u64::MAX);
    }

    #[test]
    #[should_panic(expected = "progress invariant matched < next broken: matched 5 next 4")]
    fn sending_below_the_match_point_is_a_bug() {
        let mut p = Progress::new(1, 4, u64::MAX);
        p.maybe_update(5);
        p.become_replicate();
        p.sent_append(3, 1, 10, 0);
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(5, 10, u64::MAX);
        assert!(!p.is_paused());
        p.sent_append(7, 3, 30, 0);
        assert!(p.is_paused());
        assert_eq!(p.next, 5, "probing does not move next optimistically");
        assert!(p.maybe_update(7));
        assert!(!p.is_paused());
    }

    #[test]
    fn replicate_pipelines_until_window_full() {
        let mut p = Progress::new(1, 2, u64::MAX);
        p.maybe_update(0);
        p.become_replicate();
        p.sent_append(3, 3, 30, 0);
        assert_eq!(p.next, 4);
        assert!(!p.is_paused());
        p.sent_append(5, 2, 20, 0);
        assert!(p.is_paused());
        p.maybe_update(3);
        p.inflights.free_le(3);
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 10, u64::MAX);
        assert!(!p.maybe_decrease_to(5, 4), "probe: not the index we sent");
        assert!(p.maybe_decrease_to(9, 3));
        assert_eq!(p.next, 4, "jumps straight to the hint");
        p.maybe_update(4);
        p.become_replicate();
        assert!(!p.maybe_decrease_to(4, 0), "replicate: already matched");
        assert!(p.maybe_decrease_to(7, 0));
        assert_eq!(p.next, 5);
    }

    #[test]
    fn decrease_never_goes_below_match() {
        let mut p = Progress::new(10, 10, u64::MAX);
        p.matched = 6;
        assert!(p.maybe_decrease_to(9, 2));
        assert_eq!(p.next, 7);
    }

    #[test]
    fn commit_bumps_only_when_useful() {
        let mut p = Progress::new(5, 10, u64::MAX);
        assert!(p.can_bump_commit(3));
        p.sent_append(4, 0, 0, 3);
        assert!(!p.can_bump_commit(3));
        assert!(p.can_bump_commit(4));
        p.sent_append(4, 0, 0, 9);
        assert!(
            !p.can_bump_commit(9),
            "the peer holds nothing past 4 to commit"
        );
    }
}
