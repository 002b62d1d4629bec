//! Rule-by-rule tests of the Raft state machine.
//!
//! Each test names the rule it checks; section numbers refer to the extended
//! Raft paper (Ongaro and Ousterhout, "In Search of an Understandable Consensus
//! Algorithm"), and "thesis" to Ongaro's dissertation (PreVote, CheckQuorum).
//!
//! The harness is a [`Network`] of [`RawNode`]s over [`MemStorage`]: every
//! `Ready` is persisted to the node's storage before its messages are queued,
//! and messages are delivered in memory, round by round, through optional link
//! cuts and a filter that may drop or rewrite them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use rand::SeedableRng;

use super::{Raft, Role};
use crate::config::Config;
use crate::error::{ProposeError, StepError};
use crate::message::{
    Append, AppendResponse, Entry, EntryId, HardState, Heartbeat, HeartbeatResponse, Index,
    Message, MessageBody, NodeId, Term, VoteRequest, VoteResponse, ENTRY_OVERHEAD_BYTES,
};
use crate::progress::ProgressState;
use crate::raw_node::{RawNode, Ready, Status};
use crate::storage::MemStorage;

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
    applied: Vec<Entry>,
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
                let raw = new_node(config, storage.clone(), id);
                let node = Node {
                    raw,
                    storage,
                    applied: Vec::new(),
                };
                (id, node)
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

    /// Makes `rd` durable on node `id` and applies its committed entries.
    fn persist(&mut self, id: NodeId, rd: &Ready) {
        let node = self.nodes.get_mut(&id).expect("no such node");
        node.storage
            .append(&rd.entries)
            .expect("Ready entries extend the stored log");
        if let Some(hs) = rd.hard_state {
            node.storage.set_hard_state(hs);
        }
        node.applied.extend(rd.committed_entries.iter().cloned());
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
            let shown = format!("{m:?}");
            if let Err(e) = self.step(m) {
                panic!("{shown} was refused: {e}");
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
    ]
}

// ----- §5.1 terms ----------------------------------------------------------------

/// §5.1: "If a server receives a request or response with a term greater than
/// its own, it updates its term and converts to follower" — whatever the
/// message kind and whatever its role. The new term is persisted. (A pre-vote
/// request is the one exception; see the PreVote tests.)
#[test]
fn higher_term_in_any_message_makes_the_receiver_a_follower_in_that_term() {
    for role in ROLES {
        for body in every_kind() {
            if matches!(&body, MessageBody::Vote(v) if v.pre_vote) {
                continue;
            }
            // Without CheckQuorum, so that no leader lease hides vote requests.
            let mut net = in_role(role, |c| c.check_quorum = false);
            let term = net.term(1) + 1;
            let from_leader = matches!(body, MessageBody::Append(_) | MessageBody::Heartbeat(_));
            let m = msg(2, 1, term, body);
            let what = format!("{role:?} given a {}", m.kind_name());
            net.step(m).unwrap();
            assert_eq!((net.role(1), net.term(1)), (Role::Follower, term), "{what}");
            assert_eq!(net.raft(1).leader, from_leader.then_some(2), "{what}");
            let hs = net.ready(1).hard_state.expect("the new term is persisted");
            assert_eq!(hs.term, term, "{what}");
        }
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects
/// the request." Nothing changes. A stale leader's Append or Heartbeat, and a
/// stale pre-vote, are answered with the current term so that the sender
/// catches up; everything else stale is dropped silently.
#[test]
fn stale_term_messages_change_nothing_and_stale_leaders_hear_the_current_term() {
    for role in ROLES {
        for body in every_kind() {
            let mut net = in_role(role, |_| {});
            let term = net.term(1);
            let expected = match &body {
                MessageBody::Append(_) | MessageBody::Heartbeat(_) => {
                    vec![msg(
                        1,
                        2,
                        term,
                        MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
                    )]
                }
                MessageBody::Vote(v) if v.pre_vote => {
                    vec![msg(1, 2, term, vote_response(true, false))]
                }
                _ => vec![],
            };
            let m = msg(2, 1, term - 2, body);
            let what = format!("{role:?} given a stale {}", m.kind_name());
            let before = net.snapshot(1);
            net.step(m).unwrap();
            assert_eq!(net.snapshot(1), before, "{what}");
            let rd = net.ready(1);
            assert_eq!(rd.hard_state, None, "{what}");
            let replies: Vec<Message> = rd
                .messages
                .into_iter()
                .chain(rd.persisted_messages)
                .collect();
            assert_eq!(replies, expected, "{what}");
        }
    }
}

/// §5.1: a leader cut off while the others elected a new one learns the
/// higher term from the answer to its first heartbeat, and steps down.
#[test]
fn stale_leader_steps_down_when_answered_with_a_higher_term() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(1);
    net.tick(&[2, 3], 2 * election_tick());
    let new_leader = [2, 3]
        .into_iter()
        .find(|&id| net.role(id) == Role::Leader)
        .expect("nodes 2 and 3 elect a leader");
    assert_eq!(net.term(new_leader), 2);
    assert_eq!(
        (net.role(1), net.term(1)),
        (Role::Leader, 1),
        "still leads, unaware"
    );
    net.heal();
    net.tick(&[1], 1);
    assert_eq!((net.role(1), net.term(1)), (Role::Follower, 2));
}

// ----- §5.2 elections ------------------------------------------------------------

/// §5.2: "Each server will vote for at most one candidate in a given term, on
/// a first-come-first-served basis." The same candidate asking again (its
/// answer may have been lost) is granted again.
#[test]
fn one_vote_per_term_first_come_first_served() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    let mut ask = |from| {
        net.step(msg(from, 1, 1, vote((0, 0), false))).unwrap();
        vote_granted(&net.ready(1))
    };
    assert!(ask(2), "first come");
    assert!(!ask(3), "a second candidate in the same term");
    assert!(ask(2), "the same candidate again");
    assert_eq!(net.raft(1).vote, Some(2));
}

