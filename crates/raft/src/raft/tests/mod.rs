//! Rule-by-rule tests of the Raft state machine.
//!
//! Each test names the rule it checks; section numbers refer to the extended
//! Raft paper (Ongaro and Ousterhout, "In Search of an Understandable Consensus
//! Algorithm"), and "thesis" to Ongaro's dissertation (PreVote, CheckQuorum).
//!
//! The harness (this file) is a [`Network`] of [`RawNode`]s over
//! [`MemStorage`]: every `Ready` is persisted to the node's storage before its
//! messages are queued, the way [`Ready`] documents it (snapshot chunks to a
//! per-node staging buffer, a received snapshot installed with
//! `MemStorage::apply_snapshot`, entries and hard state appended, committed
//! entries applied, the membership persisted with `set_conf_state`), and
//! messages are delivered in memory, round by round, through optional link
//! cuts and a filter that may drop or rewrite them. Messages to a node that
//! does not run are lost; a node can crash and restart from its storage.
//!
//! One file per topic: `election`, `replication`, `bad_input`, and for the
//! features of the thesis beyond the paper `snapshot` (§5), `membership`
//! (§4.3, learners), `transfer` (§3.10) and `reads` (§6.4).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use rand::SeedableRng;

use super::{Raft, Role};
use crate::config::Config;
use crate::config::ReadMode;
use crate::error::{ProposeError, ReadIndexError, StepError, TransferError};
use crate::forward::ForwardedProposal;
use crate::membership::{ConfChange, ConfChangeError, ConfChangeOp};
use crate::message::{
    Append, AppendResponse, ConfState, Entry, EntryId, EntryKind, HardState, Heartbeat,
    HeartbeatResponse, Index, Message, MessageBody, NodeId, SnapshotChunk, SnapshotMeta, Term,
    VoteRequest, VoteResponse, ENTRY_OVERHEAD_BYTES,
};
use crate::progress::ProgressState;
use crate::raw_node::{RawNode, Ready, Status};
use crate::read_only::ReadState;
use crate::storage::MemStorage;
use crate::storage::Storage;

use AppendResponse::{Accepted, Rejected};

const ROLES: [Role; 4] = [
    Role::Follower,
    Role::PreCandidate,
    Role::Candidate,
    Role::Leader,
];

/// The default election timeout, in ticks.
fn election_tick() -> u32 {
    Config::new(1).election_tick
}

// ----- harness -------------------------------------------------------------------

/// A node over `storage` whose randomness comes from `seed`.
fn new_node(config: Config, storage: MemStorage, seed: u64) -> RawNode<MemStorage> {
    let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
    RawNode::new(config, storage, rng).expect("valid test configuration")
}

/// Entries with the given terms, the first at index `first`.
fn ents(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .zip(first..)
        .map(|(&term, index)| Entry::normal(term, index, Bytes::new()))
        .collect()
}

fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// An append after `prev` = (index, term) of entries with the given terms.
fn append(prev: (Index, Term), terms: &[Term], commit: Index) -> MessageBody {
    MessageBody::Append(Append {
        prev_index: prev.0,
        prev_term: prev.1,
        entries: ents(prev.0 + 1, terms),
        commit,
    })
}

/// A (pre-)vote request from a candidate whose log ends at `last` = (index, term).
fn vote(last: (Index, Term), pre_vote: bool) -> MessageBody {
    MessageBody::Vote(VoteRequest {
        pre_vote,
        last: EntryId {
            index: last.0,
            term: last.1,
        },
        transfer: false,
    })
}

fn vote_response(pre_vote: bool, granted: bool) -> MessageBody {
    MessageBody::VoteResponse(VoteResponse { pre_vote, granted })
}

fn heartbeat(commit: Index) -> MessageBody {
    MessageBody::Heartbeat(Heartbeat {
        commit,
        read_round: 0,
    })
}

/// The answer a Ready carries to a single request: it must wait for persistence.
fn answer(rd: &Ready) -> &MessageBody {
    assert!(
        rd.messages.is_empty(),
        "answers never leave before persisting"
    );
    match rd.persisted_messages.as_slice() {
        [m] => &m.body,
        other => panic!("expected exactly one answer, got {other:?}"),
    }
}

fn vote_granted(rd: &Ready) -> bool {
    match answer(rd) {
        MessageBody::VoteResponse(r) => r.granted,
        other => panic!("expected a vote response, got {other:?}"),
    }
}

fn append_answer(rd: &Ready) -> AppendResponse {
    match answer(rd) {
        MessageBody::AppendResponse(r) => r.clone(),
        other => panic!("expected an append response, got {other:?}"),
    }
}

