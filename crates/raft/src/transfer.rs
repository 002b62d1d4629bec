//! Leadership transfer (Raft thesis §3.10): the leader stops taking
//! proposals, brings the target's log up to date, and tells it to campaign at
//! once (TimeoutNow). A transfer that has not completed within an election
//! timeout is aborted.

use crate::error::TransferError;
use crate::message::{MessageBody, NodeId};
use crate::raft::{Raft, Role};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Leader: hands leadership to voter `target`.
    pub(crate) fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        if !self.membership.voters.incoming.contains(target) {
            return Err(TransferError::NotAVoter(target));
        }
        tracing::info!(id = self.id, target, "transferring leadership");
        self.lead_transferee = Some(target);
        self.timeout_now_sent = false;
        // The transfer must finish within one election timeout.
        self.election_elapsed = 0;
        self.maybe_finish_transfer(target);
        Ok(())
    }

    /// Leader: if `peer` is the transfer target and has caught up, tell it to
    /// campaign; otherwise make sure it is sent what it lacks.
    pub(crate) fn maybe_finish_transfer(&mut self, peer: NodeId) {
        if self.lead_transferee != Some(peer) || self.timeout_now_sent {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.matched == last {
            self.timeout_now_sent = true;
            // A forced election ignores leases: no lease reads from now on.
            self.lease_revoked = true;
            self.send(peer, MessageBody::TimeoutNow);
        } else {
            pr.force_send = true;
            self.pending_flush = true;
        }
    }
}
