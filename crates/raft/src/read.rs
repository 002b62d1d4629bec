//! Linearizable reads on the Raft side: ReadIndex on the leader (confirmed by
//! a shared heartbeat round, see [`crate::read_only`]), forwarded from
//! followers, or served on the leader's lease when configured.
//!
//! A new leader serves no read until it has committed an entry of its own
//! term: only then is its commit index known to include every entry any
//! earlier leader committed.

use crate::config::ReadMode;
use crate::error::ReadIndexError;
use crate::message::{MessageBody, NodeId};
use crate::raft::{Raft, Role};
use crate::read_only::{PendingRead, ReadState};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Starts a linearizable read identified by `request`; its
    /// [`ReadState`] appears in a later Ready.
    pub(crate) fn read_index(&mut self, request: u64) -> Result<(), ReadIndexError> {
        if self.role == Role::Leader {
            self.handle_read_index(self.id, request);
            return Ok(());
        }
        let leader = self.leader.ok_or(ReadIndexError::NoLeader)?;
        self.send(leader, MessageBody::ReadIndex { request });
        Ok(())
    }

    /// Leader: a read from `from` (ourselves or a follower).
    pub(crate) fn handle_read_index(&mut self, from: NodeId, request: u64) {
        let read = PendingRead {
            from,
            request,
            index: self.log.committed(),
        };
        if self.committed_in_current_term() {
            self.accept_read(read);
        } else {
            self.reads_before_commit.push(read);
        }
    }

    /// Leader: the first entry of our term committed; queued reads may go.
    pub(crate) fn release_reads_waiting_for_commit(&mut self) {
        if self.reads_before_commit.is_empty() || !self.committed_in_current_term() {
            return;
        }
        let committed = self.log.committed();
        for mut read in std::mem::take(&mut self.reads_before_commit) {
            read.index = committed;
            self.accept_read(read);
        }
    }

    fn accept_read(&mut self, read: PendingRead) {
        let alone = self
            .membership
            .voters
            .ids()
            .into_iter()
            .all(|id| id == self.id);
        if alone || (self.config.read_mode == ReadMode::Lease && self.lease_holds()) {
            self.serve_read(read);
        } else {
            self.read_only.add(read);
            self.pending_flush = true;
        }
    }

    /// Whether a quorum has answered a heartbeat sent in the current
    /// CheckQuorum period: then no other leader can be elected before the
    /// period ends (voters ignore candidates while they hear from us).
    fn lease_holds(&self) -> bool {
        self.config.check_quorum
            && !self.lease_revoked
            && self.lead_transferee.is_none()
            && self.lease_round > 0
            && self
                .read_only
                .confirmed_round(self.id, &self.membership.voters)
                >= self.lease_round
    }

    /// Leader: `from` echoed read round `round`; serve what it confirms.
    pub(crate) fn confirm_reads(&mut self, from: NodeId, round: u64) {
        let confirmed = self
            .read_only
            .ack(from, round, self.id, &self.membership.voters);
        for read in confirmed {
            self.serve_read(read);
        }
    }

    fn serve_read(&mut self, read: PendingRead) {
        if read.from == self.id {
            self.read_states.push(ReadState {
                request: read.request,
                index: read.index,
            });
        } else {
            let body = MessageBody::ReadIndexResponse {
                request: read.request,
                index: read.index,
            };
            self.send(read.from, body);
        }
    }
}