struct Node {
    raw: RawNode<MemStorage>,
    /// The node's "disk": written from each Ready, read by the node.
    storage: MemStorage,
    /// The configuration it was started with (for restarts).
    config: Config,
    applied: Vec<Entry>,
    /// The index the state machine has reached (entries or a snapshot).
    applied_index: Index,
    /// The snapshot being received: chunks are written here in order.
    staging: Vec<u8>,
    /// Every snapshot installed, with its data.
    installed: Vec<(SnapshotMeta, Bytes)>,
    /// Every membership a Ready reported.
    conf_states: Vec<ConfState>,
    /// Every read a Ready released.
    read_states: Vec<ReadState>,
    /// Every answer to a forwarded proposal a Ready handed out.
    forwarded: Vec<ForwardedProposal>,
}

impl Node {
    fn start(config: Config, storage: MemStorage) -> Self {
        let raw = new_node(config.clone(), storage.clone(), config.id);
        Node {
            raw,
            storage,
            config,
            applied: Vec::new(),
            applied_index: 0,
            staging: Vec::new(),
            installed: Vec::new(),
            conf_states: Vec::new(),
            read_states: Vec::new(),
            forwarded: Vec::new(),
        }
    }
}

/// Decides whether a message in transit is delivered; it may also rewrite it.
type Filter = Box<dyn FnMut(&mut Message) -> bool>;

/// Everything a refused message must leave untouched.
type Snapshot = (
    Status,
    Vec<Term>,
    Vec<(NodeId, Index, Index, ProgressState)>,
);

struct Network {
    nodes: BTreeMap<NodeId, Node>,
    /// Messages in transit.
    queue: VecDeque<Message>,
    /// Every message any node emitted, delivered or not.
    sent: Vec<Message>,
    /// Directed links (from, to) that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    filter: Option<Filter>,
}

impl Network {
    /// `n` fresh voters with the default configuration.
    fn new(n: usize) -> Self {
        Self::with_config(n, |_| {})
    }

    fn with_config(n: usize, tweak: impl Fn(&mut Config)) -> Self {
        Self::with_logs(&vec![(0, &[][..]); n], tweak)
    }

    /// Node `i + 1` restarts at hard-state term `logs[i].0` with persisted
    /// entries of terms `logs[i].1` (nothing committed, no vote).
    fn with_logs(logs: &[(Term, &[Term])], tweak: impl Fn(&mut Config)) -> Self {
        let voters: Vec<NodeId> = (1..=logs.len() as u64).collect();
        let nodes = voters
            .iter()
            .zip(logs)
            .map(|(&id, &(term, log))| {
                let storage = MemStorage::with_voters(&voters);
                storage.append(&ents(1, log)).expect("a fresh log");
                storage.set_hard_state(HardState {
                    term,
                    vote: None,
                    commit: 0,
                });
                let mut config = Config::new(id);
                tweak(&mut config);
                (id, Node::start(config, storage))
            })
            .collect();
        Network {
            nodes,
            queue: VecDeque::new(),
            sent: Vec::new(),
            cut: BTreeSet::new(),
            filter: None,
        }
    }

    fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn raw(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        &mut self.nodes.get_mut(&id).expect("no such node").raw
    }

    fn raft(&self, id: NodeId) -> &Raft<MemStorage> {
        self.nodes[&id].raw.raft()
    }

    fn role(&self, id: NodeId) -> Role {
        self.raft(id).role
    }

    fn term(&self, id: NodeId) -> Term {
        self.raft(id).term
    }

    fn commit(&self, id: NodeId) -> Index {
        self.raft(id).log.committed()
    }

    /// The terms of node `id`'s log, from index 1.
    fn log(&self, id: NodeId) -> Vec<Term> {
        let raw = &self.nodes[&id].raw;
        let last = raw.status().last.index;
        let entries = raw.entries(1, last + 1).expect("the whole log is readable");
        entries.iter().map(|e| e.term).collect()
    }

    fn snapshot(&self, id: NodeId) -> Snapshot {
        let raft = self.raft(id);
        let progress = raft
            .progress
            .iter()
            .map(|(&id, pr)| (id, pr.matched, pr.next, pr.state))
            .collect();
        (self.nodes[&id].raw.status(), self.log(id), progress)
    }

