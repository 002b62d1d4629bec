//! Cluster membership: who votes, who only learns, and how a change moves
//! the cluster from one configuration to the next.
//!
//! A change that adds or removes at most one voter is applied in one step.
//! Any larger change goes through the joint configuration C(old,new), in
//! which every decision needs a majority of the old voters *and* of the new
//! ones, and then, once that has committed, to C(new) (Raft thesis §4.3).

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::{ConfState, NodeId};
use crate::quorum::{JointConfig, MajorityConfig};

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeOp {
    /// Make `id` a voter (promoting it if it is a learner).
    AddVoter(NodeId),
    /// Make `id` a learner (demoting it if it is a voter).
    AddLearner(NodeId),
    /// Remove `id` from the cluster.
    Remove(NodeId),
}

impl ConfChangeOp {
    fn id(self) -> NodeId {
        match self {
            ConfChangeOp::AddVoter(id)
            | ConfChangeOp::AddLearner(id)
            | ConfChangeOp::Remove(id) => id,
        }
    }
}

/// A membership change as it travels in a log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Apply `ops` together: in one step if at most one voter changes and
    /// `force_joint` is false, else by entering the joint configuration.
    Change {
        /// The steps, applied in order.
        ops: Vec<ConfChangeOp>,
        /// Go through C(old,new) even for a single-voter change.
        force_joint: bool,
    },
    /// Leave the joint configuration for C(new). The leader proposes this by
    /// itself once the joint configuration is applied.
    LeaveJoint,
}

/// Why a membership change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// The change lists no steps.
    #[error("the membership change is empty")]
    Empty,
    /// Node id zero is never valid.
    #[error("node id must not be 0")]
    ZeroId,
    /// A joint configuration must be left before the next change.
    #[error("a joint configuration is in effect; it must be left first")]
    AlreadyJoint,
    /// Only a joint configuration can be left.
    #[error("not in a joint configuration")]
    NotJoint,
    /// The change would leave no voter.
    #[error("the change would leave no voters")]
    NoVoters,
    /// A conf-change entry could not be decoded.
    #[error("malformed membership change entry: {0}")]
    Malformed(&'static str),
}

const MAGIC: u8 = b'K';
const VERSION: u8 = 1;
/// The version of payloads that carry a context after the change.
const VERSION_WITH_CONTEXT: u8 = 2;

impl ConfChange {
    /// Adds `id` as a learner.
    pub fn add_learner(id: NodeId) -> Self {
        Self::single(ConfChangeOp::AddLearner(id))
    }

    /// Promotes learner `id` to voter (or adds it as a voter).
    pub fn add_voter(id: NodeId) -> Self {
        Self::single(ConfChangeOp::AddVoter(id))
    }

    /// Removes `id`, voter or learner.
    pub fn remove(id: NodeId) -> Self {
        Self::single(ConfChangeOp::Remove(id))
    }

    /// Several steps at once (through the joint configuration when more than
    /// one voter changes).
    pub fn many(ops: Vec<ConfChangeOp>) -> Self {
        ConfChange::Change {
            ops,
            force_joint: false,
        }
    }

    fn single(op: ConfChangeOp) -> Self {
        Self::many(vec![op])
    }

    /// The entry payload.
    pub fn encode(&self) -> Bytes {
        self.encode_with_context(&[])
    }

    /// The entry payload carrying `context`: opaque bytes of the
    /// application's, replicated with the change (keel-node records the
    /// addresses of the members it adds there).
    pub fn encode_with_context(&self, context: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(MAGIC);
        b.put_u8(if context.is_empty() {
            VERSION
        } else {
            VERSION_WITH_CONTEXT
        });
        match self {
            ConfChange::LeaveJoint => b.put_u8(1),
            ConfChange::Change { ops, force_joint } => {
                b.put_u8(0);
                b.put_u8(u8::from(*force_joint));
                b.put_u32(ops.len() as u32);
                for op in ops {
                    let tag = match op {
                        ConfChangeOp::AddVoter(_) => 1,
                        ConfChangeOp::AddLearner(_) => 2,
                        ConfChangeOp::Remove(_) => 3,
                    };
                    b.put_u8(tag);
                    b.put_u64(op.id());
                }
            }
        }
        if !context.is_empty() {
            b.put_u32(context.len() as u32);
            b.put_slice(context);
        }
        b.freeze()
    }

