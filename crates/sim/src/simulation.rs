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
use std::sync::Arc;

use keel_raft::{Config, Index, Message, NodeId, ReadMode, Role, StepError, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{Checker, Property, Violation};
use crate::clients::{Pending, SharedAnswers};
use crate::network::{Network, NetworkFaults, Time};
use crate::node::SimNode;
use crate::options::{Failure, RunReport, SimOptions};
use crate::reads::Reads;

/// Simulator steps per Raft tick. Network delays are counted in steps.
pub const STEPS_PER_TICK: Time = 10;

/// Per live node and tick: the chance of a snapshot and compaction.
const SNAPSHOT_CHANCE: f64 = 0.02;
/// Per step: the chance that a client starts a read.
const READ_CHANCE: f64 = 0.03;

/// A test hook that rewrites a node's outgoing messages: the way to build a
/// deliberately broken node and prove the checkers catch it.
pub trait Tamper {
    /// Called for every message a node sends, before the network sees it.
    fn outgoing(&mut self, message: &mut Message);
}

/// A cluster under simulation.
pub struct Simulation {
    pub(crate) options: SimOptions,
    /// Every random choice of the run (nodes' own RNGs are seeded from it).
    pub(crate) rng: StdRng,
    pub(crate) now: Time,
    pub(crate) nodes: BTreeMap<NodeId, SimNode>,
    pub(crate) net: Network,
    pub(crate) checker: Checker,
    /// The core settings every node starts with (drawn from the seed).
    pub(crate) config: Config,
    /// Client commands not yet applied anywhere.
    pub(crate) pending: BTreeMap<u64, Pending>,
    pub(crate) next_command: u64,
    pub(crate) report: RunReport,
    pub(crate) tamper: Option<Box<dyn Tamper>>,
    /// The chance of a crash on each side of each sync (crash scenarios,
    /// fault phase only).
    pub(crate) crash_in_sync: f64,
    /// The chance that a disk write or sync fails with `EIO` or `ENOSPC`
    /// (fault phase only; see [`SimOptions::disk_errors`]).
    pub(crate) disk_error_chance: f64,
    pub(crate) reads: Reads,
    /// Nodes whose removal a leader accepted, with the index of the change.
    /// A node is dropped from the simulation once a quorum of the
    /// leader's configuration applied past that index with a membership
    /// that no longer holds it.
    pub(crate) removals: BTreeMap<NodeId, Index>,
    /// The id the next spare node gets.
    pub(crate) next_spare: NodeId,
    /// What nodes answered clients since the last step.
    pub(crate) answers: SharedAnswers,
}

/// The outcome of one part of a step: the first broken property stops the run.
pub(crate) type Step = Result<(), Violation>;

/// The node or its storage reported something impossible.
pub(crate) fn node_error(detail: String) -> Violation {
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
        let checker = Checker::default();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            nodes.insert(id, SimNode::bootstrap(&voters, disk_seed(options.seed, id)));
        }
        // Drawn apart from the run's RNG, so that the other choices of a
        // seed stay as they were.
        let mut disk_rng = StdRng::seed_from_u64(options.seed ^ 0xD15C_FA17);
        let disk_errors = options
            .disk_errors
            .unwrap_or_else(|| options.scenario.crashes() && disk_rng.random_bool(0.5));
        let disk_error_chance = if disk_errors {
            disk_rng.random_range(0.0002..0.003)
        } else {
            0.0
        };
        let next_spare = options.nodes + 1;
        let crash_in_sync = if options.scenario.crashes() {
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
            crash_in_sync,
            disk_error_chance,
            reads: Reads::default(),
            removals: BTreeMap::new(),
            next_spare,
            answers: Arc::default(),
        };
        for id in voters {
            if let Err(v) = sim.start(id) {
                panic!("node {id} fails its first start: {v}");
            }
        }
        sim
    }

    /// Installs a hook that rewrites outgoing messages (for broken-node tests).
    pub fn with_tamper(mut self, tamper: Box<dyn Tamper>) -> Self {
        self.tamper = Some(tamper);
        self
    }

    /// Prints an event of the run, in verbose mode.
    pub(crate) fn trace(&self, what: std::fmt::Arguments<'_>) {
        if self.options.verbose {
            println!("[{:>6}] {what}", self.now);
        }
    }

    /// Runs both phases; returns the report, or the first broken property.
    pub fn run(mut self) -> Result<RunReport, Failure> {
        let result = self.run_phases();
        for node in self.nodes.values() {
            self.report.disk.add(&node.fs.stats());
        }
        match result {
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
            if self.now.is_multiple_of(STEPS_PER_TICK) && self.converged() {
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
            match n.raw() {
                Some(r) => {
                    let s = r.status();
                    out.push(format!(
                        "{id}:{:?} term {} commit {} applied {} last {}/{}",
                        s.soft_state.role,
                        s.hard_state.term,
                        s.hard_state.commit,
                        n.applied(),
                        s.last.index,
                        s.last.term
                    ));
                }
                None => out.push(format!("{id}:down")),
            }
        }
        let conf = self
            .current_leader()
            .and_then(|l| self.nodes[&l].raw())
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
        let raft = self.nodes[&leader].raw().expect("leader is up");
        let status = raft.status();
        let conf = raft.conf_state();
        let target = status.hard_state.commit;
        target == status.last.index
            && conf.voters_outgoing.is_empty()
            && conf.voters.iter().chain(&conf.learners).all(|id| {
                self.nodes.get(id).is_some_and(|n| {
                    n.applied() == target
                        && n.raw().is_some_and(|r| {
                            r.leader() == Some(leader) && r.term() == status.hard_state.term
                        })
                })
            })
    }

    /// The ids of the nodes that are up (or, with `up` false, down).
    fn node_ids(&self, up: bool) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some() == up)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A node that is up, drawn at random, if there is one.
    pub(crate) fn random_node_up(&mut self) -> Option<NodeId> {
        let up = self.node_ids(true);
        (!up.is_empty()).then(|| up[self.rng.random_range(0..up.len())])
    }

    /// The node that is leader in the highest term, if any.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raw().map(|r| (*id, r)))
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
        self.crash_in_sync = 0.0;
        self.disk_error_chance = 0.0;
        for node in self.nodes.values() {
            node.fs.set_faults(0.0, 0.0);
        }
        for id in self.node_ids(false) {
            self.start(id)?;
        }
        Ok(())
    }

    fn step(&mut self, faults: bool) -> Step {
        self.now += 1;
        while let Some(m) = self.net.next_due(self.now) {
            self.deliver(m)?;
        }
        if self.now.is_multiple_of(STEPS_PER_TICK) {
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
        self.check_answers()?;
        self.check_nodes()
    }

    fn tick(&mut self, faults: bool) -> Step {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let node = self.nodes.get_mut(&id).expect("known id");
            match (&mut node.replica, node.restart_at) {
                (Some(r), _) => r.tick(),
                (None, Some(at)) if at <= self.now => self.start(id)?,
                _ => {}
            }
        }
        if faults {
            self.inject_faults();
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

    fn deliver(&mut self, m: Message) -> Step {
        let to = m.to;
        let Some(replica) = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()) else {
            return Ok(());
        };
        if self.options.verbose {
            println!(
                "[{:>6}] {} -> {} t{} {:?}",
                self.now, m.from, m.to, m.term, m.body
            );
        }
        match replica.step(m) {
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

    /// Hands messages a node sent to the network (through the tamper hook).
    pub(crate) fn send_all(&mut self, messages: Vec<Message>) {
        for mut m in messages {
            if let Some(t) = self.tamper.as_mut() {
                t.outgoing(&mut m);
            }
            self.net.send(self.now, m, &mut self.rng);
        }
        self.report.messages = self.net.sent;
        self.report.dropped = self.net.dropped;
    }

    /// The per-step scan: leaders, commit indexes, new leaders' logs.
    fn check_nodes(&mut self) -> Step {
        for (&id, node) in self.nodes.iter_mut() {
            let Some(raft) = node.replica.as_ref().map(|r| r.raw()) else {
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
}

/// The seed of node `id`'s disk faults in the run of `seed`.
pub(crate) fn disk_seed(seed: u64, id: NodeId) -> u64 {
    seed ^ (id << 40) ^ 0x5EED_D15C
}

/// Runs one seed.
pub fn run(options: SimOptions) -> Result<RunReport, Failure> {
    Simulation::new(options).run()
}