/// §5.2 with Figure 2 ("updated on stable storage before responding to RPCs"):
/// a vote, granted or cast for oneself, is in the Ready's hard state, and the
/// message it concerns is among those that leave only once that is durable.
#[test]
fn votes_are_persisted_before_the_messages_that_depend_on_them_leave() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.step(msg(2, 1, 1, vote((0, 0), false))).unwrap();
    let rd = net.ready(1);
    let voted_for = |id| HardState {
        term: 1,
        vote: Some(id),
        commit: 0,
    };
    assert_eq!(rd.hard_state, Some(voted_for(2)));
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages,
        [msg(1, 2, 1, vote_response(false, true))]
    );
    assert_eq!(net.nodes[&1].storage.hard_state(), voted_for(2));

    net.raw(3).campaign();
    let rd = net.ready(3);
    assert_eq!(rd.hard_state, Some(voted_for(3)));
    assert!(rd.messages.is_empty());
    let requests: Vec<NodeId> = rd.persisted_messages.iter().map(|m| m.to).collect();
    assert_eq!(requests, [1, 2]);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of
/// the servers in the full cluster for the same term." Two of five is not
/// enough; three is.
#[test]
fn candidate_wins_with_votes_from_a_majority_of_the_full_cluster() {
    let mut net = Network::with_config(5, |c| c.pre_vote = false);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.campaign(1);
    assert_eq!((net.role(1), net.term(1)), (Role::Candidate, 1));
    net.heal();
    net.isolate(4);
    net.isolate(5);
    net.campaign(1);
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 2));
    for id in [2, 3] {
        assert_eq!(net.raft(id).leader, Some(1));
    }
}

/// §5.2: a candidate refused by a majority has lost; it returns to follower
/// (in its term) and waits for the next timeout.
#[test]
fn candidate_refused_by_a_majority_steps_down() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.raw(1).campaign();
    let refusal = |from| msg(from, 1, 1, vote_response(false, false));
    net.step(refusal(2)).unwrap();
    assert_eq!(
        net.role(1),
        Role::Candidate,
        "one refusal of three decides nothing"
    );
    net.step(refusal(3)).unwrap();
    assert_eq!((net.role(1), net.term(1)), (Role::Follower, 1));
}

/// §5.2: "If the AppendEntries RPC is from another server claiming to be
/// leader and its term is at least as large as the candidate's current term,
/// then the candidate recognizes the leader as legitimate and returns to
/// follower state." Heartbeats count too, and so do pre-candidates.
#[test]
fn candidate_steps_down_on_append_or_heartbeat_from_a_leader_of_its_term() {
    for role in [Role::PreCandidate, Role::Candidate] {
        for body in [append((0, 0), &[], 0), heartbeat(0)] {
            let mut net = in_role(role, |_| {});
            let term = net.term(1);
            net.step(msg(2, 1, term, body)).unwrap();
            assert_eq!(
                (net.role(1), net.term(1), net.raft(1).leader),
                (Role::Follower, term, Some(2)),
                "{role:?}"
            );
        }
    }
}

/// §5.2: "election timeouts are chosen randomly from a fixed interval" — here
/// [election_tick, 2 * election_tick) — so that split votes are rare. The draw
/// covers the interval across seeds, differs between the nodes of a cluster,
/// and a follower campaigns exactly when its draw runs out.
#[test]
fn randomized_election_timeouts_cover_election_tick_to_twice_that() {
    let et = election_tick();
    let draws: BTreeSet<u32> = (0..200)
        .map(|seed| {
            let node = new_node(Config::new(1), MemStorage::with_voters(&[1, 2, 3]), seed);
            node.raft().randomized_election_timeout
        })
        .collect();
    assert_eq!(draws, (et..2 * et).collect());

    let net = Network::new(5);
    let per_node: BTreeSet<u32> = net
        .ids()
        .into_iter()
        .map(|id| net.raft(id).randomized_election_timeout)
        .collect();
    assert!(per_node.len() > 1, "five nodes, one draw: {per_node:?}");

    let mut net = Network::new(3);
    let timeout = net.raft(1).randomized_election_timeout;
    for _ in 1..timeout {
        net.raw(1).tick();
    }
    assert_eq!(net.role(1), Role::Follower);
    net.raw(1).tick();
    assert_eq!(net.role(1), Role::PreCandidate);
}