    /// Parses an entry payload made by [`encode`](Self::encode) or
    /// [`encode_with_context`](Self::encode_with_context).
    pub fn decode(data: &[u8]) -> Result<Self, ConfChangeError> {
        Self::decode_with_context(data).map(|(change, _)| change)
    }

    /// Parses an entry payload and the context it carries (empty if none).
    pub fn decode_with_context(data: &[u8]) -> Result<(Self, Bytes), ConfChangeError> {
        let mut r = Reader(data);
        if r.u8()? != MAGIC {
            return Err(ConfChangeError::Malformed("unknown header"));
        }
        let with_context = match r.u8()? {
            VERSION => false,
            VERSION_WITH_CONTEXT => true,
            _ => return Err(ConfChangeError::Malformed("unknown header")),
        };
        let change = match r.u8()? {
            1 => ConfChange::LeaveJoint,
            0 => {
                let force_joint = r.u8()? != 0;
                let n = r.u32()? as usize;
                if n > data.len() / 9 {
                    return Err(ConfChangeError::Malformed("step count beyond the payload"));
                }
                let mut ops = Vec::with_capacity(n);
                for _ in 0..n {
                    let tag = r.u8()?;
                    let id = r.u64()?;
                    ops.push(match tag {
                        1 => ConfChangeOp::AddVoter(id),
                        2 => ConfChangeOp::AddLearner(id),
                        3 => ConfChangeOp::Remove(id),
                        _ => return Err(ConfChangeError::Malformed("unknown step")),
                    });
                }
                ConfChange::Change { ops, force_joint }
            }
            _ => return Err(ConfChangeError::Malformed("unknown kind")),
        };
        let context = if with_context {
            let len = r.u32()? as usize;
            if len == 0 || len != r.0.len() {
                return Err(ConfChangeError::Malformed("context length"));
            }
            let context = Bytes::copy_from_slice(r.0);
            r.0 = &[];
            context
        } else {
            Bytes::new()
        };
        if !r.0.is_empty() {
            return Err(ConfChangeError::Malformed("trailing bytes"));
        }
        Ok((change, context))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ConfChangeError> {
        if self.0.len() < N {
            return Err(ConfChangeError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u8(&mut self) -> Result<u8, ConfChangeError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, ConfChangeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, ConfChangeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
}

/// The first log entry of a new cluster: a membership change adding
/// `voters`. Every initial member starts with this entry at index 1, term 1,
/// already committed (hard state term 1, commit 1, and
/// `ConfState::with_voters(voters)`), so that nodes added later learn the
/// initial membership from the log like any later change (or from a
/// snapshot, which carries it).
pub fn bootstrap_entry(voters: &[NodeId]) -> crate::message::Entry {
    bootstrap_entry_with_context(voters, &[])
}

/// [`bootstrap_entry`], carrying the application's `context` (see
/// [`ConfChange::encode_with_context`]).
pub fn bootstrap_entry_with_context(voters: &[NodeId], context: &[u8]) -> crate::message::Entry {
    let ops = voters.iter().map(|&v| ConfChangeOp::AddVoter(v)).collect();
    crate::message::Entry {
        term: 1,
        index: 1,
        kind: crate::message::EntryKind::ConfChange,
        data: ConfChange::many(ops).encode_with_context(context),
    }
}

/// The membership in effect on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The voters: incoming, and outgoing while joint.
    pub voters: JointConfig,
    /// Members that receive the log but do not vote.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters demoted by the joint change: they become learners on
    /// leaving the joint configuration (a node is never voter and learner at once).
    pub learners_next: BTreeSet<NodeId>,
}

impl Membership {
    /// The membership a persisted [`ConfState`] describes.
    pub fn from_conf_state(cs: &ConfState) -> Self {
        Membership {
            voters: JointConfig {
                incoming: MajorityConfig::new(cs.voters.iter().copied()),
                outgoing: MajorityConfig::new(cs.voters_outgoing.iter().copied()),
            },
            learners: cs.learners.iter().copied().collect(),
            learners_next: cs.learners_next.iter().copied().collect(),
        }
    }

    /// The form to persist.
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters().iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.voters().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
        }
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters.outgoing.voters().is_empty()
    }

    /// Every member: voters of either half and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.ids();
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }

