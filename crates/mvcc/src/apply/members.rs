//! The member records' part of a batch: each member's name and URLs.

use keel_api::etcdserverpb::Member;
use prost::Message;

use super::Writer;

impl Writer<'_> {
    /// Records (or replaces) a member's name and URLs.
    pub(super) fn set_member(&mut self, member: Member) {
        self.batch.insert(
            &self.store.inner.keyspaces.members,
            member.id.to_be_bytes(),
            member.encode_to_vec(),
        );
        self.state.members.insert(member.id, member);
    }

    /// Forgets a removed member's record.
    pub(super) fn remove_member(&mut self, id: u64) {
        self.batch
            .remove(&self.store.inner.keyspaces.members, id.to_be_bytes());
        self.state.members.remove(&id);
    }
}