/// §5.2 in a cluster of one: its own vote is a majority, so it leads after its
/// first timeout, and commits alone.
#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let mut net = Network::new(1);
    net.tick(&[1], 2 * election_tick());
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 1));
    let id = net.propose(1, 3).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    assert_eq!(net.nodes[&1].applied.last().map(Entry::id), Some(id));
}

// ----- §5.4.1 election restriction -----------------------------------------------

/// §5.4.1: "If the logs have last entries with different terms, then the log
/// with the later term is more up-to-date. If the logs end with the same term,
/// then whichever log is longer is more up-to-date." A voter refuses a
/// candidate whose log is less up to date than its own.
#[test]
fn vote_is_granted_only_to_a_candidate_at_least_as_up_to_date() {
    // The voter's log ends with (index 3, term 2).
    let logs = [(2, &[1, 1, 2][..]), (2, &[]), (2, &[])];
    let mut net = Network::with_logs(&logs, |c| c.pre_vote = false);
    let cases = [
        ((9, 1), false, "lower last term, however long"),
        ((2, 2), false, "same last term, shorter"),
        ((3, 2), true, "same last term, as long"),
        ((4, 2), true, "same last term, longer"),
        ((1, 3), true, "higher last term, however short"),
    ];
    // A new term for each request, so that every one finds the vote free.
    for (term, (last, granted, why)) in (3..).zip(cases) {
        net.step(msg(2, 1, term, vote(last, false))).unwrap();
        assert_eq!(vote_granted(&net.ready(1)), granted, "{why}");
        assert_eq!(net.raft(1).vote, granted.then_some(2), "{why}");
    }
}

// ----- §5.3 log replication ------------------------------------------------------

/// §5.3: "If the follower does not find an entry in its log with the same
/// index and term, then it refuses the new entries." Once it does, it deletes
/// a conflicting suffix and appends (Figure 2, receiver rules 2–4). A refusal
/// hints at the last entry that can match.
#[test]
fn append_is_refused_unless_the_follower_holds_the_previous_entry() {
    let logs = [(3, &[1, 1, 2][..]), (3, &[]), (3, &[])];
    let mut net = Network::with_logs(&logs, |_| {});
    let send = |net: &mut Network, prev, terms: &[Term]| {
        net.step(msg(2, 1, 3, append(prev, terms, 0))).unwrap();
        append_answer(&net.ready(1))
    };
    let refused_at = |rejected_index| Rejected {
        rejected_index,
        hint_index: 3,
        hint_term: 2,
    };
    assert_eq!(
        send(&mut net, (3, 3), &[3]),
        refused_at(3),
        "entry 3 has term 2"
    );
    assert_eq!(
        send(&mut net, (5, 3), &[3]),
        refused_at(5),
        "there is no entry 5"
    );
    assert_eq!(net.log(1), [1, 1, 2], "refusals change nothing");
    assert_eq!(send(&mut net, (2, 1), &[3, 3]), Accepted { index: 4 });
    assert_eq!(
        net.log(1),
        [1, 1, 3, 3],
        "the conflicting entry 3 was replaced"
    );
}

/// §5.3, Figure 7: whatever a follower's log looks like — missing entries
/// (a, b), extra uncommitted entries (c, d), or both (e, f) — once the leader
/// of term 8 is elected, replication makes it equal to the leader's.
///
/// Fast backtracking (the follower's hint names the last index whose term is
/// at most the refused prev_term, and the leader skips its own entries of
/// terms the follower lacks) needs at most one refusal per follower here;
/// stepping back one entry per round trip would take seven for (f).
#[test]
fn figure_7_every_follower_log_converges_to_the_leaders() {
    const LEADER: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[Term], usize); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6], 1),
        ("b", &[1, 1, 1, 4], 1),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0),
        ("e", &[1, 1, 1, 4, 4, 4, 4], 1),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 1),
    ];
    let logs: Vec<(Term, &[Term])> = std::iter::once((7, LEADER))
        .chain(followers.iter().map(|f| (7, f.1)))
        .collect();
    let mut net = Network::with_logs(&logs, |_| {});
    net.elect(1); // with votes from a, b, e and f: c and d are more up to date
    assert_eq!(net.term(1), 8);

    let expected = [LEADER, &[8]].concat();
    assert_eq!(net.log(1), expected);
    assert_eq!(net.commit(1), 11);
    for (id, (name, _, refusals)) in (2..).zip(followers) {
        assert_eq!(net.log(id), expected, "follower ({name})");
        assert_eq!(net.commit(id), 11, "follower ({name})");
        let sent = net.sent.iter().filter(|m| {
            m.from == id && matches!(m.body, MessageBody::AppendResponse(Rejected { .. }))
        });
        assert_eq!(sent.count(), refusals, "refusals from follower ({name})");
    }
}

