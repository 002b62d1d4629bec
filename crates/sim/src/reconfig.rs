//! Random membership changes, as an operator would request them: add a
//! spare node as a learner, promote a learner, demote or remove a voter or a
//! learner (the leader included), or several of these at once through the
//! joint configuration. Every change keeps a minimum number of voters, so
//! the cluster stays live through a single crash. Leadership transfers are
//! requested at random too, and removed nodes are dropped once a quorum of
//! the leader's configuration has applied their removal.

use keel_raft::{ConfChange, ConfChangeOp, ConfState, Membership, NodeId};
use rand::rngs::StdRng;
use rand::Rng;

use crate::node::SimNode;
use crate::simulation::Simulation;

/// Fewest voters a change may leave.
pub const MIN_VOTERS: usize = 3;

/// Nodes beyond the initial cluster that membership changes may add.
pub const SPARE_NODES: u64 = 3;

/// Per tick, in reconfiguring scenarios: membership change and transfer chances.
const CONF_CHANGE_CHANCE: f64 = 0.1;
const TRANSFER_CHANCE: f64 = 0.02;

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

impl Simulation {
    /// At the leader: maybe a random membership change, maybe a transfer.
    pub(crate) fn reconfigure(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        if self.rng.random_bool(CONF_CHANGE_CHANCE) {
            self.change_membership(leader);
        }
        if self.rng.random_bool(TRANSFER_CHANCE) {
            let raft = self.nodes[&leader].raw().expect("leader is up");
            let voters = raft.conf_state().voters;
            let to = voters[self.rng.random_range(0..voters.len())];
            let replica = self.nodes.get_mut(&leader).and_then(|n| n.replica.as_mut());
            match replica.expect("leader is up").transfer_leader(to) {
                Ok(()) => {
                    self.report.transfers += 1;
                    self.trace(format_args!("leader {leader} transfers to {to}"));
                }
                Err(e) => self.trace(format_args!("transfer to {to} refused: {e}")),
            }
        }
    }

    /// Proposes a random membership change at `leader`, starting the spare
    /// it adds, if any.
    fn change_membership(&mut self, leader: NodeId) {
        let conf = self.nodes[&leader]
            .raw()
            .expect("leader is up")
            .conf_state();
        // A spare: a node that never joined, or a fresh one if there is room.
        let idle = self.nodes.iter().find(|(id, n)| {
            !is_member(&conf, **id)
                && !self.removals.contains_key(id)
                && n.conf() == ConfState::default()
        });
        let spare = match idle {
            Some((id, _)) => Some(*id),
            None if (self.nodes.len() as u64) < self.options.nodes + SPARE_NODES => {
                Some(self.next_spare)
            }
            None => None,
        };
        let Some(change) = random_change(&mut self.rng, &conf, spare) else {
            return;
        };
        let replica = self.nodes.get_mut(&leader).and_then(|n| n.replica.as_mut());
        // The outcome shows in the membership; nobody waits for the reply.
        let reply = Box::new(|_| {});
        // Nodes it adds come with an address, as keel-node's callers give.
        let addresses = added(&change)
            .into_iter()
            .map(|id| (id, crate::node::address(id)))
            .collect();
        match replica
            .expect("leader is up")
            .propose_conf_change(change.clone(), &addresses, reply)
        {
            Ok(at) => {
                self.report.conf_changes += 1;
                self.trace(format_args!(
                    "leader {leader} proposes {change:?} at {}/{}",
                    at.index, at.term
                ));
                for id in added(&change) {
                    if !self.nodes.contains_key(&id) {
                        self.next_spare += 1;
                        let seed = crate::simulation::disk_seed(self.options.seed, id);
                        self.nodes.insert(id, SimNode::spare(seed));
                        // Cannot fail: an empty disk is always valid.
                        let _ = self.start(id);
                    }
                }
                for id in removed(&change) {
                    self.removals.insert(id, at.index);
                }
            }
            Err(e) => self.trace(format_args!("{change:?} refused by {leader}: {e}")),
        }
    }

    /// Drops the removed nodes no configuration needs any more, as an
    /// operator stops a member once its removal is done: a quorum of the
    /// leader's configuration (of both halves, while joint) applied past
    /// the removal, with a membership without it. That quorum elects
    /// leaders and brings every other member up to date without it.
    /// Waiting for every node instead could wait for good: a removed node
    /// that never learned of its removal keeps calling elections (with
    /// neither pre-vote nor check-quorum nothing stops it), and the members
    /// it disrupts never catch up.
    pub(crate) fn decommission_removed(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let conf = self.nodes[&leader].conf();
        let gone: Vec<NodeId> = self
            .removals
            .iter()
            .filter(|(&x, &at)| {
                let done = |id: &NodeId| {
                    *id != x
                        && self
                            .nodes
                            .get(id)
                            .is_some_and(|n| n.applied() >= at && !is_member(&n.conf(), x))
                };
                !is_member(&conf, x)
                    && quorum(&conf.voters, done)
                    && (conf.voters_outgoing.is_empty() || quorum(&conf.voters_outgoing, done))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.trace(format_args!("node {id} was removed: decommissioned"));
            self.removals.remove(&id);
            self.decommission(id);
        }
    }
}

/// Whether more than half of `voters` are `done`.
fn quorum(voters: &[NodeId], done: impl Fn(&NodeId) -> bool) -> bool {
    voters.iter().filter(|id| done(id)).count() > voters.len() / 2
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
