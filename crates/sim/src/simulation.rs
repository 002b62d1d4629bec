//! One simulated cluster run: nodes, network, clients, faults and checks, all
//! driven by one seed in virtual time.
//!
//! A run has two phases. During the *fault phase* clients propose while the
//! scenario's faults strike. Then faults stop: links heal, crashed nodes
//! restart, the network becomes reliable, and the *liveness phase* must see a
//! leader elected and every client command applied on every node within a
//! bounded number of ticks. Safety is checked after every step of both.
//!
//! Besides the scenario's faults, nodes take snapshots and compact their
//! logs at random (so lagging, restarted and new nodes catch up through
//! snapshots), clients read from random nodes (checked for
//! linearizability), and in reconfiguring scenarios the membership changes
//! and leadership moves on request.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use keel_raft::{
    ConfState, Config, Entry, EntryKind, HardState, Index, MemStorage, Message, NodeId, RawNode,
    ReadMode, Ready, Role, SnapshotChunk, SnapshotMeta, StepError, Storage,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{Checker, Property, Violation};
use crate::network::{Network, NetworkFaults, Time};
use crate::reads::Reads;
use crate::reconfig::{self, random_change};
use crate::scenario::Scenario;
use crate::state_machine::StateMachine;

/// Simulator steps per Raft tick. Network delays are counted in steps.
pub const STEPS_PER_TICK: Time = 10;

/// Nodes beyond the initial cluster that membership changes may add.
pub const SPARE_NODES: u64 = 3;

/// Per live node and tick: the chance of a snapshot and compaction.
const SNAPSHOT_CHANCE: f64 = 0.02;
/// Per step: the chance that a client starts a read.
const READ_CHANCE: f64 = 0.03;
/// Per tick, in reconfiguring scenarios: membership change and transfer chances.
const CONF_CHANGE_CHANCE: f64 = 0.1;
const TRANSFER_CHANCE: f64 = 0.02;

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// The fault profile.
    pub scenario: Scenario,
    /// Ticks of client load under faults.
    pub fault_ticks: Time,
    /// Ticks allowed, once faults stop, for a leader to be elected and every
    /// command to be applied everywhere.
    pub liveness_ticks: Time,
    /// Print every event.
    pub verbose: bool,
}

impl SimOptions {
    /// Defaults for `seed`: 3 nodes, chaos, 300 fault ticks, 500 liveness ticks.
    pub fn new(seed: u64) -> Self {
        SimOptions {
            seed,
            nodes: 3,
            scenario: Scenario::Chaos,
            fault_ticks: 300,
            liveness_ticks: 500,
            verbose: false,
        }
    }

    /// The command line that replays this run with a trace.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p keel-sim -- --seed {} --nodes {} --scenario {} --fault-ticks {} --verbose",
            self.seed, self.nodes, self.scenario, self.fault_ticks
        )
    }
}

/// A test hook that rewrites a node's outgoing messages: the way to build a
/// deliberately broken node and prove the checkers catch it.
pub trait Tamper {
    /// Called for every message a node sends, before the network sees it.
    fn outgoing(&mut self, message: &mut Message);
}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Commands clients asked for.
    pub commands: u64,
    /// Entries applied (the same on every node by the end).
    pub applied: Index,
    /// The highest term reached.
    pub max_term: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Messages sent and dropped.
    pub messages: u64,
    /// Messages lost to faults.
    pub dropped: u64,
    /// Ticks the liveness phase needed.
    pub recovery_ticks: Time,
    /// Reads that returned (each checked for linearizability).
    pub reads: u64,
    /// Snapshots nodes took of their own state (each followed by compaction).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Membership changes a leader accepted.
    pub conf_changes: u64,
    /// Leadership transfers a leader accepted.
    pub transfers: u64,
}

