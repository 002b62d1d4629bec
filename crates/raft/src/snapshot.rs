//! Snapshots on the wire: the leader streams a snapshot in chunks of at most
//! `max_size_per_msg` bytes to a follower that needs compacted entries, and
//! the follower hands each chunk to the caller to write, then restores.
//!
//! A transfer always starts at offset 0, and a follower takes chunks only in
//! order: a lost chunk, a restarted follower or a new leader makes the
//! follower answer with the offset it expects (0 for a transfer it does not
//! know), and the leader resends from there. So an interrupted transfer
//! restarts cleanly, and a multi-gigabyte snapshot never sits in one message.

use crate::error::{StepError, StorageError};
use crate::membership::Membership;
use crate::message::{AppendResponse, Index, MessageBody, NodeId, SnapshotChunk, SnapshotMeta};
use crate::raft::Raft;
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Leader: `to` needs entries that were compacted; start sending it the
    /// latest snapshot. Returns whether a chunk went out.
    pub(crate) fn start_snapshot(&mut self, to: NodeId) -> bool {
        match self.log.storage().snapshot_meta() {
            Ok(meta) => {
                tracing::debug!(
                    id = self.id,
                    to,
                    index = meta.last.index,
                    "sending snapshot"
                );
                if let Some(pr) = self.progress.get_mut(&to) {
                    pr.become_snapshot(meta);
                }
                self.send_snapshot_chunk(to)
            }
            Err(e) => {
                tracing::debug!(id = self.id, to, error = %e, "snapshot needed but not available");
                false
            }
        }
    }

    /// Leader: sends the next chunk of the transfer to `to`.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) -> bool {
        let Some(transfer) = self.progress.get(&to).and_then(|pr| pr.snapshot.as_ref()) else {
            return false;
        };
        let meta = transfer.meta.clone();
        let offset = transfer.next_offset;
        let data =
            match self
                .log
                .storage()
                .snapshot_chunk(&meta, offset, self.config.max_size_per_msg)
            {
                Ok(data) => data,
                Err(StorageError::SnapshotOutOfDate(_)) => {
                    // A newer snapshot replaced it: start over with that one, if
                    // it really is another one.
                    let newer = self.log.storage().snapshot_meta();
                    return newer.is_ok_and(|n| n != meta) && self.start_snapshot(to);
                }
                Err(e) => {
                    tracing::warn!(id = self.id, to, error = %e, "cannot read snapshot chunk");
                    return false;
                }
            };
        let chunk = SnapshotChunk { meta, offset, data };
        let last = chunk.is_last();
        if chunk.data.is_empty() && !last {
            tracing::warn!(
                id = self.id,
                to,
                offset,
                "storage returned an empty snapshot chunk"
            );
            return false;
        }
        let len = chunk.data.len() as u64;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_chunk(offset + len, len, last);
        }
        self.send(to, MessageBody::Snapshot(chunk));
        true
    }

    /// Leader: the follower answered a chunk.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: Index,
        next_offset: u64,
        rejected: bool,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.snapshot_answered(index, next_offset, rejected);
        self.pending_flush = true;
    }

    /// Follower: a chunk arrived.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
    ) -> Result<(), StepError> {
        // `Raft::validate` refused chunks running past the snapshot's size.
        let index = chunk.meta.last.index;
        let committed = self.log.committed();
        if index <= committed {
            // We already hold everything it covers.
            self.receiving = None;
            self.ack_append(from, committed);
            return Ok(());
        }
        if self.snapshot_to_install.is_some() {
            // A snapshot completed and waits to be handed out for installing:
            // the Ready it goes in must hold no chunk of a later one, since
            // the caller writes chunks first and installs after. Have the
            // leader start this one over.
            let body = MessageBody::SnapshotResponse {
                index,
                next_offset: 0,
                rejected: true,
            };
            self.send_after_persist(from, self.term, body);
            return Ok(());
        }
        if chunk.offset == 0 {
            if self.log.matches(chunk.meta.last) {
                // Our log reaches the snapshot's last entry: the leader only
                // needs to learn that, not to send the data.
                self.log.commit_to(index);
                self.ack_append(from, index);
                return Ok(());
            }
            self.receiving = Some((chunk.meta.clone(), 0));
        }
        let expected = match &self.receiving {
            Some((meta, next)) if *meta == chunk.meta => Some(*next),
            _ => None,
        };
        if expected != Some(chunk.offset) {
            // Out of order, or a transfer we know nothing of (we restarted,
            // or another leader began it): ask for what we can take.
            let next_offset = expected.unwrap_or(0);
            let body = MessageBody::SnapshotResponse {
                index,
                next_offset,
                rejected: true,
            };
            self.send_after_persist(from, self.term, body);
            return Ok(());
        }
        let end = chunk.offset + chunk.data.len() as u64;
        let last = chunk.is_last();
        let meta = chunk.meta.clone();
        self.snapshot_chunks.push(chunk);
        if last {
            self.receiving = None;
            self.restore(meta);
            self.ack_append(from, index);
        } else {
            self.receiving = Some((meta, end));
            let body = MessageBody::SnapshotResponse {
                index,
                next_offset: end,
                rejected: false,
            };
            self.send_after_persist(from, self.term, body);
        }
        Ok(())
    }

    fn ack_append(&mut self, to: NodeId, index: Index) {
        let body = MessageBody::AppendResponse(AppendResponse::Accepted { index });
        self.send_after_persist(to, self.term, body);
    }

    /// Follower: the whole snapshot arrived; the log now starts after it.
    fn restore(&mut self, meta: SnapshotMeta) {
        tracing::info!(
            id = self.id,
            index = meta.last.index,
            term = meta.last.term,
            "restoring snapshot"
        );
        self.log.restore(meta.last);
        self.set_membership(Membership::from_conf_state(&meta.conf_state));
        self.snapshot_to_install = Some(meta);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rand::SeedableRng;

    use crate::message::{ConfState, EntryId, Message, MessageBody, SnapshotChunk, SnapshotMeta};
    use crate::{Config, MemStorage, RawNode};

    fn chunk(index: u64, size: u64, offset: u64, data: &'static [u8]) -> Message {
        let meta = SnapshotMeta {
            last: EntryId { term: 1, index },
            conf_state: ConfState::with_voters(&[1, 2, 3]),
            size,
        };
        Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::Snapshot(SnapshotChunk {
                meta,
                offset,
                data: Bytes::from_static(data),
            }),
        }
    }

    /// keel-sim seed 18 (3 nodes, partitions): the last chunk of one
    /// snapshot and the first of the next arrived before one Ready; the
    /// caller, writing chunks before installing, installed the wrong bytes.
    #[test]
    fn a_ready_installing_a_snapshot_holds_no_chunk_of_a_later_one() {
        let storage = MemStorage::with_voters(&[1, 2, 3]);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(1));
        let mut node = RawNode::new(Config::new(1), storage, rng).unwrap();
        node.step(chunk(10, 4, 0, b"abcd")).unwrap();
        node.step(chunk(20, 8, 0, b"efgh")).unwrap();
        let ready = node.ready();
        assert_eq!(ready.snapshot.map(|m| m.last.index), Some(10));
        assert_eq!(ready.snapshot_chunks.len(), 1);
        assert_eq!(ready.snapshot_chunks[0].meta.last.index, 10);
        // The leader is told to start the later one over.
        assert!(ready.persisted_messages.iter().any(|m| matches!(
            m.body,
            MessageBody::SnapshotResponse {
                index: 20,
                next_offset: 0,
                rejected: true
            }
        )));
        node.advance();
        node.step(chunk(20, 8, 0, b"efgh")).unwrap();
        assert_eq!(node.ready().snapshot_chunks.len(), 1, "taken now");
    }
}