    /// Makes `rd` durable on node `id` and applies its committed entries, in
    /// the order the [`Ready`] documentation gives.
    fn persist(&mut self, id: NodeId, rd: &Ready) {
        let node = self.nodes.get_mut(&id).expect("no such node");
        for chunk in &rd.snapshot_chunks {
            if chunk.offset == 0 {
                node.staging.clear();
            }
            assert_eq!(
                chunk.offset,
                node.staging.len() as u64,
                "node {id}: snapshot chunks are handed out in order"
            );
            node.staging.extend_from_slice(&chunk.data);
        }
        if let Some(meta) = &rd.snapshot {
            let data = Bytes::from(std::mem::take(&mut node.staging));
            assert_eq!(
                data.len() as u64,
                meta.size,
                "node {id}: the whole snapshot"
            );
            node.storage.apply_snapshot(meta.clone(), data.clone());
            node.applied_index = meta.last.index;
            node.installed.push((meta.clone(), data));
        }
        node.storage
            .append(&rd.entries)
            .expect("Ready entries extend the stored log");
        if let Some(hs) = rd.hard_state {
            node.storage.set_hard_state(hs);
        }
        if let Some(last) = rd.committed_entries.last() {
            assert_eq!(
                rd.committed_entries[0].index,
                node.applied_index + 1,
                "node {id}: committed entries are applied in order, without gaps"
            );
            node.applied_index = last.index;
        }
        node.applied.extend(rd.committed_entries.iter().cloned());
        if let Some(cs) = &rd.conf_state {
            node.storage.set_conf_state(cs.clone());
            node.conf_states.push(cs.clone());
        }
        node.read_states.extend(rd.read_states.iter().copied());
        node.forwarded.extend(rd.forwarded.iter().cloned());
    }

    /// Adds node `id`, starting from an empty log whose membership is
    /// `bootstrap` (the cluster's initial one, so that replaying the log's
    /// membership changes from index 1 gives the current one).
    fn add_node(&mut self, id: NodeId, bootstrap: &[NodeId], tweak: impl Fn(&mut Config)) {
        let mut config = Config::new(id);
        tweak(&mut config);
        let node = Node::start(config, MemStorage::with_voters(bootstrap));
        assert!(self.nodes.insert(id, node).is_none(), "node {id} exists");
    }

    /// Crashes node `id` and starts it again from its storage: everything not
    /// persisted (a snapshot half received, the leader it knew) is lost.
    fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("no such node");
        let mut config = node.config.clone();
        config.applied = node.applied_index;
        node.raw = new_node(config, node.storage.clone(), id + 100);
        node.staging.clear();
        self.queue.retain(|m| m.to != id);
    }

    /// The membership node `id` is in, as its core sees it.
    fn conf(&self, id: NodeId) -> ConfState {
        self.nodes[&id].raw.conf_state()
    }

    /// The snapshot chunks sent to `to`, as (last index, offset, length).
    fn chunks_to(&self, to: NodeId) -> Vec<(Index, u64, usize)> {
        self.sent
            .iter()
            .filter(|m| m.to == to)
            .filter_map(|m| match &m.body {
                MessageBody::Snapshot(c) => Some((c.meta.last.index, c.offset, c.data.len())),
                _ => None,
            })
            .collect()
    }

    /// Proposes entries on leader `id` until its log ends at `last`, and settles.
    fn fill_to(&mut self, id: NodeId, last: Index) {
        while self.raw(id).status().last.index < last {
            self.propose(id, 8).expect("the leader takes proposals");
            self.process_all();
        }
        self.stabilize();
    }

    /// Node `id` takes a snapshot of what it applied, with `data` as the
    /// state machine's image, and compacts its log up to there.
    fn compact(&mut self, id: NodeId, data: &[u8]) -> SnapshotMeta {
        let node = &self.nodes[&id];
        let index = node.applied_index;
        let cs = node.storage.initial_state().unwrap().conf_state;
        let meta = node
            .storage
            .create_snapshot(index, cs, Bytes::copy_from_slice(data))
            .expect("the applied index is in the log");
        node.storage.compact(index).expect("the snapshot covers it");
        meta
    }

    /// Takes node `id`'s Ready, persists and applies it, and advances. The
    /// messages are returned, not sent.
    fn ready(&mut self, id: NodeId) -> Ready {
        let rd = self.raw(id).ready();
        self.persist(id, &rd);
        self.raw(id).advance();
        rd
    }

    /// Handles node `id`'s Ready and puts its messages on the wire.
    fn process(&mut self, id: NodeId) {
        let rd = self.ready(id);
        for mut m in rd.messages.into_iter().chain(rd.persisted_messages) {
            self.sent.push(m.clone());
            let delivered = !self.cut.contains(&(m.from, m.to))
                && self.filter.as_mut().is_none_or(|keep| keep(&mut m));
            if delivered {
                self.queue.push_back(m);
            }
        }
    }

    /// Processes Readys until no node has one.
    fn process_all(&mut self) {
        for _ in 0..100 {
            let Some(id) = self.ids().into_iter().find(|&id| self.raw(id).has_ready()) else {
                return;
            };
            self.process(id);
        }
        panic!("a node keeps producing Readys");
    }

    fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.raw(m.to).step(m)
    }

    /// Delivers everything in transit, then handles the Readys that caused.
    fn deliver_round(&mut self) {
        for m in std::mem::take(&mut self.queue) {
            if !self.nodes.contains_key(&m.to) {
                continue; // A member that does not run (yet): lost.
            }
            let shown = format!("{m:?}");
            match self.step(m) {
                Ok(()) => {}
                // A late answer from a member removed meanwhile.
                Err(StepError::UnknownPeer(_)) => {}
                Err(e) => panic!("{shown} was refused: {e}"),
            }
        }
        self.process_all();
    }

    /// Runs until nothing is in transit and no node has work.
    fn stabilize(&mut self) {
        self.process_all();
        for _ in 0..1000 {
            if self.queue.is_empty() {
                return;
            }
            self.deliver_round();
        }
        panic!("the network does not settle");
    }

    /// Cuts `id` off from every other node, both ways.
    fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link and removes the filter.
    fn heal(&mut self) {
        self.cut.clear();
        self.filter = None;
    }

    /// `n` times: ticks each of `ids`, then lets the network settle.
    fn tick(&mut self, ids: &[NodeId], n: u32) {
        for _ in 0..n {
            for &id in ids {
                self.raw(id).tick();
            }
            self.stabilize();
        }
    }

    fn campaign(&mut self, id: NodeId) {
        self.raw(id).campaign();
        self.stabilize();
    }

    fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        assert_eq!(self.role(id), Role::Leader, "node {id} should have won");
    }

    /// Proposes a payload of `size` bytes on node `id` (not yet processed).
    fn propose(&mut self, id: NodeId, size: usize) -> Result<EntryId, ProposeError> {
        self.raw(id).propose(Bytes::from(vec![7; size]))
    }

    /// The entry counts of the appends carrying entries sent to `to`.
    fn entry_appends_to(&self, to: NodeId) -> Vec<usize> {
        self.sent
            .iter()
            .filter(|m| m.to == to)
            .filter_map(|m| match &m.body {
                MessageBody::Append(a) if !a.entries.is_empty() => Some(a.entries.len()),
                _ => None,
            })
            .collect()
    }
}

