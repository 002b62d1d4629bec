//! Proposals made on a follower, forwarded to the leader: the follower
//! sends the command, the leader appends it and answers with the entry it
//! became (or why it did not), and the follower waits for that entry to be
//! applied like any proposal of its own. A node that does not lead answers
//! with the leader it knows of, so the proposer can try there.

use bytes::Bytes;

use crate::error::ProposeError;
use crate::message::{EntryId, MessageBody, NodeId};
use crate::raft::{Raft, Role};
use crate::storage::Storage;

/// The leader's answer to a proposal forwarded by this node, handed out in
/// a [`Ready`](crate::Ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedProposal {
    /// The id the proposer gave the proposal.
    pub request: u64,
    /// The entry the command became (applied once committed, if it is
    /// still there then), or the refusal: a refused command was never
    /// appended.
    pub result: Result<EntryId, ProposeError>,
}

impl<S: Storage> Raft<S> {
    /// Proposes `data` through the leader: appended here on the leader,
    /// sent to the leader on a follower. The outcome comes as a
    /// [`ForwardedProposal`] in a later Ready; if none comes (a message was
    /// lost), the command may or may not have been appended.
    pub(crate) fn forward_proposal(
        &mut self,
        request: u64,
        data: Bytes,
    ) -> Result<(), ProposeError> {
        if self.role == Role::Leader {
            let result = self.propose(data);
            self.forwarded.push(ForwardedProposal { request, result });
            return Ok(());
        }
        let leader = self
            .leader
            .ok_or(ProposeError::NotLeader { leader: None })?;
        self.send(leader, MessageBody::Propose { request, data });
        Ok(())
    }

    /// A proposal forwarded by `from`: appended if this node leads, else
    /// answered with the leader it knows of.
    pub(crate) fn handle_forwarded_proposal(&mut self, from: NodeId, request: u64, data: Bytes) {
        let result = self.propose(data);
        self.send(from, MessageBody::ProposeResponse { request, result });
    }

    /// A proposer's answer came back.
    pub(crate) fn forwarded_answered(
        &mut self,
        request: u64,
        result: Result<EntryId, ProposeError>,
    ) {
        self.forwarded.push(ForwardedProposal { request, result });
    }
}