/// Figure 8 at (c): S1, leader of term 4, has its term-2 entry on a majority
/// (S1, S2, S3) while its term-4 entry reaches no one. S4 and S5 are down.
fn figure_8() -> Network {
    let logs = [
        (3, &[1, 2][..]), // S1 led term 2 and reached S2 only
        (3, &[1, 2]),
        (3, &[1]),
        (3, &[1]),
        (3, &[1, 3]), // S5 led term 3 and reached no one
    ];
    let mut net = Network::with_logs(&logs, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.isolate(4);
    net.isolate(5);
    // Appends carry nothing past index 2.
    net.filter = Some(Box::new(|m| {
        if let MessageBody::Append(a) = &mut m.body {
            a.entries.retain(|e| e.index <= 2);
        }
        true
    }));
    net.elect(1);
    assert_eq!(net.term(1), 4);
    assert_eq!(net.log(1), [1, 2, 4]);
    for id in [2, 3] {
        assert_eq!(net.log(id), [1, 2]);
    }
    let matched = [1, 2, 3].map(|id| net.raft(1).progress[&id].matched);
    assert_eq!(matched, [3, 2, 2], "index 2 is on a majority");
    net
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by
/// counting replicas." At (c) the term-2 entry is on a majority, yet S1 does
/// not commit it — rightly, since at (d) S5 is elected with votes from S2, S3
/// and S4 and overwrites it.
#[test]
fn figure_8_leader_never_commits_an_old_term_entry_by_counting_replicas() {
    let mut net = figure_8();
    assert_eq!(net.commit(1), 0);
    for id in [2, 3] {
        assert_eq!(net.commit(id), 0);
    }

    // (d): S1 crashes; S4 and S5 come back.
    net.heal();
    net.isolate(1);
    net.campaign(5);
    assert_eq!(
        net.role(5),
        Role::Candidate,
        "term 4: S2 and S3 already voted for S1"
    );
    net.campaign(5);
    assert_eq!((net.role(5), net.term(5)), (Role::Leader, 5));
    for id in [2, 3, 4, 5] {
        assert_eq!(net.log(id), [1, 3, 5], "S{id}: the term-2 entry is gone");
    }
    assert_eq!(net.commit(5), 3);
}

/// §5.4.2, Figure 8 (e): once S1 replicates an entry of its own term to a
/// majority, that entry commits, and with it the term-2 entry before it. S5
/// can then no longer be elected.
#[test]
fn figure_8_old_entry_commits_once_an_entry_of_the_current_term_reaches_a_majority() {
    let mut net = figure_8();
    net.filter = None;
    net.tick(&[1], 1); // a heartbeat round: S2 and S3 answer, S1 resends what they lack
    for id in [1, 2, 3] {
        assert_eq!(net.log(id), [1, 2, 4]);
        assert_eq!(net.commit(id), 3, "S{id}");
    }

    net.heal();
    net.isolate(1);
    net.campaign(5); // term 4
    net.campaign(5); // term 5: S2 and S3 hold a more up-to-date log
    assert_eq!(net.role(5), Role::Candidate);
    for id in [2, 3] {
        assert_eq!(net.log(id), [1, 2, 4]);
    }
}

// ----- commit index ---------------------------------------------------------------

/// §5.3: an entry is committed once "the leader ... has replicated it on a
/// majority of the servers" — of durable logs: the leader's own copy counts
/// only once the caller has persisted it and called advance().
#[test]
fn leader_counts_its_own_entry_towards_commit_only_after_persisting_it() {
    let mut net = stable_cluster(|_| {});
    let before = net.commit(1);
    let id = net.propose(1, 8).unwrap();
    let rd = net.raw(1).ready();
    // The appends may leave before the leader's own write completes.
    for m in rd.messages.iter().filter(|m| m.to == 2) {
        net.step(m.clone()).unwrap();
    }
    for ack in net.ready(2).persisted_messages {
        net.step(ack).unwrap();
    }
    assert_eq!(net.raft(1).progress[&2].matched, id.index);
    assert_eq!(
        net.commit(1),
        before,
        "one follower of three is no majority while the leader's write is pending"
    );
    net.persist(1, &rd);
    net.raw(1).advance();
    assert_eq!(net.commit(1), id.index);
}

/// §5.3: "The leader keeps track of the highest index it knows to be
/// committed, and it includes that index in future AppendEntries RPCs
/// (including heartbeats) so that the other servers eventually find out."
#[test]
fn followers_learn_the_commit_index_from_appends_and_heartbeats() {
    let mut net = stable_cluster(|_| {});
    // Node 3 receives the entry but not the empty append announcing its commit.
    net.filter = Some(Box::new(|m| {
        !(m.to == 3 && matches!(&m.body, MessageBody::Append(a) if a.entries.is_empty()))
    }));
    let id = net.propose(1, 8).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    assert_eq!(net.commit(2), id.index, "learned from an append");
    assert_eq!(net.log(3).len() as u64, id.index);
    assert!(net.commit(3) < id.index);
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.commit(3), id.index, "learned from a heartbeat");
}

/// Followers never commit beyond what they hold: a heartbeat announces at
/// most the index the follower acknowledged, and an append's commit index
/// counts only up to the last entry that append verified (Figure 2:
/// "min(leaderCommit, index of last new entry)").
#[test]
fn followers_never_commit_beyond_what_they_are_known_to_hold() {
    let mut net = stable_cluster(|_| {});
    net.isolate(3);
    let id = net.propose(1, 8).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    let acked = net.raft(1).progress[&3].matched;
    assert!(acked < id.index);
    net.heal();
    net.raw(1).tick();
    net.process(1);
    let to_3: Vec<&MessageBody> = net
        .queue
        .iter()
        .filter(|m| m.to == 3)
        .map(|m| &m.body)
        .collect();
    assert_eq!(to_3, [&heartbeat(acked)]);
    net.stabilize();
    assert_eq!(net.commit(3), id.index);

    // Node 1 holds three entries of term 1; the leader's append verifies only the first.
    let logs = [(1, &[1, 1, 1][..]), (1, &[1]), (1, &[])];
    let mut net = Network::with_logs(&logs, |_| {});
    net.step(msg(2, 1, 1, append((1, 1), &[], 3))).unwrap();
    assert_eq!(append_answer(&net.ready(1)), Accepted { index: 1 });
    assert_eq!(net.commit(1), 1);
}

// ----- PreVote ----------------------------------------------------------------------

/// PreVote (thesis §9.6): a node cut off from the cluster polls with pre-votes
/// nobody grants, so its term does not grow, and when it rejoins the leader
/// keeps leading in the same term. Without PreVote its term runs away.
#[test]
fn prevote_rejoining_node_does_not_disrupt_a_stable_leader() {
    for pre_vote in [true, false] {
        let mut net = Network::with_config(3, |c| c.pre_vote = pre_vote);
        let ids = net.ids();
        net.elect(1);
        net.isolate(3);
        net.tick(&ids, 5 * election_tick());
        if !pre_vote {
            assert!(
                net.term(3) > 1,
                "without PreVote, the cut-off node's term grows"
            );
            continue;
        }
        assert_eq!(net.term(3), 1);
        net.heal();
        net.tick(&ids, election_tick());
        for id in ids {
            assert_eq!(
                (net.term(id), net.raft(id).leader),
                (1, Some(1)),
                "node {id}"
            );
        }
    }
}

/// PreVote: granting a pre-vote changes nothing durable — neither the voter's
/// term nor its vote — and a pre-candidate keeps its own term and vote until
/// it has won the poll.
#[test]
fn prevote_changes_neither_term_nor_vote() {
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    let before = net.raft(2).hard_state();
    assert_eq!(before.vote, Some(1));
    let last = net.raw(3).status().last;
    net.step(msg(3, 2, 2, vote((last.index, last.term), true)))
        .unwrap();
    let rd = net.ready(2);
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.persisted_messages,
        [msg(2, 3, 2, vote_response(true, true))],
        "granted, in the term asked for"
    );
    assert_eq!(net.raft(2).hard_state(), before);
    assert_eq!(net.raft(2).leader, Some(1));

    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.role(3), Role::PreCandidate);
    assert_eq!(net.raft(3).hard_state(), before);
    assert_eq!(net.nodes[&3].storage.hard_state(), before);
}

