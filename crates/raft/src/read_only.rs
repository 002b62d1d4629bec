//! Linearizable reads by ReadIndex (Raft thesis §6.4): a read is served at
//! the commit index the leader had when the read arrived, once a quorum has
//! confirmed, after that moment, that it is still the leader.
//!
//! Confirmation is shared: reads that arrive between two flushes join one
//! *round*; each heartbeat carries the latest round number and followers echo
//! it, so one heartbeat exchange confirms every read waiting at that moment.

use std::collections::{BTreeMap, VecDeque};

use crate::message::{Index, NodeId};
use crate::quorum::JointConfig;

/// A read that may now be served: once the application has applied `index`,
/// reading its state is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read, as given to `read_index`.
    pub request: u64,
    /// The index the state machine must reach before the read is served.
    pub index: Index,
}

/// A read the leader is confirming, for itself or for a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    /// Who asked: the leader itself or a follower that forwarded the read.
    pub(crate) from: NodeId,
    pub(crate) request: u64,
    pub(crate) index: Index,
}

/// The leader's reads in flight.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// The latest round started.
    round: u64,
    /// Reads that joined no round yet (they start one at the next flush).
    unsent: Vec<PendingRead>,
    /// Reads waiting for their round to be confirmed, oldest first.
    waiting: VecDeque<(u64, PendingRead)>,
    /// The highest round each peer has echoed.
    acked: BTreeMap<NodeId, u64>,
}

impl ReadOnly {
    /// Queues a read at the current commit index.
    pub(crate) fn add(&mut self, read: PendingRead) {
        self.unsent.push(read);
    }

    /// If reads are queued, starts a new round for them; returns the round
    /// number heartbeats should now carry.
    pub(crate) fn start_round(&mut self) -> Option<u64> {
        if self.unsent.is_empty() {
            return None;
        }
        Some(self.new_round())
    }

    /// Starts a new round (taking any queued reads along) and returns it.
    pub(crate) fn new_round(&mut self) -> u64 {
        self.round += 1;
        let round = self.round;
        self.waiting
            .extend(self.unsent.drain(..).map(|r| (round, r)));
        round
    }

    /// The latest round a quorum has echoed (`me` has seen every round).
    pub(crate) fn confirmed_round(&self, me: NodeId, voters: &JointConfig) -> u64 {
        let latest = self.round;
        let acked = &self.acked;
        voters.committed_index(|id| {
            if id == me {
                Some(latest)
            } else {
                acked.get(&id).copied()
            }
        })
    }

    /// The round heartbeats carry.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// `peer` echoed `round`; returns the reads now confirmed by a quorum
    /// (`me` counts as having seen every round).
    pub(crate) fn ack(
        &mut self,
        peer: NodeId,
        round: u64,
        me: NodeId,
        voters: &JointConfig,
    ) -> Vec<PendingRead> {
        if round == 0 || round > self.round {
            return Vec::new();
        }
        let entry = self.acked.entry(peer).or_default();
        *entry = (*entry).max(round);
        let confirmed = self.confirmed_round(me, voters);
        let mut ready = Vec::new();
        while self.waiting.front().is_some_and(|(r, _)| *r <= confirmed) {
            ready.push(self.waiting.pop_front().expect("checked").1);
        }
        ready
    }

    /// Drops everything (on losing or gaining leadership).
    pub(crate) fn reset(&mut self) {
        *self = ReadOnly::default();
    }

    /// Reads waiting for confirmation.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.unsent.len() + self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(request: u64, index: Index) -> PendingRead {
        PendingRead {
            from: 1,
            request,
            index,
        }
    }

    #[test]
    fn one_round_confirms_all_reads_waiting_at_its_start() {
        let voters = JointConfig::simple([1, 2, 3]);
        let mut ro = ReadOnly::default();
        ro.add(read(1, 5));
        ro.add(read(2, 5));
        assert_eq!(ro.start_round(), Some(1));
        assert_eq!(ro.start_round(), None, "no new reads, no new round");
        ro.add(read(3, 6));
        assert_eq!(ro.start_round(), Some(2));
        // An echo of round 1 from one peer makes a quorum with the leader.
        let done = ro.ack(2, 1, 1, &voters);
        assert_eq!(
            done.iter().map(|r| r.request).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(ro.pending(), 1);
        let done = ro.ack(3, 2, 1, &voters);
        assert_eq!(done.len(), 1);
        assert_eq!(ro.pending(), 0);
    }

    #[test]
    fn stale_or_future_rounds_confirm_nothing() {
        let voters = JointConfig::simple([1, 2, 3, 4, 5]);
        let mut ro = ReadOnly::default();
        ro.add(read(1, 5));
        ro.start_round();
        assert!(ro.ack(2, 0, 1, &voters).is_empty());
        assert!(ro.ack(2, 7, 1, &voters).is_empty(), "a round never started");
        assert!(
            ro.ack(2, 1, 1, &voters).is_empty(),
            "two of five is no quorum"
        );
        assert_eq!(ro.ack(3, 1, 1, &voters).len(), 1);
    }
}
