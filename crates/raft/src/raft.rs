//! The Raft state machine: roles, terms, votes, and the handling of each
//! message. This module holds elections and the follower side of replication;
//! the leader side lives in [`crate::replication`], and the other features in
//! their own modules: [`crate::snapshot`], [`crate::conf_change`],
//! [`crate::transfer`] and [`crate::read`].
//!
//! Section numbers (§5.x) refer to the extended Raft paper (Ongaro and
//! Ousterhout, "In Search of an Understandable Consensus Algorithm").

use std::collections::BTreeMap;

use rand::{Rng, RngCore};

use crate::config::{Config, ReadMode};
use crate::error::{ConfigError, ProposeError, StepError, StorageError};
use crate::forward::ForwardedProposal;
use crate::log::{AppendRefusal, RaftLog};
use crate::membership::Membership;
use crate::message::{
    Append, AppendResponse, EntryId, HardState, Heartbeat, HeartbeatResponse, Index, Message,
    MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term, VoteRequest, VoteResponse,
};
use crate::progress::Progress;
use crate::quorum::VoteResult;
use crate::read_only::{PendingRead, ReadOnly, ReadState};
use crate::storage::Storage;

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Polling voters with a pre-vote before starting a real election.
    PreCandidate,
    /// Campaigning for votes in its own term.
    Candidate,
    /// Leads the cluster in its term.
    Leader,
}

/// The volatile state a caller may want to observe: who leads, and our role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The leader this node knows of in its current term.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// One Raft node's protocol state. Driven through [`crate::RawNode`].
pub(crate) struct Raft<S> {
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) log: RaftLog<S>,
    pub(crate) config: Config,
    /// Voters (a joint configuration during a change) and learners, as of
    /// the last membership change handed out for applying.
    pub(crate) membership: Membership,
    /// The membership changed since the last Ready.
    pub(crate) membership_changed: bool,
    /// The index of the last membership change this leader proposed; a new
    /// one waits until it is applied.
    pub(crate) pending_conf_index: Index,
    /// Leader: the index of the first entry of its term.
    pub(crate) term_start_index: Index,
    /// The voter leadership is being handed to.
    pub(crate) lead_transferee: Option<NodeId>,
    /// TimeoutNow went to the transfer target.
    pub(crate) timeout_now_sent: bool,
    /// The leader's reads waiting for a quorum's confirmation.
    pub(crate) read_only: ReadOnly,
    /// Reads that arrived before this leader committed an entry of its term.
    pub(crate) reads_before_commit: Vec<PendingRead>,
    /// Reads ready to be served once applied, for the next Ready.
    pub(crate) read_states: Vec<ReadState>,
    /// Answers to proposals this node forwarded (or made through
    /// [`forward_proposal`](Self::forward_proposal) while leading).
    pub(crate) forwarded: Vec<ForwardedProposal>,
    /// The read round that opened the current CheckQuorum period: a quorum
    /// echoing it (or later) means the leader lease holds.
    pub(crate) lease_round: u64,
    /// Set once this leader sent TimeoutNow: a forced election may follow at
    /// any time, so no more lease reads in this term.
    pub(crate) lease_revoked: bool,
    /// A snapshot being received: its metadata and the next offset expected.
    pub(crate) receiving: Option<(SnapshotMeta, u64)>,
    /// Snapshot chunks for the caller to write, for the next Ready.
    pub(crate) snapshot_chunks: Vec<SnapshotChunk>,
    /// A received snapshot for the caller to install, for the next Ready.
    pub(crate) snapshot_to_install: Option<SnapshotMeta>,
    /// The leader's view of each member (itself included); kept on every role
    /// so that becoming leader only resets it.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)election.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Messages that may leave right away (the leader's appends and heartbeats).
    pub(crate) msgs: Vec<Message>,
    /// Messages that may leave only once the accompanying hard state and
    /// entries are durable (votes, acknowledgements).
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) election_elapsed: u32,
    /// Ticks since this node started, up to an election timeout. With lease
    /// reads, a restarted node must not vote before a leader's lease it may
    /// have granted before crashing has run out.
    pub(crate) ticks_since_start: u32,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) randomized_election_timeout: u32,
    rng: Box<dyn RngCore + Send>,
    /// Payload bytes the leader has appended but not yet handed out to apply.
    pub(crate) uncommitted_size: u64,
    /// Appends may need to go out at the next flush (set by anything that
    /// could change what a follower should receive).
    pub(crate) pending_flush: bool,
}

