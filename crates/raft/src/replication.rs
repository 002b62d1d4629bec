//! The leader side of log replication: proposals, appends to each follower
//! with flow control, heartbeats, and advancing the commit index.

use bytes::Bytes;

use crate::error::{ProposeError, StepError, StorageError};
use crate::message::{
    Append, AppendResponse, Entry, EntryId, EntryKind, Heartbeat, Index, Message, MessageBody,
    NodeId,
};
use crate::progress::ProgressState;
use crate::raft::{Raft, Role};
use crate::storage::Storage;

impl<S: Storage> Raft<S> {
    /// Appends a command to the leader's log. Replication waits for the next
    /// flush, so proposals made between two `Ready`s leave as one append per peer.
    pub(crate) fn propose(&mut self, data: Bytes) -> Result<EntryId, ProposeError> {
        self.propose_entry(EntryKind::Normal, data)
    }

    /// Appends an entry of any kind to the leader's log, within the caps.
    pub(crate) fn propose_entry(
        &mut self,
        kind: EntryKind,
        data: Bytes,
    ) -> Result<EntryId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(to) = self.lead_transferee {
            return Err(ProposeError::TransferInProgress { to });
        }
        let size = data.len() as u64;
        let limit = self.config.max_uncommitted_size;
        // An empty pipeline always takes one proposal, however large, so a big
        // entry can never be stuck forever.
        if self.uncommitted_size > 0 && self.uncommitted_size + size > limit {
            return Err(ProposeError::UncommittedSizeExceeded {
                pending: self.uncommitted_size,
                limit,
            });
        }
        self.uncommitted_size += size;
        let id = EntryId {
            term: self.term,
            index: self.log.last_index() + 1,
        };
        self.log.append(&[Entry {
            term: id.term,
            index: id.index,
            kind,
            data,
        }]);
        self.pending_flush = true;
        Ok(id)
    }

    /// Committed entries were handed out for applying: they no longer count
    /// against the uncommitted-size cap.
    pub(crate) fn release_uncommitted(&mut self, entries: &[Entry]) {
        if self.role == Role::Leader {
            let size: u64 = entries.iter().map(Entry::payload_size).sum();
            self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
        }
    }

    pub(crate) fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::AppendResponse(r) => self.handle_append_response(m.from, r),
            MessageBody::HeartbeatResponse(r) => {
                self.handle_heartbeat_response(m.from, r.read_round);
                Ok(())
            }
            MessageBody::SnapshotResponse {
                index,
                next_offset,
                rejected,
            } => {
                self.handle_snapshot_response(m.from, index, next_offset, rejected);
                Ok(())
            }
            MessageBody::ReadIndex { request } => {
                self.handle_read_index(m.from, request);
                Ok(())
            }
            MessageBody::Append(_) | MessageBody::Heartbeat(_) => Err(StepError::InvalidMessage {
                from: m.from,
                kind: "Append",
                term: m.term,
                reason: "a second leader in our term".into(),
            }),
            _ => Ok(()),
        }
    }

    fn handle_append_response(&mut self, from: NodeId, r: AppendResponse) -> Result<(), StepError> {
        let last_index = self.log.last_index();
        // We never send an append past our log, and a refusal's hint is at
        // most the refused index: anything else comes from a broken peer.
        let refusal = match r {
            AppendResponse::Accepted { index } if index > last_index => Some(format!(
                "acknowledges {index}, beyond our last index {last_index}"
            )),
            AppendResponse::Rejected {
                rejected_index,
                hint_index,
                ..
            } if rejected_index > last_index || hint_index > rejected_index => Some(format!(
                "refuses {rejected_index} with hint {hint_index}, our last index is {last_index}"
            )),
            _ => None,
        };
        if let Some(reason) = refusal {
            return Err(StepError::InvalidMessage {
                from,
                kind: "AppendResponse",
                term: self.term,
                reason,
            });
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return Err(StepError::UnknownPeer(from));
        };
        pr.recent_active = true;
        match r {
            AppendResponse::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                // The follower's log holds nothing matching past `hint_index`.
                // If it told us the term there, skip on our side too: every
                // entry of ours above the last one with a term <= hint_term
                // cannot match.
                let probe = if hint_term > 0 {
                    self.log.find_conflict_by_term(hint_index, hint_term).0
                } else {
                    hint_index
                };
                let pr = self.progress.get_mut(&from).expect("checked above");
                if pr.maybe_decrease_to(rejected_index, probe) {
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                    pr.force_send = true;
                    self.pending_flush = true;
                }
            }
            AppendResponse::Accepted { index } => {
                if pr.maybe_update(index) {
                    match pr.state {
                        ProgressState::Probe => pr.become_replicate(),
                        ProgressState::Replicate => pr.inflights.free_le(index),
                        ProgressState::Snapshot => {
                            // A completed snapshot is acknowledged like an append.
                            let covered = pr.snapshot.as_ref().map_or(0, |t| t.meta.last.index);
                            if pr.matched >= covered {
                                pr.become_replicate();
                            }
                        }
                    }
                    self.maybe_commit();
                    self.pending_flush = true;
                }
                self.maybe_finish_transfer(from);
            }
        }
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        match pr.state {
            ProgressState::Replicate if pr.inflights.full() => {
                // The peer is alive but acknowledgements went missing: make room
                // so replication (and, on a gap, the probe that repairs it) resumes.
                pr.inflights.free_first();
            }
            ProgressState::Snapshot if pr.is_paused() => {
                // Chunks or their answers went missing: resend from what the
                // peer last confirmed.
                pr.rewind_snapshot();
            }
            _ => {}
        }
        if pr.matched < last_index {
            pr.force_send = true;
            self.pending_flush = true;
        }
        self.confirm_reads(from, read_round);
    }

    /// Advances the commit index to what a quorum holds, but only by counting
    /// replicas of an entry of the current term (§5.4.2, Figure 8): an older
    /// entry is committed only indirectly, by a newer one above it.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let quorum_index = self
            .membership
            .voters
            .committed_index(|id| progress.get(&id).map(|p| p.matched));
        if quorum_index > self.log.committed() && self.log.term(quorum_index) == Ok(self.term) {
            self.log.commit_to(quorum_index);
            self.release_reads_waiting_for_commit();
            return true;
        }
        false
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed();
        let read_round = self.read_only.round();
        let peers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, pr)| (*id, pr.matched.min(committed)))
            .collect();
        for (to, commit) in peers {
            // Never tell a follower to commit beyond what it is known to hold.
            self.send(to, MessageBody::Heartbeat(Heartbeat { commit, read_round }));
        }
    }

    /// Sends every follower what it should receive now: new entries as far as
    /// its flow control allows, or an empty append carrying news of the commit
    /// index. Called once per `Ready`, which is what batches proposals.
    pub(crate) fn flush_appends(&mut self) {
        if self.role == Role::Leader && self.read_only.start_round().is_some() {
            // Reads arrived since the last flush: one heartbeat round
            // confirms them all.
            self.broadcast_heartbeat();
        }
        if !std::mem::take(&mut self.pending_flush) || self.role != Role::Leader {
            return;
        }
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for to in peers {
            self.send_pending_appends(to);
        }
    }

    fn send_pending_appends(&mut self, to: NodeId) {
        loop {
            let last_index = self.log.last_index();
            let committed = self.log.committed();
            let Some(pr) = self.progress.get(&to) else {
                return;
            };
            if pr.is_paused() {
                return;
            }
            if pr.state == ProgressState::Snapshot {
                if !self.send_snapshot_chunk(to) {
                    return;
                }
                continue;
            }
            let has_entries = pr.next <= last_index;
            if !has_entries && !pr.force_send && !pr.can_bump_commit(committed) {
                return;
            }
            if !self.send_append(to) || !has_entries {
                return;
            }
        }
    }

    /// Sends one append to `to` starting at its `next` index. Returns false if
    /// nothing could be sent.
    fn send_append(&mut self, to: NodeId) -> bool {
        let pr = &self.progress[&to];
        let prev_index = pr.next - 1;
        let entries = self.log.term(prev_index).and_then(|prev_term| {
            Ok((
                prev_term,
                self.log
                    .entries_from(pr.next, self.config.max_size_per_msg)?,
            ))
        });
        let (prev_term, entries) = match entries {
            Ok(found) => found,
            Err(StorageError::Compacted(_)) => {
                // The entries the peer needs are gone: it gets a snapshot.
                return self.start_snapshot(to);
            }
            Err(e) => {
                tracing::warn!(id = self.id, to, error = %e, "cannot build append");
                return false;
            }
        };
        let commit = self.log.committed();
        let last = prev_index + entries.len() as u64;
        let bytes = entries.iter().map(Entry::size).sum();
        let pr = self.progress.get_mut(&to).expect("looked up above");
        pr.sent_append(last, entries.len(), bytes, commit);
        self.send(
            to,
            MessageBody::Append(Append {
                prev_index,
                prev_term,
                entries,
                commit,
            }),
        );
        true
    }
}