/// PreVote: a pre-vote is a question about the *next* term. A voter that
/// already follows a leader, or has voted, in the term asked about refuses it.
#[test]
fn prevote_for_a_term_the_voter_already_settled_is_refused() {
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    let last = net.raw(3).status().last;
    let pre_vote = |term| msg(3, 2, term, vote((last.index, last.term), true));
    net.step(pre_vote(1)).unwrap();
    assert!(!vote_granted(&net.ready(2)), "term 1 has a leader");
    net.step(pre_vote(2)).unwrap();
    assert!(vote_granted(&net.ready(2)), "term 2 is open");
}

/// PreVote: a pre-candidate that a majority would vote for runs a real
/// election, in the next term, and wins it.
#[test]
fn precandidate_that_wins_the_prevote_runs_a_real_election() {
    let mut net = Network::new(3);
    net.raw(1).campaign();
    net.process(1);
    assert_eq!((net.role(1), net.term(1)), (Role::PreCandidate, 0));
    net.deliver_round(); // pre-votes granted
    assert_eq!([2, 3].map(|id| net.term(id)), [0, 0]);
    net.deliver_round(); // grants counted
    assert_eq!((net.role(1), net.term(1)), (Role::Candidate, 1));
    assert!(net
        .queue
        .iter()
        .all(|m| m.term == 1 && matches!(&m.body, MessageBody::Vote(v) if !v.pre_vote)));
    net.stabilize();
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 1));
}

