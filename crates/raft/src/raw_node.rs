//! The public face of the core: feed it ticks, messages and proposals; take a
//! [`Ready`] batch of work; do the work; call [`RawNode::advance`].

use bytes::Bytes;
use rand::RngCore;

use crate::config::Config;
use crate::error::{
    ConfigError, ProposeError, ReadIndexError, StepError, StorageError, TransferError,
};
use crate::forward::ForwardedProposal;
use crate::membership::ConfChange;
use crate::message::{
    ConfState, Entry, EntryId, EntryKind, HardState, Index, Message, NodeId, SnapshotChunk,
    SnapshotMeta, Term,
};
use crate::raft::{Raft, Role, SoftState};
use crate::read_only::ReadState;
use crate::storage::Storage;

/// A batch of work for the caller, taken with [`RawNode::ready`].
///
/// Handle it in this order:
/// 1. send [`messages`](Ready::messages) (they may go before anything is durable);
/// 2. write [`snapshot_chunks`](Ready::snapshot_chunks) to the snapshot being
///    received (a chunk at offset 0 starts a new one), and if
///    [`snapshot`](Ready::snapshot) is set, install the received snapshot: it
///    becomes the state machine's state, and the log restarts after it;
/// 3. persist [`entries`](Ready::entries) (replacing any stored suffix they
///    conflict with) and then [`hard_state`](Ready::hard_state), and sync;
/// 4. send [`persisted_messages`](Ready::persisted_messages);
/// 5. note where [`forwarded`](Ready::forwarded) proposals went (one of them
///    may be among this Ready's committed entries), then apply
///    [`committed_entries`](Ready::committed_entries) in order (entries
///    of kind [`EntryKind::ConfChange`] have already taken effect in the core),
///    and persist [`conf_state`](Ready::conf_state) with the applied index;
/// 6. serve [`read_states`](Ready::read_states) once the applied index reaches theirs;
/// 7. call [`RawNode::advance`].
#[derive(Debug, Default)]
#[must_use = "a Ready holds work that must be done before advance()"]
pub struct Ready {
    /// Leadership or role changed since the last Ready.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to durable storage.
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once (the leader's appends and heartbeats).
    pub messages: Vec<Message>,
    /// Messages to send only after `entries` and `hard_state` are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply to the state machine, in log order.
    pub committed_entries: Vec<Entry>,
    /// Chunks of a snapshot being received, in order, to write.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// A completely received snapshot to install.
    pub snapshot: Option<SnapshotMeta>,
    /// The membership after `committed_entries` (or `snapshot`), if it changed.
    pub conf_state: Option<ConfState>,
    /// Linearizable reads that may be served once applied up to their index.
    pub read_states: Vec<ReadState>,
    /// Where proposals made with [`RawNode::forward_proposal`] were
    /// appended, or why they were not.
    pub forwarded: Vec<ForwardedProposal>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.snapshot.is_none()
            && self.conf_state.is_none()
            && self.read_states.is_empty()
            && self.forwarded.is_empty()
    }
}

/// A snapshot of a node's state for observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// The last index handed to the application and acknowledged by `advance`.
    pub applied: Index,
    /// The id of the last entry in the log.
    pub last: EntryId,
}

/// A Raft node with no I/O of its own. Single-threaded: wrap it in whatever
/// runtime drives it.
pub struct RawNode<S> {
    raft: Raft<S>,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
    /// The last entry handed out for persisting and not yet acknowledged.
    persisting: Option<EntryId>,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a node over `storage`, with randomness from `rng`
    /// (seed it for reproducible runs).
    pub fn new(
        config: Config,
        storage: S,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Self, ConfigError> {
        let raft = Raft::new(config, storage, rng)?;
        Ok(RawNode {
            prev_hard_state: raft.hard_state(),
            prev_soft_state: raft.soft_state(),
            raft,
            persisting: None,
        })
    }

    /// Advances logical time by one tick: election timeouts, heartbeats and
    /// CheckQuorum are all counted in ticks.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (a pre-vote first, if enabled). Does nothing on
    /// a leader or a non-voter.
    pub fn campaign(&mut self) {
        self.raft.hup();
    }

    /// Proposes a command. On the leader, returns the id the entry will have
    /// if it commits; the entry may still be lost if leadership changes, which
    /// shows as a different entry applied at that index.
    pub fn propose(&mut self, data: Bytes) -> Result<EntryId, ProposeError> {
        self.raft.propose(data)
    }

    /// Proposes `data` from any node: the leader appends it, a follower
    /// sends it to the leader it knows of. Where it was appended (or why
    /// not) comes as a [`ForwardedProposal`] with the caller's id `request`
    /// in a later Ready; if none comes (a message was lost), the command
    /// may or may not have been appended. Refused at once only when no
    /// leader is known.
    pub fn forward_proposal(&mut self, request: u64, data: Bytes) -> Result<(), ProposeError> {
        self.raft.forward_proposal(request, data)
    }

    /// Proposes a membership change. Only one may be in progress at a time;
    /// a learner is promoted only once it has caught up. A change of more
    /// than one voter goes through the joint configuration, which the leader
    /// leaves by itself once the joint configuration is applied.
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<EntryId, ProposeError> {
        self.raft.propose_conf_change(change)
    }

    /// Proposes a membership change whose entry also carries `context`,
    /// opaque to the core (read it back with
    /// [`ConfChange::decode_with_context`] when the entry is applied).
    pub fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: &[u8],
    ) -> Result<EntryId, ProposeError> {
        self.raft.propose_conf_change_with_context(change, context)
    }