/// A three-node cluster with node 1 leading and every follower in replicate state.
fn stable_cluster(tweak: impl Fn(&mut Config)) -> Network {
    let mut net = Network::with_config(3, tweak);
    net.elect(1);
    for id in [2, 3] {
        assert_eq!(net.raft(1).progress[&id].state, ProgressState::Replicate);
    }
    net.sent.clear();
    net
}

/// A three-node cluster (every node restarted at term 5 with log terms
/// [1, 2, 3]) in which node 1 plays `role`, with nothing in transit.
fn in_role(role: Role, tweak: impl Fn(&mut Config)) -> Network {
    let mut net = Network::with_logs(&[(5, &[1, 2, 3][..]); 3], |c| {
        c.pre_vote = true;
        tweak(c);
    });
    match role {
        Role::Follower => net.elect(2),
        Role::PreCandidate => {
            net.raw(1).campaign();
            net.process(1);
            net.queue.clear();
        }
        Role::Candidate => {
            // Win the pre-vote, but lose the real vote requests.
            net.filter = Some(Box::new(
                |m| !matches!(&m.body, MessageBody::Vote(v) if !v.pre_vote),
            ));
            net.campaign(1);
            net.heal();
        }
        Role::Leader => net.elect(1),
    }
    assert_eq!(net.role(1), role);
    net
}

/// One message of every kind, with contents any node accepts.
fn every_kind() -> Vec<MessageBody> {
    vec![
        append((0, 0), &[], 0),
        MessageBody::AppendResponse(Accepted { index: 0 }),
        heartbeat(0),
        MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
        vote((0, 0), false),
        vote((0, 0), true),
        vote_response(false, false),
        vote_response(true, false),
        MessageBody::Propose {
            request: 1,
            data: Bytes::from_static(b"x"),
        },
        MessageBody::ProposeResponse {
            request: 1,
            result: Err(ProposeError::NotLeader { leader: None }),
        },
    ]
}

mod bad_input;
mod election;
mod forward;
mod membership;
mod reads;
mod replication;
mod snapshot;
mod transfer;