// ----- CheckQuorum ------------------------------------------------------------------

/// CheckQuorum (thesis §6.2): a leader that hears from no majority during a
/// whole election timeout steps down (keeping its term). Here it last heard
/// from its followers just before the first check, so it passes that one and
/// steps down at the second, and not a tick earlier. Without CheckQuorum it
/// leads on.
#[test]
fn checkquorum_leader_steps_down_after_an_election_timeout_without_a_quorum() {
    let et = election_tick();
    for check_quorum in [true, false] {
        let mut net = Network::with_config(3, |c| c.check_quorum = check_quorum);
        net.elect(1);
        net.isolate(1);
        net.tick(&[1], 2 * et - 1);
        assert_eq!(net.role(1), Role::Leader);
        net.tick(&[1], 1);
        let expected = if check_quorum {
            Role::Follower
        } else {
            Role::Leader
        };
        assert_eq!((net.role(1), net.term(1)), (expected, 1));
    }
}

/// CheckQuorum's leader lease (thesis §4.2.3): a follower that heard from a
/// leader within the election timeout ignores vote requests, even of a higher
/// term, so a rejoining node cannot depose a healthy leader. Past the timeout
/// it votes as usual.
#[test]
fn followers_within_the_leader_lease_ignore_higher_term_vote_requests() {
    let mut net = Network::new(3);
    net.elect(1);
    let last = net.raw(3).status().last;
    let request = msg(3, 2, 2, vote((last.index, last.term), false));
    net.step(request.clone()).unwrap();
    assert_eq!(net.term(2), 1);
    assert!(!net.raw(2).has_ready(), "not even a refusal goes back");

    net.isolate(1);
    net.tick(&[2], election_tick());
    net.step(request).unwrap();
    assert_eq!(net.term(2), 2);
    assert!(vote_granted(&net.ready(2)));
}

// ----- flow control -----------------------------------------------------------------

/// Flow control, probe state: while the leader does not know where a
/// follower's log matches, it sends one append and waits for its answer (or a
/// heartbeat answer) before sending another.
#[test]
fn probe_state_sends_one_append_per_round_trip() {
    let mut net = Network::new(3);
    net.isolate(2);
    net.elect(1);
    let appends_to_2 = |net: &Network| {
        let appends = net.sent.iter().filter(|m| m.to == 2);
        appends
            .filter(|m| matches!(m.body, MessageBody::Append(_)))
            .count()
    };
    assert_eq!(net.raft(1).progress[&2].state, ProgressState::Probe);
    assert_eq!(appends_to_2(&net), 1, "the first probe, lost");
    for _ in 0..3 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert_eq!(
        appends_to_2(&net),
        1,
        "nothing while the probe is unanswered"
    );
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(
        appends_to_2(&net),
        2,
        "the heartbeat answer allows one more"
    );
    assert_eq!(net.raft(1).progress[&2].state, ProgressState::Replicate);
    assert_eq!(net.log(2), net.log(1));
}

/// Flow control, replicate state: once logs match, the leader streams appends
/// without waiting for answers, up to max_inflight_msgs unacknowledged ones.
#[test]
fn replicate_state_pipelines_up_to_max_inflight_msgs() {
    let mut net = stable_cluster(|c| c.max_inflight_msgs = 3);
    net.cut.insert((2, 1)); // node 2's acknowledgements are lost
    for _ in 0..5 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert_eq!(net.entry_appends_to(2), [1, 1, 1]);
    assert_eq!(net.entry_appends_to(3), [1; 5]);
    assert_eq!(net.raft(1).progress[&2].inflights.count(), 3);
}

/// Flow control, replicate state: the window is also bounded in bytes.
#[test]
fn replicate_state_stops_at_max_inflight_bytes() {
    let entry = 100 + ENTRY_OVERHEAD_BYTES;
    let mut net = stable_cluster(|c| c.max_inflight_bytes = 2 * entry);
    net.cut.insert((2, 1));
    for _ in 0..5 {
        net.propose(1, 100).unwrap();
        net.stabilize();
    }
    assert_eq!(net.entry_appends_to(2), [1, 1]);
    assert_eq!(net.entry_appends_to(3), [1; 5]);
}

/// max_size_per_msg bounds the entries of one append; a backlog leaves as
/// several appends (pipelined, in replicate state).
#[test]
fn max_size_per_msg_bounds_the_entries_of_one_append() {
    let entry = 10 + ENTRY_OVERHEAD_BYTES;
    let mut net = stable_cluster(|c| c.max_size_per_msg = 3 * entry);
    for _ in 0..10 {
        net.propose(1, 10).unwrap();
    }
    net.stabilize();
    for id in [2, 3] {
        assert_eq!(net.entry_appends_to(id), [3, 3, 3, 1]);
        assert_eq!(net.log(id), net.log(1));
    }
}