impl<S: Storage> Raft<S> {
    /// Restores a node from `storage`.
    pub(crate) fn new(
        config: Config,
        storage: S,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = storage.initial_state()?;
        let hs = state.hard_state;
        if config.applied > hs.commit {
            return Err(ConfigError::AppliedBeyondCommit {
                applied: config.applied,
                commit: hs.commit,
            });
        }
        let log = RaftLog::new(storage, hs.commit, config.applied)?;
        if config.applied < log.snapshot_index() {
            return Err(ConfigError::AppliedBeforeSnapshot {
                applied: config.applied,
                snapshot: log.snapshot_index(),
            });
        }
        if hs.commit > log.last_index() {
            return Err(StorageError::Other(format!(
                "hard state commit {} is beyond the last stored index {}",
                hs.commit,
                log.last_index()
            ))
            .into());
        }
        let mut raft = Raft {
            id: config.id,
            term: hs.term,
            vote: hs.vote,
            leader: None,
            role: Role::Follower,
            log,
            config,
            membership: Membership::from_conf_state(&state.conf_state),
            membership_changed: false,
            pending_conf_index: 0,
            term_start_index: 0,
            lead_transferee: None,
            timeout_now_sent: false,
            read_only: ReadOnly::default(),
            reads_before_commit: Vec::new(),
            read_states: Vec::new(),
            forwarded: Vec::new(),
            lease_round: 0,
            lease_revoked: false,
            receiving: None,
            snapshot_chunks: Vec::new(),
            snapshot_to_install: None,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            election_elapsed: 0,
            ticks_since_start: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng,
            uncommitted_size: 0,
            pending_flush: false,
        };
        raft.become_follower(hs.term, None);
        raft.vote = hs.vote;
        Ok(raft)
    }

