//! Majority math: the commit index a set of voters agrees on, and the outcome
//! of an election. Joint configurations (two majorities that must both agree)
//! are expressed with [`JointConfig`].

use std::collections::BTreeSet;

use crate::message::{Index, NodeId};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: more answers may still win or lose it.
    Pending,
    /// A quorum granted the vote.
    Won,
    /// Enough voters refused that a quorum can no longer be reached.
    Lost,
}

/// A set of voters deciding by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// A majority over `voters`.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        MajorityConfig {
            voters: voters.into_iter().collect(),
        }
    }

    /// The voters, in id order.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// Whether `id` is a voter here.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// How many voters make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The highest index that a majority has acknowledged, given each voter's
    /// acknowledged index (`None` for voters not heard from). An empty
    /// configuration agrees on everything (so that it never holds back a joint one).
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        if self.voters.is_empty() {
            return Index::MAX;
        }
        // Small clusters are the norm: sort on the stack when we can.
        let mut buf = [0 as Index; 7];
        let mut heap;
        let matched: &mut [Index] = if self.voters.len() <= buf.len() {
            &mut buf[..self.voters.len()]
        } else {
            heap = vec![0; self.voters.len()];
            &mut heap
        };
        for (slot, id) in matched.iter_mut().zip(&self.voters) {
            *slot = acked(*id).unwrap_or(0);
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    /// Counts votes (`Some(true)` granted, `Some(false)` refused, `None` no answer).
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for id in &self.voters {
            match vote(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.quorum();
        if granted >= q {
            VoteResult::Won
        } else if granted + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// The voters of a configuration: `incoming` always, and `outgoing` too while
/// a joint change C(old,new) is in progress. Decisions need a majority of each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The new (or only) voter set.
    pub incoming: MajorityConfig,
    /// The old voter set during a joint change; empty otherwise.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// A plain (non-joint) configuration.
    pub fn simple(voters: impl IntoIterator<Item = NodeId>) -> Self {
        JointConfig {
            incoming: MajorityConfig::new(voters),
            outgoing: MajorityConfig::default(),
        }
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half, once each, in id order.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .voters()
            .union(self.outgoing.voters())
            .copied()
            .collect()
    }

    /// The index both halves have committed.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let a = self.incoming.committed_index(&acked);
        let b = self.outgoing.committed_index(&acked);
        a.min(b)
    }

    /// The election outcome: won only if both halves won, lost if either lost.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let a = self.incoming.vote_result(&vote);
        let b = self.outgoing.vote_result(&vote);
        match (a, b) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn acks(pairs: &[(NodeId, Index)]) -> impl Fn(NodeId) -> Option<Index> {
        let m: BTreeMap<_, _> = pairs.iter().copied().collect();
        move |id| m.get(&id).copied()
    }

    #[test]
    fn committed_index_is_the_majority_minimum() {
        let c = MajorityConfig::new([1, 2, 3]);
        assert_eq!(c.committed_index(acks(&[(1, 5), (2, 3), (3, 1)])), 3);
        assert_eq!(
            c.committed_index(acks(&[(1, 5)])),
            0,
            "one of three is no majority"
        );
        let c5 = MajorityConfig::new([1, 2, 3, 4, 5]);
        assert_eq!(
            c5.committed_index(acks(&[(1, 9), (2, 8), (3, 7), (4, 1)])),
            7
        );
        let big = MajorityConfig::new(1..=9);
        assert_eq!(big.committed_index(Some), 5);
    }

    #[test]
    fn votes_win_lose_or_wait() {
        let c = MajorityConfig::new([1, 2, 3]);
        let v = |m: &'static [(NodeId, bool)]| move |id| m.iter().find(|p| p.0 == id).map(|p| p.1);
        assert_eq!(c.vote_result(v(&[(1, true)])), VoteResult::Pending);
        assert_eq!(c.vote_result(v(&[(1, true), (2, true)])), VoteResult::Won);
        assert_eq!(
            c.vote_result(v(&[(1, true), (2, false)])),
            VoteResult::Pending
        );
        assert_eq!(
            c.vote_result(v(&[(1, true), (2, false), (3, false)])),
            VoteResult::Lost
        );
        let even = MajorityConfig::new([1, 2, 3, 4]);
        assert_eq!(
            even.vote_result(v(&[(1, true), (2, true)])),
            VoteResult::Pending
        );
    }

    #[test]
    fn joint_needs_both_halves() {
        let j = JointConfig {
            incoming: MajorityConfig::new([1, 2, 3]),
            outgoing: MajorityConfig::new([3, 4, 5]),
        };
        assert_eq!(
            j.committed_index(acks(&[(1, 9), (2, 9), (3, 4), (4, 2)])),
            2,
            "outgoing half holds it back"
        );
        let votes = |id| Some(id <= 3);
        assert_eq!(j.vote_result(votes), VoteResult::Lost);
        assert_eq!(j.ids().len(), 5);
        assert_eq!(JointConfig::simple([1]).committed_index(acks(&[(1, 3)])), 3);
    }
}
