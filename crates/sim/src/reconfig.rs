//! Random membership changes, as an operator would request them: add a
//! spare node as a learner, promote a learner, demote or remove a voter or a
//! learner (the leader included), or several of these at once through the
//! joint configuration. Every change keeps a minimum number of voters, so
//! the cluster stays live through a single crash.

use keel_raft::{ConfChange, ConfChangeOp, ConfState, Membership, NodeId};
use rand::rngs::StdRng;
use rand::Rng;

/// Fewest voters a change may leave.
pub const MIN_VOTERS: usize = 3;

/// A random change of the membership `current`, or `None` if the one drawn
/// is not allowed. `spare` is a node that may be added, if any.
pub fn random_change(
    rng: &mut StdRng,
    current: &ConfState,
    spare: Option<NodeId>,
) -> Option<ConfChange> {
    let pick = |rng: &mut StdRng, ids: &[NodeId]| -> Option<NodeId> {
        (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())])
    };
    let voters = &current.voters;
    let learners = &current.learners;
    let op = |rng: &mut StdRng| -> Option<ConfChangeOp> {
        Some(match rng.random_range(0..5) {
            0 => ConfChangeOp::AddLearner(spare?),
            1 => ConfChangeOp::AddVoter(pick(rng, learners)?),
            2 => ConfChangeOp::AddLearner(pick(rng, voters)?),
            3 => ConfChangeOp::Remove(pick(rng, voters)?),
            _ => ConfChangeOp::Remove(pick(rng, learners)?),
        })
    };
    let change = match rng.random_range(0..4) {
        // Two steps at once: through the joint configuration whenever
        // both touch voters.
        0 => {
            let first = op(rng)?;
            let second = op(rng)?;
            if first_id(first) == first_id(second) {
                return None;
            }
            ConfChange::many(vec![first, second])
        }
        // One step, forced through the joint configuration.
        1 => ConfChange::Change {
            ops: vec![op(rng)?],
            force_joint: true,
        },
        _ => ConfChange::many(vec![op(rng)?]),
    };
    let next = Membership::from_conf_state(current).apply(&change).ok()?;
    (next.voters.incoming.voters().len() >= MIN_VOTERS).then_some(change)
}

fn first_id(op: ConfChangeOp) -> NodeId {
    match op {
        ConfChangeOp::AddVoter(id) | ConfChangeOp::AddLearner(id) | ConfChangeOp::Remove(id) => id,
    }
}

/// The nodes a change removes from the cluster altogether.
pub fn removed(change: &ConfChange) -> Vec<NodeId> {
    match change {
        ConfChange::Change { ops, .. } => ops
            .iter()
            .filter_map(|op| match op {
                ConfChangeOp::Remove(id) => Some(*id),
                _ => None,
            })
            .collect(),
        ConfChange::LeaveJoint => Vec::new(),
    }
}

/// The nodes a change adds to the cluster.
pub fn added(change: &ConfChange) -> Vec<NodeId> {
    match change {
        ConfChange::Change { ops, .. } => ops
            .iter()
            .filter_map(|op| match op {
                ConfChangeOp::AddVoter(id) | ConfChangeOp::AddLearner(id) => Some(*id),
                _ => None,
            })
            .collect(),
        ConfChange::LeaveJoint => Vec::new(),
    }
}

/// Whether `id` is in `conf` at all: voter of either half or learner.
pub fn is_member(conf: &ConfState, id: NodeId) -> bool {
    conf.voters.contains(&id)
        || conf.voters_outgoing.contains(&id)
        || conf.learners.contains(&id)
        || conf.learners_next.contains(&id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn changes_keep_enough_voters_and_only_add_the_spare() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut conf = ConfState::with_voters(&[1, 2, 3, 4]);
        conf.learners = vec![5];
        let mut kinds = 0;
        for _ in 0..500 {
            let Some(change) = random_change(&mut rng, &conf, Some(9)) else {
                continue;
            };
            kinds += 1;
            let next = Membership::from_conf_state(&conf).apply(&change).unwrap();
            assert!(next.voters.incoming.voters().len() >= MIN_VOTERS);
            for id in added(&change) {
                assert!(id == 9 || is_member(&conf, id), "{change:?}");
            }
        }
        assert!(kinds > 100);
    }
}