/// A full window whose acknowledgements were lost would stall the follower
/// for good; a heartbeat answer proves the follower alive and frees a slot.
#[test]
fn heartbeat_response_unblocks_a_full_window() {
    let mut net = stable_cluster(|c| c.max_inflight_msgs = 2);
    net.cut.insert((2, 1));
    for _ in 0..3 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert!(net.raft(1).progress[&2].inflights.full());
    assert_eq!(net.log(2).len() + 1, net.log(1).len(), "the third waits");
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.log(2), net.log(1));
}

/// The leader's cap on uncommitted payload bytes refuses proposals beyond it
/// (instead of growing its log without bound while it cannot commit), and
/// accepts again once entries commit.
#[test]
fn uncommitted_size_cap_refuses_proposals_until_entries_commit() {
    let mut net = stable_cluster(|c| c.max_uncommitted_size = 100);
    net.isolate(2);
    net.isolate(3);
    let first = net.propose(1, 60).unwrap();
    net.stabilize();
    let refused = ProposeError::UncommittedSizeExceeded {
        pending: 60,
        limit: 100,
    };
    assert_eq!(net.propose(1, 60), Err(refused));
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.commit(1), first.index);
    assert!(net.propose(1, 60).is_ok());
}

// ----- batching and proposals --------------------------------------------------------

/// Batching: proposals made between two Readys leave as one append per
/// follower, not one per proposal.
#[test]
fn proposals_between_two_readys_leave_as_one_append_per_peer() {
    let mut net = stable_cluster(|_| {});
    for _ in 0..100 {
        net.propose(1, 8).unwrap();
    }
    let rd = net.ready(1);
    assert_eq!(rd.entries.len(), 100);
    let appends: Vec<(NodeId, usize)> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append(a) => Some((m.to, a.entries.len())),
            _ => None,
        })
        .collect();
    assert_eq!(appends, [(2, 100), (3, 100)]);
}

/// §8: only the leader takes client commands; the others refuse and name the
/// leader they know, if any.
#[test]
fn proposals_on_a_non_leader_are_refused_naming_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    let not_leader = |leader| Err(ProposeError::NotLeader { leader });
    assert_eq!(net.propose(2, 1), not_leader(Some(1)));
    let mut net = in_role(Role::Candidate, |_| {});
    assert_eq!(net.propose(1, 1), not_leader(None));
}

// ----- bad input --------------------------------------------------------------------

type ErrorCheck = fn(&StepError) -> bool;

/// Never trust input: a malformed or impossible message is refused with a
/// typed error and changes nothing — no state, and no answer goes back.
#[test]
fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    // Node 1 led term 1, node 2 leads term 2: every log is [1, 1, 2, 2], all committed.
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    net.propose(1, 1).unwrap();
    net.stabilize();
    net.elect(2);
    net.propose(2, 1).unwrap();
    net.stabilize();
    for id in [1, 2, 3] {
        assert_eq!((net.log(id), net.commit(id)), (vec![1, 1, 2, 2], 4));
    }
    let invalid: ErrorCheck = |e| matches!(e, StepError::InvalidMessage { .. });
    let bad_append = MessageBody::Append(Append {
        prev_index: 4,
        prev_term: 2,
        entries: vec![
            Entry::normal(2, 5, Bytes::new()),
            Entry::normal(2, 7, Bytes::new()),
        ],
        commit: 4,
    });
    let cases: Vec<(&str, NodeId, Message, ErrorCheck)> = vec![
        ("term 0", 1, msg(2, 1, 0, heartbeat(4)), invalid),
        ("wrong recipient", 1, msg(2, 3, 2, heartbeat(4)), |e| {
            *e == StepError::WrongRecipient { to: 3, me: 1 }
        }),
        // Requests from unknown senders are taken (a lagging node may not
        // know every member yet); answers must come from known peers.
        (
            "unknown sender",
            1,
            msg(
                9,
                1,
                2,
                MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
            ),
            |e| *e == StepError::UnknownPeer(9),
        ),
        (
            "non-contiguous entries",
            1,
            msg(2, 1, 2, bad_append),
            invalid,
        ),
        (
            "entry term above the message term",
            1,
            msg(2, 1, 2, append((4, 2), &[3], 4)),
            invalid,
        ),
        (
            "prev_term above the message term",
            1,
            msg(2, 1, 2, append((4, 3), &[], 4)),
            invalid,
        ),
        (
            "vote request with a last entry of term 1 at index 0",
            1,
            msg(3, 1, 3, vote((0, 1), false)),
            invalid,
        ),
        (
            "heartbeat commit beyond the follower's log",
            1,
            msg(2, 1, 2, heartbeat(9)),
            invalid,
        ),
        (
            "append overwriting committed entries",
            1,
            msg(2, 1, 2, append((1, 1), &[2, 2], 4)),
            invalid,
        ),
        (
            "acknowledgement beyond the leader's last index",
            2,
            msg(1, 2, 2, MessageBody::AppendResponse(Accepted { index: 9 })),
            invalid,
        ),
        (
            "refusal beyond the leader's last index",
            2,
            msg(
                1,
                2,
                2,
                MessageBody::AppendResponse(Rejected {
                    rejected_index: 9,
                    hint_index: 4,
                    hint_term: 2,
                }),
            ),
            invalid,
        ),
        (
            "refusal hinting past the refused index",
            2,
            msg(
                1,
                2,
                2,
                MessageBody::AppendResponse(Rejected {
                    rejected_index: 3,
                    hint_index: 4,
                    hint_term: 2,
                }),
            ),
            invalid,
        ),
        (
            "a second leader in the same term",
            2,
            msg(3, 2, 2, append((4, 2), &[], 4)),
            invalid,
        ),
    ];
    for (what, id, m, expected) in cases {
        let before = net.snapshot(id);
        let got = net.raw(id).step(m);
        assert!(matches!(&got, Err(e) if expected(e)), "{what}: got {got:?}");
        assert_eq!(net.snapshot(id), before, "{what}");
        assert!(!net.raw(id).has_ready(), "{what}: something would go back");
    }
}

