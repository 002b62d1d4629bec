//! Membership changes through the log: proposing them (one at a time, with
//! learners promoted only once caught up), applying them when committed,
//! leaving a joint configuration automatically, and stepping down when the
//! leader itself is removed.

use crate::error::ProposeError;
use crate::membership::{ConfChange, ConfChangeOp, Membership};
use crate::message::{Entry, EntryId, EntryKind, MessageBody};
use crate::quorum::VoteResult;
use crate::raft::{Raft, Role};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Leader: proposes a membership change.
    pub(crate) fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<EntryId, ProposeError> {
        self.propose_conf_change_with_context(change, &[])
    }

    /// Leader: proposes a membership change carrying the application's
    /// `context` in its entry.
    pub(crate) fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: &[u8],
    ) -> Result<EntryId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.pending_conf_index > self.log.applying() {
            let index = self.pending_conf_index;
            return Err(if index == self.term_start_index {
                ProposeError::NewLeader { index }
            } else {
                ProposeError::ConfChangeInProgress { index }
            });
        }
        let next = self.membership.apply(&change)?;
        if matches!(change, ConfChange::Change { .. }) && next.voters != self.membership.voters {
            self.check_active_quorum(&next)?;
        }
        if let ConfChange::Change { ops, .. } = &change {
            let last = self.log.last_index();
            for op in ops {
                let ConfChangeOp::AddVoter(id) = *op else {
                    continue;
                };
                if self.membership.is_voter(id) {
                    continue;
                }
                let (matched, active) = self
                    .progress
                    .get(&id)
                    .map_or((0, false), |pr| (pr.matched, pr.recent_active));
                // A learner that never acknowledged an entry (matched 0) or
                // went quiet is not caught up, however short the log is.
                if !self.membership.learners.contains(&id)
                    || matched == 0
                    || !active
                    || last.saturating_sub(matched) > self.config.max_promotion_lag
                {
                    return Err(ProposeError::NotCaughtUp { id, matched, last });
                }
            }
        }
        let id = self.propose_entry(EntryKind::ConfChange, change.encode_with_context(context))?;
        self.pending_conf_index = id.index;
        Ok(id)
    }

    /// Refuses a change of voters after which the voters this leader has
    /// heard from within the last two election timeouts (itself included)
    /// would not be a quorum: the cluster would stop until the others came
    /// back.
    fn check_active_quorum(&self, next: &Membership) -> Result<(), ProposeError> {
        let me = self.id;
        let up = |id| {
            id == me
                || self
                    .progress
                    .get(&id)
                    .is_some_and(|pr| pr.recent_active || pr.was_active)
        };
        match next.voters.vote_result(|id| Some(up(id))) {
            VoteResult::Won => Ok(()),
            _ => Err(ProposeError::NoActiveQuorum),
        }
    }

    /// A committed membership change is being handed out: it takes effect now.
    pub(crate) fn apply_conf_change_entry(&mut self, entry: &Entry) {
        let change = match ConfChange::decode(&entry.data) {
            Ok(change) => change,
            Err(e) => {
                tracing::error!(id = self.id, index = entry.index, error = %e, "skipping undecodable membership change");
                return;
            }
        };
        match self.membership.apply(&change) {
            Ok(next) => self.set_membership(next),
            // Every node skips the same entry the same way, so they agree.
            Err(e) => {
                tracing::warn!(id = self.id, index = entry.index, error = %e, "committed membership change does not apply")
            }
        }
    }

    /// Makes `next` the membership, keeping progress in step with it.
    pub(crate) fn set_membership(&mut self, next: Membership) {
        tracing::info!(id = self.id, membership = ?next.to_conf_state(), "membership changed");
        self.membership = next;
        self.membership_changed = true;
        let members = self.membership.members();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            if !self.progress.contains_key(&id) {
                let pr = self.new_progress();
                self.progress.insert(id, pr);
            }
        }
        if self
            .lead_transferee
            .is_some_and(|t| !self.membership.voters.incoming.contains(t))
        {
            self.lead_transferee = None;
        }
        if self.role != Role::Leader {
            return;
        }
        if !self.membership.is_joint() && !self.membership.is_voter(self.id) {
            self.step_down_after_removal();
            return;
        }
        // Quorums changed: the commit index may move, new members need appends.
        self.maybe_commit();
        self.pending_flush = true;
    }

    /// Leader: once the joint configuration is applied, propose leaving it.
    pub(crate) fn maybe_leave_joint(&mut self) {
        if self.role == Role::Leader
            && self.membership.is_joint()
            && self.pending_conf_index <= self.log.applying()
        {
            if let Err(e) = self.propose_conf_change(ConfChange::LeaveJoint) {
                // Retried at the next Ready (e.g. after a transfer ends).
                tracing::debug!(id = self.id, error = %e, "cannot leave joint configuration yet");
            }
        }
    }

    /// The leader is no longer a voter: hand over to the most up-to-date
    /// voter if it is fully caught up, and step down.
    fn step_down_after_removal(&mut self) {
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|(id, pr)| self.membership.is_voter(**id) && pr.matched == last)
            .map(|(id, _)| *id)
            .next();
        tracing::info!(
            id = self.id,
            ?successor,
            "removed from the configuration, stepping down"
        );
        if let Some(to) = successor {
            self.send(to, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }
}