/// A failed run: the broken property and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The property that broke.
    pub violation: Violation,
    /// When, in steps.
    pub at: Time,
    /// The run's options.
    pub options: SimOptions,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({} nodes, {}): {} at step {}\n  replay: {}",
            self.options.seed,
            self.options.nodes,
            self.options.scenario,
            self.violation,
            self.at,
            self.options.replay_command()
        )
    }
}

struct SimNode {
    /// `None` while crashed.
    raft: Option<RawNode<MemStorage>>,
    /// The node's disk: survives crashes. Its membership is the one as of
    /// the state machine's applied index.
    disk: MemStorage,
    /// The node's state machine: durable, like the disk.
    sm: StateMachine,
    /// The snapshot being received. Lost in a crash: the core then asks for
    /// the transfer from the start.
    staging: BytesMut,
    /// Commit index already reported to the checker during this life.
    commit_reported: Index,
    incarnation: u64,
    restart_at: Option<Time>,
}

impl SimNode {
    /// A node of the initial cluster. Like etcd, the initial membership is
    /// the first log entry, committed and applied: nodes added later learn
    /// it from the log like any other change.
    fn bootstrap(id: NodeId, voters: &[NodeId], checker: &mut Checker) -> Result<Self, Violation> {
        let entry = keel_raft::bootstrap_entry(voters);
        let disk = MemStorage::new(ConfState::with_voters(voters));
        disk.append(std::slice::from_ref(&entry))
            .expect("an empty log takes entry 1");
        disk.set_hard_state(HardState {
            term: 1,
            vote: None,
            commit: 1,
        });
        let mut sm = StateMachine::default();
        sm.apply(&entry);
        checker.observe_log(id, 0, std::slice::from_ref(&entry))?;
        checker.observe_apply(id, &entry, sm.digest)?;
        checker.observe_durable_commit(id, 1)?;
        Ok(SimNode {
            raft: None,
            disk,
            sm,
            staging: BytesMut::new(),
            commit_reported: 1,
            incarnation: 0,
            restart_at: None,
        })
    }

    /// A spare node: an empty disk. It learns the log, or a snapshot, and
    /// with them the membership, from the leader.
    fn spare() -> Self {
        SimNode {
            raft: None,
            disk: MemStorage::new(ConfState::default()),
            sm: StateMachine::default(),
            staging: BytesMut::new(),
            commit_reported: 0,
            incarnation: 0,
            restart_at: None,
        }
    }

    /// The membership persisted with the applied index.
    fn durable_conf(&self) -> ConfState {
        self.disk
            .initial_state()
            .expect("MemStorage never fails")
            .conf_state
    }
}

/// A client command waiting to be applied, with the leader and term that
/// last accepted it. Like a real client, it waits while that leader leads and
/// re-sends only once leadership has moved (the entry may then be lost).
struct Pending {
    accepted_by: Option<(NodeId, u64)>,
}

/// A cluster under simulation.
pub struct Simulation {
    options: SimOptions,
    rng: StdRng,
    now: Time,
    nodes: BTreeMap<NodeId, SimNode>,
    net: Network,
    checker: Checker,
    config: Config,
    pending: BTreeMap<u64, Pending>,
    next_command: u64,
    report: RunReport,
    tamper: Option<Box<dyn Tamper>>,
    crash_in_ready: f64,
    reads: Reads,
    /// Nodes whose removal a leader accepted, with the index of the change.
    /// A node is dropped from the simulation once every other node applied
    /// past that index with a membership that no longer holds it.
    removals: BTreeMap<NodeId, Index>,
    /// The id the next spare node gets.
    next_spare: NodeId,
}

type Step = Result<(), Violation>;

fn node_error(detail: String) -> Violation {
    Violation {
        property: Property::NodeError,
        detail,
    }
}