#[derive(Clone, Debug)]
enum Input {
    Step(Message),
    /// Enough ticks, now and then, for timeouts to fire.
    Tick(u32),
    Propose,
}

/// Mostly small numbers, sometimes the largest.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![20 => 0u64..8, 1 => Just(u64::MAX)]
}

fn arb_body() -> impl Strategy<Value = MessageBody> {
    let entries = prop::collection::vec((number(), number(), 0u64..2), 0..4);
    prop_oneof![
        (number(), number(), entries, number(), any::<bool>()).prop_map(
            |(prev_index, prev_term, raw, commit, well_formed)| {
                // Well-formed entries get past validation, to the deeper checks.
                let mut term = prev_term;
                let entries = raw
                    .into_iter()
                    .zip(1u64..)
                    .map(|((index, any_term, step), k)| {
                        if !well_formed {
                            return Entry::normal(any_term, index, Bytes::new());
                        }
                        term = term.saturating_add(step);
                        Entry::normal(term, prev_index.wrapping_add(k), Bytes::new())
                    })
                    .collect();
                MessageBody::Append(Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                })
            }
        ),
        (number(), number(), number(), any::<bool>()).prop_map(
            |(index, hint_index, hint_term, ok)| {
                MessageBody::AppendResponse(if ok {
                    Accepted { index }
                } else {
                    Rejected {
                        rejected_index: index,
                        hint_index,
                        hint_term,
                    }
                })
            }
        ),
        number().prop_map(heartbeat),
        Just(MessageBody::HeartbeatResponse(HeartbeatResponse::default())),
        (number(), number(), any::<bool>()).prop_map(|(index, term, pre)| vote((index, term), pre)),
        (any::<bool>(), any::<bool>()).prop_map(|(pre, granted)| vote_response(pre, granted)),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    // Mostly from a peer to node 1, sometimes from nobody, itself or a stranger.
    let from = prop_oneof![9 => 2u64..4, 1 => 0u64..5];
    let to = prop_oneof![9 => Just(1u64), 1 => 0u64..5];
    let term = prop_oneof![20 => 0u64..10, 1 => Just(u64::MAX)];
    prop_oneof![
        8 => (from, to, term, arb_body())
            .prop_map(|(from, to, term, body)| Input::Step(msg(from, to, term, body))),
        1 => (1u32..25).prop_map(Input::Tick),
        1 => Just(Input::Propose),
    ]
}

proptest! {
    /// Never trust input: whatever arrives, in whatever role, the node does not
    /// panic, its term never goes back, and its committed entries never change.
    #[test]
    fn arbitrary_messages_never_panic_nor_undo_term_or_commit(
        role in prop::sample::select(ROLES.to_vec()),
        inputs in prop::collection::vec(arb_input(), 1..40),
    ) {
        let mut net = in_role(role, |_| {});
        for input in inputs {
            let (term, commit) = (net.term(1), net.commit(1));
            let committed = net.log(1)[..commit as usize].to_vec();
            match input {
                Input::Step(m) => {
                    let _ = net.raw(1).step(m);
                }
                Input::Tick(n) => (0..n).for_each(|_| net.raw(1).tick()),
                Input::Propose => {
                    let _ = net.propose(1, 1);
                }
            }
            let _ = net.ready(1);
            prop_assert!(net.term(1) >= term);
            prop_assert!(net.commit(1) >= commit);
            prop_assert_eq!(&net.log(1)[..commit as usize], &committed[..]);
        }
    }
}