    /// Hands leadership to voter `target`: proposals are refused until the
    /// transfer completes or, after an election timeout, is aborted.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), TransferError> {
        self.raft.transfer_leader(target)
    }

    /// Starts a linearizable read with the caller's id `request`. On a
    /// follower the read is forwarded to the leader. Its [`ReadState`] comes
    /// in a later Ready; if none comes (the leader changed, a message was
    /// lost), retry after a timeout.
    pub fn read_index(&mut self, request: u64) -> Result<(), ReadIndexError> {
        self.raft.read_index(request)
    }

    /// Handles a message from a peer. An error means the message was dropped,
    /// and says why; the node is unaffected and keeps running.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        self.raft.step(message)
    }

    /// Whether [`ready`](Self::ready) would return work.
    pub fn has_ready(&self) -> bool {
        self.raft.has_pending_output()
            || !self.raft.log.pending_entries().is_empty()
            || self.raft.log.has_entries_to_apply()
            || self.raft.hard_state() != self.prev_hard_state
            || self.raft.soft_state() != self.prev_soft_state
    }

    /// Takes the pending work. Each entry and message is handed out once.
    pub fn ready(&mut self) -> Ready {
        let raft = &mut self.raft;
        raft.flush_appends();
        let entries = raft.log.pending_entries().to_vec();
        raft.log.mark_in_progress();
        if let Some(last) = entries.last() {
            self.persisting = Some(last.id());
        }
        let committed_entries = match raft
            .log
            .take_entries_to_apply(raft.config.max_committed_size_per_ready)
        {
            Ok(entries) => entries,
            Err(e) => {
                // Leave them for the next Ready; the caller sees the error in its logs.
                tracing::error!(id = raft.id, error = %e, "reading committed entries");
                Vec::new()
            }
        };
        raft.release_uncommitted(&committed_entries);
        for entry in committed_entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
        {
            raft.apply_conf_change_entry(entry);
        }
        raft.maybe_leave_joint();
        let conf_state =
            std::mem::take(&mut raft.membership_changed).then(|| raft.membership.to_conf_state());
        let hs = raft.hard_state();
        let hard_state = (hs != self.prev_hard_state).then_some(hs);
        self.prev_hard_state = hs;
        let ss = raft.soft_state();
        let soft_state = (ss != self.prev_soft_state).then_some(ss);
        self.prev_soft_state = ss;
        Ready {
            soft_state,
            hard_state,
            entries,
            messages: std::mem::take(&mut raft.msgs),
            persisted_messages: std::mem::take(&mut raft.msgs_after_persist),
            committed_entries,
            snapshot_chunks: std::mem::take(&mut raft.snapshot_chunks),
            snapshot: raft.snapshot_to_install.take(),
            conf_state,
            read_states: std::mem::take(&mut raft.read_states),
            forwarded: std::mem::take(&mut raft.forwarded),
        }
    }

    /// Everything handed out by [`ready`](Self::ready) so far has been
    /// persisted, sent and applied.
    pub fn advance(&mut self) {
        if let Some(id) = self.persisting.take() {
            self.raft.on_persisted(id);
        }
        self.raft.log.applied_to_handed_out();
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// The current state, for observers and tests.
    pub fn status(&self) -> Status {
        Status {
            id: self.raft.id,
            hard_state: self.raft.hard_state(),
            soft_state: self.raft.soft_state(),
            applied: self.raft.log.applied(),
            last: self.raft.log.last_id(),
        }
    }

    /// Leader: the highest index known to be replicated on each member
    /// (this node's own is its last index). Empty unless this node leads.
    pub fn matched(&self) -> std::collections::BTreeMap<NodeId, Index> {
        if self.raft.role != Role::Leader {
            return std::collections::BTreeMap::new();
        }
        self.raft
            .progress
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect()
    }

    /// The membership in effect (as of the entries handed out for applying).
    pub fn conf_state(&self) -> ConfState {
        self.raft.membership.to_conf_state()
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// The term of the log entry at `index`, for inspection.
    pub fn log_term(&self, index: Index) -> Result<Term, StorageError> {
        self.raft.log.term(index)
    }

    /// Log entries in `[low, high)` (stored or unstable), for inspection.
    pub fn entries(&self, low: Index, high: Index) -> Result<Vec<Entry>, StorageError> {
        self.raft.log.slice(low, high, u64::MAX)
    }

    /// The storage this node reads its durable log through.
    pub fn storage(&self) -> &S {
        self.raft.log.storage()
    }
}

#[cfg(test)]
impl<S> RawNode<S> {
    /// The state machine inside, for the rule-by-rule tests in `raft::tests`.
    pub(crate) fn raft(&self) -> &Raft<S> {
        &self.raft
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ConfState;
    use crate::storage::MemStorage;
    use bytes::Bytes;
    use rand::SeedableRng;

    fn start(config: Config, storage: MemStorage) -> Result<RawNode<MemStorage>, ConfigError> {
        RawNode::new(
            config,
            storage,
            Box::new(rand::rngs::StdRng::seed_from_u64(1)),
        )
    }

    #[test]
    fn restart_validates_the_applied_index_against_storage() {
        let storage = MemStorage::with_voters(&[1]);
        storage
            .append(&[
                Entry::normal(1, 1, Bytes::new()),
                Entry::normal(1, 2, Bytes::new()),
            ])
            .unwrap();
        storage.set_hard_state(HardState {
            term: 1,
            vote: Some(1),
            commit: 2,
        });
        let mut config = Config::new(1);
        config.applied = 3;
        assert!(matches!(
            start(config.clone(), storage.clone()),
            Err(ConfigError::AppliedBeyondCommit {
                applied: 3,
                commit: 2
            })
        ));
        storage
            .create_snapshot(2, ConfState::with_voters(&[1]), Bytes::new())
            .unwrap();
        storage.compact(2).unwrap();
        config.applied = 1;
        assert!(matches!(
            start(config.clone(), storage.clone()),
            Err(ConfigError::AppliedBeforeSnapshot {
                applied: 1,
                snapshot: 2
            })
        ));
        config.applied = 2;
        let node = start(config, storage).unwrap();
        assert_eq!(node.status().applied, 2);
        assert_eq!(node.status().last.index, 2);
    }

    #[test]
    fn a_node_without_membership_starts_and_waits() {
        let mut node = start(Config::new(4), MemStorage::new(ConfState::default())).unwrap();
        for _ in 0..100 {
            node.tick();
        }
        assert_eq!(node.role(), Role::Follower, "a non-member never campaigns");
        assert!(node.ready().persisted_messages.is_empty());
    }

    /// A vote request for term 5 from node 2 with an up-to-date log.
    fn vote_request() -> Message {
        Message {
            from: 2,
            to: 1,
            term: 5,
            body: crate::message::MessageBody::Vote(crate::message::VoteRequest {
                pre_vote: false,
                last: EntryId::default(),
                transfer: false,
            }),
        }
    }

    #[test]
    fn with_lease_reads_a_restarted_node_waits_an_election_timeout_before_voting() {
        // It may have granted a lease to a leader just before crashing.
        let mut config = Config::new(1);
        config.read_mode = crate::config::ReadMode::Lease;
        let mut node = start(config.clone(), MemStorage::with_voters(&[1, 2, 3])).unwrap();
        node.step(vote_request()).unwrap();
        assert_eq!(node.term(), 0, "ignored: the restart lease holds");
        for _ in 0..config.election_tick {
            node.tick();
        }
        let mut node_later = node;
        // Its own election timer may have fired by now; a fresh request at a
        // higher term is what matters.
        let mut request = vote_request();
        request.term = node_later.term() + 5;
        node_later.step(request).unwrap();
        assert_eq!(node_later.status().hard_state.vote, Some(2));

        // Without lease reads nothing holds a fresh node back.
        let mut safe = start(Config::new(1), MemStorage::with_voters(&[1, 2, 3])).unwrap();
        safe.step(vote_request()).unwrap();
        assert_eq!(safe.status().hard_state.vote, Some(2));
    }
}