    /// Whether `id` votes in either half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// The membership after `change`, or why it cannot apply.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        match change {
            ConfChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err(ConfChangeError::NotJoint);
                }
                let mut next = self.clone();
                next.voters.outgoing = MajorityConfig::default();
                next.learners
                    .extend(std::mem::take(&mut next.learners_next));
                Ok(next)
            }
            ConfChange::Change { ops, force_joint } => self.apply_ops(ops, *force_joint),
        }
    }

    fn apply_ops(
        &self,
        ops: &[ConfChangeOp],
        force_joint: bool,
    ) -> Result<Membership, ConfChangeError> {
        if ops.is_empty() {
            return Err(ConfChangeError::Empty);
        }
        if ops.iter().any(|op| op.id() == 0) {
            return Err(ConfChangeError::ZeroId);
        }
        if self.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        let old: BTreeSet<NodeId> = self.voters.incoming.voters().clone();
        let mut incoming = old.clone();
        for op in ops {
            match *op {
                ConfChangeOp::AddVoter(id) => incoming.insert(id),
                ConfChangeOp::AddLearner(id) | ConfChangeOp::Remove(id) => incoming.remove(&id),
            };
        }
        if incoming.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        let joint = force_joint || old.symmetric_difference(&incoming).count() > 1;
        let mut learners = self.learners.clone();
        let mut learners_next = BTreeSet::new();
        for op in ops {
            match *op {
                ConfChangeOp::AddVoter(id) => {
                    learners.remove(&id);
                    learners_next.remove(&id);
                }
                ConfChangeOp::AddLearner(id) => {
                    if joint && old.contains(&id) {
                        learners_next.insert(id);
                    } else {
                        learners.insert(id);
                    }
                }
                ConfChangeOp::Remove(id) => {
                    learners.remove(&id);
                    learners_next.remove(&id);
                }
            }
        }
        // Leftovers from a previous step: a voter that is now a learner again.
        learners.retain(|id| !incoming.contains(id));
        Ok(Membership {
            voters: JointConfig {
                incoming: MajorityConfig::new(incoming),
                outgoing: if joint {
                    MajorityConfig::new(old)
                } else {
                    MajorityConfig::default()
                },
            },
            learners,
            learners_next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfChangeOp::*;

    fn voters(ids: &[NodeId]) -> Membership {
        Membership {
            voters: JointConfig::simple(ids.iter().copied()),
            ..Membership::default()
        }
    }

    fn ids(set: &BTreeSet<NodeId>) -> Vec<NodeId> {
        set.iter().copied().collect()
    }

    #[test]
    fn single_voter_changes_apply_in_one_step() {
        let m = voters(&[1, 2, 3]);
        let added = m.apply(&ConfChange::add_voter(4)).unwrap();
        assert!(!added.is_joint());
        assert_eq!(ids(added.voters.incoming.voters()), vec![1, 2, 3, 4]);
        let removed = added.apply(&ConfChange::remove(1)).unwrap();
        assert_eq!(ids(removed.voters.incoming.voters()), vec![2, 3, 4]);
        let learner = removed.apply(&ConfChange::add_learner(9)).unwrap();
        assert!(!learner.is_joint(), "learners do not change the voters");
        assert_eq!(ids(&learner.learners), vec![9]);
        let promoted = learner.apply(&ConfChange::add_voter(9)).unwrap();
        assert!(promoted.learners.is_empty());
        assert!(promoted.is_voter(9));
    }

    #[test]
    fn larger_changes_go_through_joint() {
        let m = voters(&[1, 2, 3]);
        let joint = m
            .apply(&ConfChange::many(vec![AddVoter(4), Remove(1)]))
            .unwrap();
        assert!(joint.is_joint());
        assert_eq!(ids(joint.voters.outgoing.voters()), vec![1, 2, 3]);
        assert_eq!(ids(joint.voters.incoming.voters()), vec![2, 3, 4]);
        assert_eq!(
            joint.apply(&ConfChange::add_voter(5)),
            Err(ConfChangeError::AlreadyJoint)
        );
        let done = joint.apply(&ConfChange::LeaveJoint).unwrap();
        assert!(!done.is_joint());
        assert_eq!(ids(&done.members()), vec![2, 3, 4]);
        assert_eq!(
            done.apply(&ConfChange::LeaveJoint),
            Err(ConfChangeError::NotJoint)
        );
    }

    #[test]
    fn demotion_in_joint_waits_until_leaving() {
        let m = voters(&[1, 2, 3]);
        let joint = m
            .apply(&ConfChange::Change {
                ops: vec![AddLearner(3)],
                force_joint: true,
            })
            .unwrap();
        assert!(joint.is_voter(3), "still an outgoing voter");
        assert!(joint.learners.is_empty());
        assert_eq!(ids(&joint.learners_next), vec![3]);
        let done = joint.apply(&ConfChange::LeaveJoint).unwrap();
        assert!(!done.is_voter(3));
        assert_eq!(ids(&done.learners), vec![3]);
    }

    #[test]
    fn refuses_changes_that_leave_no_voters() {
        let m = voters(&[1]);
        assert_eq!(
            m.apply(&ConfChange::remove(1)),
            Err(ConfChangeError::NoVoters)
        );
        assert_eq!(
            m.apply(&ConfChange::many(vec![])),
            Err(ConfChangeError::Empty)
        );
        assert_eq!(
            m.apply(&ConfChange::add_voter(0)),
            Err(ConfChangeError::ZeroId)
        );
    }

    #[test]
    fn the_bootstrap_entry_makes_the_initial_voters_from_nothing() {
        let entry = bootstrap_entry(&[1, 2, 3]);
        let change = ConfChange::decode(&entry.data).unwrap();
        let m = Membership::default().apply(&change).unwrap();
        assert!(!m.is_joint());
        assert_eq!(ids(m.voters.incoming.voters()), vec![1, 2, 3]);
        let again = m.apply(&change).unwrap();
        assert_eq!(again, m, "re-applying it on a member changes nothing");
    }

    #[test]
    fn conf_state_round_trips() {
        let m = voters(&[1, 2, 3])
            .apply(&ConfChange::many(vec![
                AddLearner(3),
                AddVoter(4),
                AddVoter(5),
            ]))
            .unwrap();
        assert_eq!(Membership::from_conf_state(&m.to_conf_state()), m);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        for change in [
            ConfChange::LeaveJoint,
            ConfChange::many(vec![AddVoter(1), AddLearner(u64::MAX), Remove(7)]),
            ConfChange::Change {
                ops: vec![Remove(2)],
                force_joint: true,
            },
        ] {
            assert_eq!(ConfChange::decode(&change.encode()), Ok(change));
        }
        let good = ConfChange::add_voter(3).encode();
        for cut in 0..good.len() {
            assert!(
                ConfChange::decode(&good[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        assert!(
            ConfChange::decode(b"K\x01\x00\x00\xff\xff\xff\xff").is_err(),
            "huge count"
        );
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(ConfChange::decode(&trailing).is_err());
    }

    #[test]
    fn a_context_travels_with_the_change_and_a_cut_one_is_refused() {
        let change = ConfChange::add_learner(4);
        let data = change.encode_with_context(b"10.0.0.4:2380");
        assert_eq!(
            ConfChange::decode_with_context(&data),
            Ok((change.clone(), Bytes::from_static(b"10.0.0.4:2380")))
        );
        // Readers that want only the change still read it.
        assert_eq!(ConfChange::decode(&data), Ok(change.clone()));
        // No context: the version-1 payload, as before.
        assert_eq!(change.encode_with_context(&[]), change.encode());
        assert_eq!(
            ConfChange::decode_with_context(&change.encode()),
            Ok((change, Bytes::new()))
        );
        for cut in 0..data.len() {
            assert!(
                ConfChange::decode_with_context(&data[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut longer = data.to_vec();
        longer.push(0);
        assert!(ConfChange::decode_with_context(&longer).is_err());
    }
}