    /// The state that must be durable.
    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed(),
        }
    }

    /// The state worth observing.
    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    /// Whether this node may campaign: it must be a voter.
    pub(crate) fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// A fresh progress entry for a peer.
    pub(crate) fn new_progress(&self) -> Progress {
        Progress::new(
            self.log.last_index() + 1,
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        )
    }

    // ----- role transitions -------------------------------------------------

    /// Resets the per-term state, moving to `term` (forgetting the vote if the
    /// term changes).
    fn reset(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout =
            self.config.election_tick + self.rng.random_range(0..self.config.election_tick);
        self.votes.clear();
        self.uncommitted_size = 0;
        self.lead_transferee = None;
        self.timeout_now_sent = false;
        self.read_only.reset();
        self.reads_before_commit.clear();
        self.lease_round = 0;
        self.lease_revoked = false;
        let persisted = self.log.persisted_index();
        self.progress = self
            .membership
            .members()
            .into_iter()
            .map(|id| {
                let mut pr = self.new_progress();
                if id == self.id {
                    pr.maybe_update(persisted);
                }
                (id, pr)
            })
            .collect();
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
        tracing::debug!(id = self.id, term, ?leader, "became follower");
    }

    fn become_pre_candidate(&mut self) {
        // A pre-candidate keeps its term and vote: nothing durable changes
        // until it knows it could win (Raft thesis §9.6).
        self.votes.clear();
        self.leader = None;
        self.role = Role::PreCandidate;
        tracing::debug!(id = self.id, term = self.term, "became pre-candidate");
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        tracing::debug!(id = self.id, term = self.term, "became candidate");
    }

    pub(crate) fn become_leader(&mut self) {
        self.reset(self.term);
        self.leader = Some(self.id);
        self.role = Role::Leader;
        let persisted = self.log.persisted_index();
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.maybe_update(persisted);
            me.become_replicate();
        }
        // Followers learn of us, and entries of earlier terms become
        // committable, through an entry of our own term (§5.4.2).
        let noop = crate::message::Entry::normal(
            self.term,
            self.log.last_index() + 1,
            bytes::Bytes::new(),
        );
        self.log.append(&[noop]);
        // Whether a membership change is still unapplied is unknown: assume
        // everything in the log may be one, and wait until it is applied.
        self.pending_conf_index = self.log.last_index();
        self.term_start_index = self.log.last_index();
        self.pending_flush = true;
        tracing::debug!(id = self.id, term = self.term, "became leader");
    }

    // ----- elections ------------------------------------------------------------

    /// Starts an election now (with a pre-vote first, if configured).
    pub(crate) fn hup(&mut self) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.term == Term::MAX {
            // Only a broken peer gets us here; a next term would overflow.
            tracing::error!(id = self.id, "term space exhausted, cannot campaign");
            return;
        }
        self.campaign(self.config.pre_vote, false);
    }

    /// Campaigns; `transfer` marks an election asked for by the leader
    /// (TimeoutNow), which skips the pre-vote and the voters' leader lease.
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let campaign_term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        if self.record_vote(self.id, true) == VoteResult::Won {
            // A cluster of one wins at once.
            return self.won_election(pre_vote, transfer);
        }
        let last = self.log.last_id();
        let peers: Vec<NodeId> = self
            .membership
            .voters
            .ids()
            .into_iter()
            .filter(|&id| id != self.id)
            .collect();
        for to in peers {
            self.send_after_persist(
                to,
                campaign_term,
                MessageBody::Vote(VoteRequest {
                    pre_vote,
                    last,
                    transfer,
                }),
            );
        }
    }

    fn won_election(&mut self, pre_vote: bool, transfer: bool) {
        if pre_vote {
            self.campaign(false, transfer);
        } else {
            self.become_leader();
        }
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        let votes = &self.votes;
        self.membership
            .voters
            .vote_result(|id| votes.get(&id).copied())
    }

    // ----- ticks ----------------------------------------------------------------

    /// Advances logical time by one tick.
    pub(crate) fn tick(&mut self) {
        self.ticks_since_start = (self.ticks_since_start + 1).min(self.config.election_tick);
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                self.election_elapsed = 0;
                self.hup();
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if let Some(target) = self.lead_transferee.take() {
                tracing::info!(
                    id = self.id,
                    target,
                    "leadership transfer timed out, aborted"
                );
            }
            // A new CheckQuorum period, and a new lease: only answers to
            // heartbeats sent from now on extend it.
            self.lease_round = self.read_only.new_round();
            if self.config.check_quorum && !self.quorum_recently_active() {
                tracing::info!(
                    id = self.id,
                    term = self.term,
                    "lost contact with a quorum, stepping down"
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// CheckQuorum: whether a quorum was heard from since the last check; then
    /// starts the next period.
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.id;
        let progress = &self.progress;
        let result = self
            .membership
            .voters
            .vote_result(|id| Some(id == me || progress.get(&id).is_some_and(|p| p.recent_active)));
        for (id, pr) in self.progress.iter_mut() {
            pr.was_active = pr.recent_active;
            pr.recent_active = *id == me;
        }
        result == VoteResult::Won
    }

    // ----- messages -------------------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    pub(crate) fn send_after_persist(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs_after_persist.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn invalid(&self, m: &Message, reason: impl Into<String>) -> StepError {
        StepError::InvalidMessage {
            from: m.from,
            kind: m.kind_name(),
            term: m.term,
            reason: reason.into(),
        }
    }

    /// Checks what can be checked about a message without any state.
    fn validate(&self, m: &Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient {
                to: m.to,
                me: self.id,
            });
        }
        if m.from == self.id || m.from == 0 {
            return Err(self.invalid(m, "bad sender id"));
        }
        if m.needs_known_sender() && !self.progress.contains_key(&m.from) {
            return Err(StepError::UnknownPeer(m.from));
        }
        if m.term == 0 {
            return Err(self.invalid(m, "term 0 is never used by a live peer"));
        }
        match &m.body {
            MessageBody::Append(a) => {
                if a.prev_term > m.term {
                    return Err(self.invalid(m, "prev_term above the message term"));
                }
                if a.prev_index == 0 && a.prev_term != 0 {
                    return Err(self.invalid(m, "index 0 has term 0"));
                }
                let mut prev = EntryId {
                    term: a.prev_term,
                    index: a.prev_index,
                };
                for e in &a.entries {
                    if prev.index.checked_add(1) != Some(e.index) {
                        return Err(self.invalid(
                            m,
                            format!("entry index {} follows {}", e.index, prev.index),
                        ));
                    }
                    if e.term < prev.term || e.term > m.term {
                        return Err(self.invalid(m, format!("entry term {} out of order", e.term)));
                    }
                    prev = e.id();
                }
            }
            MessageBody::Propose { data, .. } if data.is_empty() => {
                // Empty entries are leaders' no-ops, never a command.
                return Err(self.invalid(m, "an empty command"));
            }
            MessageBody::Vote(v)
                if v.last.term > m.term || (v.last.index == 0) != (v.last.term == 0) =>
            {
                return Err(self.invalid(m, "last log entry inconsistent with the term"));
            }
            MessageBody::Snapshot(c)
                if c.offset
                    .checked_add(c.data.len() as u64)
                    .is_none_or(|end| end > c.meta.size) =>
            {
                return Err(self.invalid(
                    m,
                    format!(
                        "chunk at {} runs past the snapshot size {}",
                        c.offset, c.meta.size
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Handles one message from a peer.
    pub(crate) fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.validate(&m)?;
        if m.term > self.term {
            match &m.body {
                MessageBody::Vote(v) => {
                    let heard_from_leader =
                        self.leader.is_some() && self.election_elapsed < self.config.election_tick;
                    let just_started = self.config.read_mode == ReadMode::Lease
                        && self.ticks_since_start < self.config.election_tick;
                    let in_lease = self.config.check_quorum
                        && !v.transfer
                        && (heard_from_leader || just_started);
                    if in_lease {
                        // We heard from a live leader within the election
                        // timeout: this candidate is disruptive (thesis §4.2.3).
                        tracing::debug!(
                            id = self.id,
                            from = m.from,
                            "ignoring vote request within leader lease"
                        );
                        return Ok(());
                    }
                    if !v.pre_vote {
                        self.become_follower(m.term, None);
                    }
                }
                // A granted pre-vote answers our own future term: keep it for the tally.
                MessageBody::VoteResponse(r) if r.pre_vote && r.granted => {}
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::Snapshot(_)
                | MessageBody::TimeoutNow => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::Append(_) | MessageBody::Heartbeat(_) | MessageBody::Snapshot(_)
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader cut off from the cluster would otherwise
                    // never learn the new term; tell it so it steps down.
                    let body = MessageBody::HeartbeatResponse(HeartbeatResponse::default());
                    self.send_after_persist(m.from, self.term, body);
                }
                MessageBody::Vote(v) if v.pre_vote => {
                    let body = MessageBody::VoteResponse(VoteResponse {
                        pre_vote: true,
                        granted: false,
                    });
                    self.send_after_persist(m.from, self.term, body);
                }
                MessageBody::Propose { request, .. } => {
                    // Refused, so the proposer knows it was never appended
                    // (and learns our term from the answer).
                    let result = Err(ProposeError::NotLeader {
                        leader: self.leader,
                    });
                    let request = *request;
                    self.send(m.from, MessageBody::ProposeResponse { request, result });
                }
                _ => {}
            }
            return Ok(());
        }

        match &m.body {
            MessageBody::Vote(v) => {
                self.handle_vote_request(&m, v);
                return Ok(());
            }
            MessageBody::TimeoutNow => {
                if self.role != Role::Leader && self.promotable() {
                    tracing::info!(
                        id = self.id,
                        from = m.from,
                        "leadership handed over, campaigning"
                    );
                    self.campaign(false, true);
                }
                return Ok(());
            }
            MessageBody::ReadIndexResponse { request, index } => {
                self.read_states.push(ReadState {
                    request: *request,
                    index: *index,
                });
                return Ok(());
            }
            MessageBody::ProposeResponse { request, result } => {
                self.forwarded_answered(*request, result.clone());
                return Ok(());
            }
            _ => {}
        }
        if let MessageBody::Propose { request, data } = m.body {
            self.handle_forwarded_proposal(m.from, request, data);
            return Ok(());
        }
        match self.role {
            Role::Leader => self.step_leader(m),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m),
            Role::Follower => self.step_follower(m),
        }
    }

    /// RequestVote receiver rules (§5.2, §5.4.1).
    fn handle_vote_request(&mut self, m: &Message, v: &VoteRequest) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (v.pre_vote && m.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(v.last);
        // A granted vote carries the candidate's term so that a pre-candidate
        // can count it; a refusal carries ours so that a stale candidate learns.
        let term = if granted { m.term } else { self.term };
        if granted && !v.pre_vote {
            self.election_elapsed = 0;
            self.vote = Some(m.from);
        }
        tracing::debug!(
            id = self.id,
            from = m.from,
            pre_vote = v.pre_vote,
            granted,
            "vote request"
        );
        let body = MessageBody::VoteResponse(VoteResponse {
            pre_vote: v.pre_vote,
            granted,
        });
        self.send_after_persist(m.from, term, body);
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append(a) => {
                self.become_follower(m.term, Some(m.from));
                self.handle_append(m.from, a)
            }
            MessageBody::Heartbeat(h) => {
                self.become_follower(m.term, Some(m.from));
                self.handle_heartbeat(m.from, h)
            }
            MessageBody::Snapshot(chunk) => {
                self.become_follower(m.term, Some(m.from));
                self.handle_snapshot_chunk(m.from, chunk)
            }
            MessageBody::VoteResponse(r) => {
                let pre = self.role == Role::PreCandidate;
                if r.pre_vote != pre {
                    return Ok(()); // An answer to an earlier campaign.
                }
                match self.record_vote(m.from, r.granted) {
                    VoteResult::Won => self.won_election(pre, false),
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append(a) => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_append(m.from, a)
            }
            MessageBody::Heartbeat(h) => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_heartbeat(m.from, h)
            }
            MessageBody::Snapshot(chunk) => {
                self.election_elapsed = 0;
                self.leader = Some(m.from);
                self.handle_snapshot_chunk(m.from, chunk)
            }
            _ => Ok(()),
        }
    }

    /// AppendEntries receiver rules (§5.3), with a conflict hint on refusal.
    fn handle_append(&mut self, from: NodeId, a: Append) -> Result<(), StepError> {
        let committed = self.log.committed();
        let term = self.term;
        let overwrites = |index| StepError::InvalidMessage {
            from,
            kind: "Append",
            term,
            reason: format!("would overwrite committed entry {index} (commit {committed})"),
        };
        if a.prev_index < committed {
            // Everything up to our commit index is known to match the leader
            // (§5.4.3), so a leader contradicting it is broken.
            let contradicted = a
                .entries
                .iter()
                .take_while(|e| e.index <= committed)
                .find(|e| matches!(self.log.term(e.index), Ok(t) if t != e.term));
            if let Some(e) = contradicted {
                return Err(overwrites(e.index));
            }
            let body = MessageBody::AppendResponse(AppendResponse::Accepted { index: committed });
            self.send_after_persist(from, self.term, body);
            return Ok(());
        }
        let prev = EntryId {
            term: a.prev_term,
            index: a.prev_index,
        };
        let response = match self.log.maybe_append(prev, a.commit, &a.entries) {
            Ok(index) => AppendResponse::Accepted { index },
            Err(AppendRefusal::Mismatch) => {
                // Point the leader at the last entry that can possibly match:
                // no later than our log's end, and of a term no greater than
                // prev_term. The leader then skips whole terms per round trip.
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(a.prev_index.min(self.log.last_index()), a.prev_term);
                AppendResponse::Rejected {
                    rejected_index: a.prev_index,
                    hint_index,
                    hint_term,
                }
            }
            Err(AppendRefusal::OverwritesCommitted(index)) => return Err(overwrites(index)),
            Err(AppendRefusal::Storage(e)) => return Err(e.into()),
        };
        self.send_after_persist(from, self.term, MessageBody::AppendResponse(response));
        Ok(())
    }

    fn handle_heartbeat(&mut self, from: NodeId, h: Heartbeat) -> Result<(), StepError> {
        if h.commit > self.log.last_index() {
            return Err(StepError::InvalidMessage {
                from,
                kind: "Heartbeat",
                term: self.term,
                reason: format!(
                    "commit {} beyond our last index {}",
                    h.commit,
                    self.log.last_index()
                ),
            });
        }
        let body = MessageBody::HeartbeatResponse(HeartbeatResponse {
            read_round: h.read_round,
        });
        self.send_after_persist(from, self.term, body);
        self.log.commit_to(h.commit);
        Ok(())
    }

    /// The caller made the log durable up to `id`.
    pub(crate) fn on_persisted(&mut self, id: EntryId) {
        self.log.stable_to(id);
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted_index();
        let updated = self
            .progress
            .get_mut(&self.id)
            .is_some_and(|me| me.maybe_update(persisted));
        if updated && self.maybe_commit() {
            self.pending_flush = true;
        }
    }

    /// Whether the leader has committed an entry of its own term, which makes
    /// its commit index at least that of every earlier leader (§8).
    pub(crate) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed()) == Ok(self.term)
    }

    /// Whether something waits to be handed to the caller.
    pub(crate) fn has_pending_output(&self) -> bool {
        (self.pending_flush && self.role == Role::Leader)
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.read_states.is_empty()
            || !self.forwarded.is_empty()
            || !self.snapshot_chunks.is_empty()
            || self.snapshot_to_install.is_some()
            || self.membership_changed
    }
}

#[cfg(test)]
mod tests;