impl Simulation {
    /// Builds the cluster for `options`.
    pub fn new(options: SimOptions) -> Self {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let faults = options.scenario.network(&mut rng);
        let mut config = Config::new(1);
        config.max_inflight_msgs = [1, 4, 256][rng.random_range(0..3)];
        config.max_size_per_msg = [1, 300, 1 << 20][rng.random_range(0..3)];
        config.max_inflight_bytes = [500, 1 << 20][rng.random_range(0..2)];
        config.max_uncommitted_size = [200, 1 << 20][rng.random_range(0..2)];
        config.max_committed_size_per_ready = [1, 1 << 20][rng.random_range(0..2)];
        config.pre_vote = rng.random_bool(0.8);
        config.check_quorum = rng.random_bool(0.8);
        if config.check_quorum && rng.random_bool(0.3) {
            config.read_mode = ReadMode::Lease;
        }
        let voters: Vec<NodeId> = (1..=options.nodes).collect();
        let mut checker = Checker::default();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let node = SimNode::bootstrap(id, &voters, &mut checker)
                .expect("bootstrapping a fresh node cannot fail");
            nodes.insert(id, node);
        }
        let next_spare = options.nodes + 1;
        let crash_in_ready = if options.scenario.crashes() {
            0.002
        } else {
            0.0
        };
        let mut sim = Simulation {
            options,
            rng,
            now: 0,
            nodes,
            net: Network::new(faults),
            checker,
            config,
            pending: BTreeMap::new(),
            next_command: 0,
            report: RunReport::default(),
            tamper: None,
            crash_in_ready,
            reads: Reads::default(),
            removals: BTreeMap::new(),
            next_spare,
        };
        for id in voters {
            sim.start(id).expect("a fresh node always starts");
        }
        sim
    }

    /// Installs a hook that rewrites outgoing messages (for broken-node tests).
    pub fn with_tamper(mut self, tamper: Box<dyn Tamper>) -> Self {
        self.tamper = Some(tamper);
        self
    }

    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.options.verbose {
            println!("[{:>6}] {what}", self.now);
        }
    }

    /// Runs both phases; returns the report, or the first broken property.
    pub fn run(mut self) -> Result<RunReport, Failure> {
        match self.run_phases() {
            Ok(()) => Ok(self.report),
            Err(violation) => Err(Failure {
                violation,
                at: self.now,
                options: self.options,
            }),
        }
    }

    fn run_phases(&mut self) -> Step {
        let fault_end = self.options.fault_ticks * STEPS_PER_TICK;
        while self.now < fault_end {
            self.step(true)?;
        }
        self.stop_faults()?;
        let heal_at = self.now;
        let deadline = heal_at + self.options.liveness_ticks * STEPS_PER_TICK;
        while self.now < deadline {
            self.step(false)?;
            if self.now % STEPS_PER_TICK == 0 && self.converged() {
                self.report.recovery_ticks = (self.now - heal_at) / STEPS_PER_TICK;
                self.report.applied = self.checker.max_applied();
                return Ok(());
            }
        }
        Err(Violation {
            property: Property::Liveness,
            detail: format!(
                "{} ticks after faults stopped: {} commands still pending; nodes: {}",
                self.options.liveness_ticks,
                self.pending.len(),
                self.describe_nodes()
            ),
        })
    }

    fn describe_nodes(&self) -> String {
        let mut out = Vec::new();
        for (id, n) in &self.nodes {
            match &n.raft {
                Some(r) => {
                    let s = r.status();
                    out.push(format!(
                        "{id}:{:?} term {} commit {} applied {} last {}/{}",
                        s.soft_state.role,
                        s.hard_state.term,
                        s.hard_state.commit,
                        n.sm.applied,
                        s.last.index,
                        s.last.term
                    ));
                }
                None => out.push(format!("{id}:down")),
            }
        }
        let conf = self
            .current_leader()
            .and_then(|l| self.nodes[&l].raft.as_ref())
            .map(|r| r.conf_state());
        format!("{}; leader's membership {conf:?}", out.join(", "))
    }

    /// A leader exists, nothing is pending, the membership is not joint, and
    /// every member follows the leader and applied everything it committed.
    /// (Nodes outside the leader's membership are not waited for.)
    fn converged(&self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        let Some(leader) = self.current_leader() else {
            return false;
        };
        let raft = self.nodes[&leader].raft.as_ref().expect("leader is up");
        let status = raft.status();
        let conf = raft.conf_state();
        let target = status.hard_state.commit;
        target == status.last.index
            && conf.voters_outgoing.is_empty()
            && conf.voters.iter().chain(&conf.learners).all(|id| {
                self.nodes.get(id).is_some_and(|n| {
                    n.sm.applied == target
                        && n.raft.as_ref().is_some_and(|r| {
                            r.leader() == Some(leader) && r.term() == status.hard_state.term
                        })
                })
            })
    }

    /// The node that is leader in the highest term, if any.
    fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    fn stop_faults(&mut self) -> Step {
        self.trace(format_args!("faults stop: heal, restart, reliable network"));
        self.net.heal();
        self.net.faults = NetworkFaults {
            max_delay: 3,
            ..NetworkFaults::none()
        };
        self.crash_in_ready = 0.0;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start(id)?;
        }
        Ok(())
    }

    fn step(&mut self, faults: bool) -> Step {
        self.now += 1;
        while let Some(m) = self.net.next_due(self.now) {
            self.deliver(m)?;
        }
        if self.now % STEPS_PER_TICK == 0 {
            self.tick(faults)?;
        }
        if faults && self.rng.random_bool(0.1) {
            self.new_command();
        }
        if faults && self.rng.random_bool(READ_CHANCE) {
            self.start_read();
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.handle_ready(id)?;
        }
        self.check_nodes()
    }

    fn tick(&mut self, faults: bool) -> Step {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let node = self.nodes.get_mut(&id).expect("known id");
            match (&mut node.raft, node.restart_at) {
                (Some(r), _) => r.tick(),
                (None, Some(at)) if at <= self.now => self.start(id)?,
                _ => {}
            }
        }
        if faults {
            self.inject_faults()?;
            if self.options.scenario.reconfigures() {
                self.reconfigure();
            }
        }
        for id in ids {
            if self.rng.random_bool(SNAPSHOT_CHANCE) {
                self.take_snapshot(id)?;
            }
        }
        self.decommission_removed();
        self.retry_commands();
        Ok(())
    }

    fn inject_faults(&mut self) -> Step {
        let scenario = self.options.scenario;
        if scenario.partitions() && self.rng.random_bool(0.05) {
            self.change_partitions();
        }
        if scenario.crashes() && self.rng.random_bool(0.02) {
            let ids: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.raft.is_some())
                .map(|(id, _)| *id)
                .collect();
            if !ids.is_empty() {
                let id = ids[self.rng.random_range(0..ids.len())];
                self.crash(id);
            }
        }
        Ok(())
    }

    fn change_partitions(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = ids.len();
        match self.rng.random_range(0..4) {
            0 => {
                let isolated = ids[self.rng.random_range(0..n)];
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&i| i != isolated).collect();
                self.trace(format_args!("partition: isolate {isolated}"));
                self.net.partition(&[vec![isolated], rest]);
            }
            1 => {
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    ids.iter().partition(|_| self.rng.random_bool(0.5));
                self.trace(format_args!("partition: {a:?} | {b:?}"));
                self.net.partition(&[a, b]);
            }
            2 => {
                let from = ids[self.rng.random_range(0..n)];
                let to = ids[self.rng.random_range(0..n)];
                if from != to {
                    self.trace(format_args!("partition: cut {from} -> {to}"));
                    self.net.cut_one_way(from, to);
                }
            }
            _ => {
                self.trace(format_args!("partition: heal"));
                self.net.heal();
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        let downtime = self.rng.random_range(5..50) * STEPS_PER_TICK;
        let node = self.nodes.get_mut(&id).expect("known id");
        node.raft = None;
        node.staging.clear();
        node.restart_at = Some(self.now + downtime);
        self.reads.abandon_node(id);
        self.report.crashes += 1;
        self.trace(format_args!(
            "node {id} crashes, back in {} ticks",
            downtime / STEPS_PER_TICK
        ));
    }

    fn start(&mut self, id: NodeId) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        node.incarnation += 1;
        node.restart_at = None;
        let mut config = self.config.clone();
        config.id = id;
        config.applied = node.sm.applied;
        let rng = StdRng::seed_from_u64(self.options.seed ^ (id << 48) ^ (node.incarnation << 32));
        let raft = RawNode::new(config, node.disk.clone(), Box::new(rng))
            .map_err(|e| node_error(format!("node {id} failed to restart: {e}")))?;
        node.commit_reported = raft.status().hard_state.commit;
        node.raft = Some(raft);
        let incarnation = node.incarnation;
        self.checker.observe_restart(id);
        self.trace(format_args!("node {id} starts (incarnation {incarnation})"));
        Ok(())
    }

    fn deliver(&mut self, m: Message) -> Step {
        let to = m.to;
        let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) else {
            return Ok(());
        };
        if self.options.verbose {
            println!(
                "[{:>6}] {} -> {} t{} {:?}",
                self.now, m.from, m.to, m.term, m.body
            );
        }
        match raft.step(m) {
            Ok(()) => Ok(()),
            // Answers from a node that left (or has not yet joined) this
            // node's configuration are refused, as they should be.
            Err(StepError::UnknownPeer(from)) if self.options.scenario.reconfigures() => {
                self.trace(format_args!("node {to} ignores non-member {from}"));
                Ok(())
            }
            // Honest peers never send what a node must refuse; a tampered one may.
            Err(e) if self.tamper.is_some() => {
                self.trace(format_args!("node {to} refused a message: {e}"));
                Ok(())
            }
            Err(e) => Err(node_error(format!("node {to} refused a message: {e}"))),
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for mut m in messages {
            if let Some(t) = self.tamper.as_mut() {
                t.outgoing(&mut m);
            }
            self.net.send(self.now, m, &mut self.rng);
        }
        self.report.messages = self.net.sent;
        self.report.dropped = self.net.dropped;
    }

    /// Handles one Ready the way a real node must (in the order
    /// [`Ready`] documents), with a chance of crashing in between.
    fn handle_ready(&mut self, id: NodeId) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        if !raft.has_ready() {
            return Ok(());
        }
        let ready = raft.ready();
        if let Some(first) = ready.entries.first() {
            let prev_term = raft.log_term(first.index - 1).map_err(|e| {
                node_error(format!("node {id} lost the entry before its new ones: {e}"))
            })?;
            self.checker.observe_log(id, prev_term, &ready.entries)?;
        }
        if let Some(ss) = ready.soft_state {
            self.trace(format_args!(
                "node {id} is {:?}, leader {:?}",
                ss.role, ss.leader
            ));
        }
        let Ready {
            hard_state,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            snapshot_chunks,
            snapshot,
            conf_state,
            read_states,
            ..
        } = ready;
        self.send_all(messages);

        if self.crash_in_ready > 0.0 && self.rng.random_bool(self.crash_in_ready) {
            self.trace(format_args!("node {id} crashes before persisting"));
            self.crash(id);
            return Ok(());
        }
        self.stage_chunks(id, snapshot_chunks)?;
        if let Some(meta) = snapshot {
            self.install_snapshot(id, meta)?;
        }
        let node = self.nodes.get_mut(&id).expect("known id");
        node.disk.append(&entries).map_err(|e| {
            node_error(format!(
                "node {id} handed out entries that do not fit its log: {e}"
            ))
        })?;
        if let Some(hs) = hard_state {
            node.disk.set_hard_state(hs);
            self.checker.observe_durable_commit(id, hs.commit)?;
        }
        if self.crash_in_ready > 0.0 && self.rng.random_bool(self.crash_in_ready) {
            self.trace(format_args!("node {id} crashes after persisting"));
            self.crash(id);
            return Ok(());
        }
        self.send_all(persisted_messages);
        self.apply(id, &committed_entries)?;
        let node = self.nodes.get_mut(&id).expect("known id");
        if let Some(cs) = conf_state {
            // Durable together with the applied index it belongs to.
            node.disk.set_conf_state(cs);
        }
        let applied = node.sm.applied;
        for state in read_states {
            self.reads.observe_read_state(id, state);
        }
        self.reads.serve(id, applied)?;
        self.report.reads = self.reads.returned;
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            raft.advance();
        }
        Ok(())
    }

    /// Writes the chunks of a snapshot being received: a chunk at offset 0
    /// starts a new one, and the rest follow in order.
    fn stage_chunks(&mut self, id: NodeId, chunks: Vec<SnapshotChunk>) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        for chunk in chunks {
            if chunk.offset == 0 {
                node.staging.clear();
            }
            if chunk.offset != node.staging.len() as u64 {
                return Err(node_error(format!(
                    "node {id} handed out a snapshot chunk at {} after {} bytes",
                    chunk.offset,
                    node.staging.len()
                )));
            }
            node.staging.extend_from_slice(&chunk.data);
        }
        Ok(())
    }

    /// Installs the snapshot received completely: its data becomes the state
    /// machine, and the log restarts after it.
    fn install_snapshot(&mut self, id: NodeId, meta: SnapshotMeta) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        let data = node.staging.split().freeze();
        if data.len() as u64 != meta.size {
            return Err(node_error(format!(
                "node {id} installs a snapshot of {} bytes from {} received",
                meta.size,
                data.len()
            )));
        }
        let index = meta.last.index;
        let sm = match StateMachine::from_snapshot(&data) {
            Some(sm) if sm.applied == index => sm,
            found => {
                return Err(Violation {
                    property: Property::StateMachineSafety,
                    detail: format!(
                        "node {id} received a snapshot at {index} holding state {found:?}"
                    ),
                })
            }
        };
        let term = meta.last.term;
        node.disk.apply_snapshot(meta, data);
        node.sm = sm;
        self.report.snapshots_installed += 1;
        self.trace(format_args!(
            "node {id} installs a snapshot at {index}/{term}"
        ));
        self.checker.observe_snapshot(id, index, sm.digest)
    }

    fn apply(&mut self, id: NodeId, entries: &[Entry]) -> Step {
        for e in entries {
            let node = self.nodes.get_mut(&id).expect("known id");
            if e.index != node.sm.applied + 1 {
                return Err(Violation {
                    property: Property::StateMachineSafety,
                    detail: format!(
                        "node {id} was handed {} to apply after {}",
                        e.index, node.sm.applied
                    ),
                });
            }
            node.sm.apply(e);
            let digest = node.sm.digest;
            self.checker.observe_apply(id, e, digest)?;
            if e.kind != EntryKind::Normal {
                continue;
            }
            if let Some(command) = decode_command(&e.data) {
                if self.pending.remove(&command).is_some() {
                    self.trace(format_args!("command {command} applied at {}", e.index));
                }
            }
        }
        Ok(())
    }

    /// Snapshots live node `id`'s state machine, if it applied anything
    /// since its last snapshot, and compacts its log up to a few entries
    /// short of the snapshot.
    fn take_snapshot(&mut self, id: NodeId) -> Step {
        let Some(node) = self.nodes.get(&id).filter(|n| n.raft.is_some()) else {
            return Ok(());
        };
        let first = node.disk.first_index().expect("MemStorage never fails");
        let applied = node.sm.applied;
        if applied < first {
            return Ok(());
        }
        let padding = if self.config.max_size_per_msg >= 300 {
            self.rng.random_range(200..3000)
        } else {
            // Chunks of a byte or so: keep transfers short.
            self.rng.random_range(0..8)
        };
        let keep = self.rng.random_range(0..10);
        let data = node.sm.snapshot_data(padding);
        node.disk
            .create_snapshot(applied, node.durable_conf(), data)
            .map_err(|e| node_error(format!("node {id} cannot snapshot at {applied}: {e}")))?;
        let compact_to = applied.saturating_sub(keep).max(first - 1);
        node.disk
            .compact(compact_to)
            .map_err(|e| node_error(format!("node {id} cannot compact to {compact_to}: {e}")))?;
        self.report.snapshots_taken += 1;
        self.trace(format_args!(
            "node {id} snapshots at {applied}, compacts to {compact_to}"
        ));
        Ok(())
    }

    /// The per-step scan: leaders, commit indexes, new leaders' logs.
    fn check_nodes(&mut self) -> Step {
        for (&id, node) in self.nodes.iter_mut() {
            let Some(raft) = node.raft.as_ref() else {
                continue;
            };
            let status = raft.status();
            let term = status.hard_state.term;
            let commit = status.hard_state.commit;
            self.report.max_term = self.report.max_term.max(term);
            self.checker.observe_commit(id, commit)?;
            if commit > node.commit_reported {
                // Compacted entries are covered by a snapshot, whose state
                // the checker verified when it was installed.
                let first = raft
                    .storage()
                    .first_index()
                    .expect("MemStorage never fails");
                let low = (node.commit_reported + 1).max(first);
                let entries = raft.entries(low, commit + 1).map_err(|e| {
                    node_error(format!("node {id} cannot read committed entries: {e}"))
                })?;
                self.checker.observe_committed(id, term, &entries)?;
                node.commit_reported = commit;
            }
            if status.soft_state.role == Role::Leader {
                self.checker.observe_leader(id, term)?;
                if self.checker.needs_completeness_check(id, term) {
                    self.checker
                        .check_leader_log(id, term, |i| raft.log_term(i))?;
                }
            }
        }
        Ok(())
    }

    /// A client starts a read on a random live node.
    fn start_read(&mut self) {
        let live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[self.rng.random_range(0..live.len())];
        let request = self.reads.start(id, self.checker.max_applied());
        let raft = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut());
        match raft.expect("live").read_index(request) {
            Ok(()) => self.trace(format_args!("read {request} starts on {id}")),
            // No leader known: the client gives up.
            Err(e) => {
                self.trace(format_args!("read {request} refused by {id}: {e}"));
                self.reads.abandon(request);
            }
        }
    }

    /// At the leader: maybe a random membership change, maybe a transfer.
    fn reconfigure(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        if self.rng.random_bool(CONF_CHANGE_CHANCE) {
            self.change_membership(leader);
        }
        if self.rng.random_bool(TRANSFER_CHANCE) {
            let raft = self.nodes[&leader].raft.as_ref().expect("leader is up");
            let voters = raft.conf_state().voters;
            let to = voters[self.rng.random_range(0..voters.len())];
            let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut());
            match raft.expect("leader is up").transfer_leader(to) {
                Ok(()) => {
                    self.report.transfers += 1;
                    self.trace(format_args!("leader {leader} transfers to {to}"));
                }
                Err(e) => self.trace(format_args!("transfer to {to} refused: {e}")),
            }
        }
    }

    /// Proposes a random membership change at `leader`, starting the spare
    /// it adds, if any.
    fn change_membership(&mut self, leader: NodeId) {
        let conf = self.nodes[&leader]
            .raft
            .as_ref()
            .expect("leader is up")
            .conf_state();
        // A spare: a node that never joined, or a fresh one if there is room.
        let idle = self.nodes.iter().find(|(id, n)| {
            !reconfig::is_member(&conf, **id)
                && !self.removals.contains_key(id)
                && n.durable_conf() == ConfState::default()
        });
        let spare = match idle {
            Some((id, _)) => Some(*id),
            None if (self.nodes.len() as u64) < self.options.nodes + SPARE_NODES => {
                Some(self.next_spare)
            }
            None => None,
        };
        let Some(change) = random_change(&mut self.rng, &conf, spare) else {
            return;
        };
        let raft = self.nodes.get_mut(&leader).and_then(|n| n.raft.as_mut());
        match raft
            .expect("leader is up")
            .propose_conf_change(change.clone())
        {
            Ok(at) => {
                self.report.conf_changes += 1;
                self.trace(format_args!(
                    "leader {leader} proposes {change:?} at {}/{}",
                    at.index, at.term
                ));
                for id in reconfig::added(&change) {
                    if !self.nodes.contains_key(&id) {
                        self.next_spare += 1;
                        self.nodes.insert(id, SimNode::spare());
                        // Cannot fail: an empty disk is always valid.
                        let _ = self.start(id);
                    }
                }
                for id in reconfig::removed(&change) {
                    self.removals.insert(id, at.index);
                }
            }
            Err(e) => self.trace(format_args!("{change:?} refused by {leader}: {e}")),
        }
    }

    /// Drops the removed nodes that no configuration can need any more:
    /// every other node applied past the removal, with a membership without
    /// them (spares that never joined know no membership and do not count).
    fn decommission_removed(&mut self) {
        let gone: Vec<NodeId> = self
            .removals
            .iter()
            .filter(|(&x, &at)| {
                self.nodes.iter().filter(|(id, _)| **id != x).all(|(_, n)| {
                    let conf = n.durable_conf();
                    conf == ConfState::default()
                        || (n.sm.applied >= at && !reconfig::is_member(&conf, x))
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.trace(format_args!("node {id} was removed: decommissioned"));
            self.removals.remove(&id);
            self.nodes.remove(&id);
            self.reads.abandon_node(id);
        }
    }

    fn new_command(&mut self) {
        self.next_command += 1;
        self.report.commands += 1;
        self.pending
            .insert(self.next_command, Pending { accepted_by: None });
        self.propose(self.next_command);
    }

    /// Whether `node` still leads in `term`.
    fn leads(&self, node: NodeId, term: u64) -> bool {
        self.nodes
            .get(&node)
            .and_then(|n| n.raft.as_ref())
            .is_some_and(|r| r.role() == Role::Leader && r.term() == term)
    }

    fn retry_commands(&mut self) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.accepted_by
                    .is_none_or(|(node, term)| !self.leads(node, term))
            })
            .map(|(c, _)| *c)
            .take(32)
            .collect();
        for command in due {
            self.propose(command);
        }
    }

    fn propose(&mut self, command: u64) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let padding = self.rng.random_range(0..64);
        let data = encode_command(command, padding);
        let raft = self
            .nodes
            .get_mut(&leader)
            .and_then(|n| n.raft.as_mut())
            .expect("leader is up");
        match raft.propose(data) {
            Ok(id) => {
                self.trace(format_args!(
                    "command {command} proposed at {}/{} on {leader}",
                    id.index, id.term
                ));
                if let Some(p) = self.pending.get_mut(&command) {
                    p.accepted_by = Some((leader, id.term));
                }
            }
            // Refused for now (not leader, pipeline full, transfer under
            // way): the client retries at the next tick.
            Err(e) => self.trace(format_args!("command {command} refused by {leader}: {e}")),
        }
    }
}

/// A client command: its id, then `padding` filler bytes so sizes vary.
fn encode_command(command: u64, padding: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + padding);
    b.put_u64(command);
    b.put_bytes(0xAB, padding);
    b.freeze()
}

fn decode_command(data: &[u8]) -> Option<u64> {
    data.get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// Runs one seed.
pub fn run(options: SimOptions) -> Result<RunReport, Failure> {
    Simulation::new(options).run()
}
