//! A simulated node: keel-node's [`Replica`] over a [`SimDisk`] and an
//! [`Outbox`], so the simulator runs the Ready handling that ships. Around
//! it the simulator starts and crashes nodes, hands them Readys, and shows
//! the checkers what each Ready did.

use keel_node::replica::{Fatal, Handled, Replica, ReplicaOptions};
use keel_raft::{ConfState, HardState, Index, MemStorage, NodeId, RawNode, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{Checker, Property, Violation};
use crate::disk::{DiskError, SimDisk};
use crate::network::{Outbox, Time};
use crate::simulation::{node_error, Simulation, Step, STEPS_PER_TICK};
use crate::state_machine::{Journal, StateMachine};

/// keel-node's replica, as the simulator runs it.
pub type SimReplica = Replica<StateMachine, SimDisk, Outbox>;

/// One node: its durable parts, and its replica while it runs.
pub struct SimNode {
    /// `None` while crashed.
    pub replica: Option<SimReplica>,
    /// The state machine and its applied index while the node is down
    /// (durable, like the disk).
    parked: Option<(StateMachine, Index)>,
    /// The node's disk: survives crashes. Its membership is the one as of
    /// the state machine's applied index.
    pub disk: MemStorage,
    /// Commit index already reported to the checker during this life.
    pub commit_reported: Index,
    incarnation: u64,
    /// When a crashed node comes back.
    pub restart_at: Option<Time>,
}

impl SimNode {
    /// A node of the initial cluster. Like etcd, the initial membership is
    /// the first log entry, committed and applied: nodes added later learn
    /// it from the log like any other change.
    pub fn bootstrap(
        id: NodeId,
        voters: &[NodeId],
        checker: &mut Checker,
    ) -> Result<Self, Violation> {
        let entry = keel_raft::bootstrap_entry(voters);
        let disk = MemStorage::new(ConfState::with_voters(voters));
        disk.append(std::slice::from_ref(&entry))
            .expect("an empty log takes entry 1");
        disk.set_hard_state(HardState {
            term: 1,
            vote: None,
            commit: 1,
        });
        let sm = StateMachine::default();
        checker.observe_log(id, 0, std::slice::from_ref(&entry))?;
        checker.observe_apply(id, &entry, sm.digest)?;
        checker.observe_durable_commit(id, 1)?;
        Ok(SimNode {
            replica: None,
            parked: Some((sm, entry.index)),
            disk,
            commit_reported: 1,
            incarnation: 0,
            restart_at: None,
        })
    }

    /// A spare node: an empty disk. It learns the log, or a snapshot, and
    /// with them the membership, from the leader.
    pub fn spare() -> Self {
        SimNode {
            replica: None,
            parked: Some((StateMachine::default(), 0)),
            disk: MemStorage::new(ConfState::default()),
            commit_reported: 0,
            incarnation: 0,
            restart_at: None,
        }
    }

    /// The membership persisted with the applied index.
    pub fn durable_conf(&self) -> ConfState {
        self.disk
            .initial_state()
            .expect("MemStorage never fails")
            .conf_state
    }

    /// The index the state machine has applied, up or down.
    pub fn applied(&self) -> Index {
        match (&self.replica, &self.parked) {
            (Some(r), _) => r.applied(),
            (None, Some((_, applied))) => *applied,
            (None, None) => unreachable!("a node has its state machine in one place"),
        }
    }

    /// The node's core, while it runs.
    pub fn raw(&self) -> Option<&RawNode<MemStorage>> {
        self.replica.as_ref().map(Replica::raw)
    }

    /// Stops the replica (answering whatever waits on it): the disk loses
    /// what was not synced, the state machine is kept.
    fn stop(&mut self) {
        if let Some(replica) = self.replica.take() {
            let applied = replica.applied();
            self.disk
                .set_hard_state(durable_hard_state(replica.store(), applied));
            self.parked = Some((replica.stop(), applied));
        }
    }
}

/// The hard state a crash would leave: the last synced one, with a commit
/// index at least the applied one (a durable state machine holds only
/// committed entries).
fn durable_hard_state(disk: &SimDisk, applied: Index) -> HardState {
    let mut hs = disk.synced_hard_state();
    hs.commit = hs.commit.max(applied);
    hs
}

impl Simulation {
    /// Starts (or restarts) node `id` from what its disk and state machine hold.
    pub(crate) fn start(&mut self, id: NodeId) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        node.incarnation += 1;
        node.restart_at = None;
        let (sm, applied) = node.parked.take().expect("a stopped node");
        let mut config = self.config.clone();
        config.id = id;
        config.applied = applied;
        let seed = self.options.seed ^ (id << 48) ^ (node.incarnation << 32);
        let raw = RawNode::new(
            config,
            node.disk.clone(),
            Box::new(StdRng::seed_from_u64(seed)),
        )
        .map_err(|e| node_error(format!("node {id} failed to restart: {e}")))?;
        node.commit_reported = raw.status().hard_state.commit;
        let disk_rng = StdRng::seed_from_u64(seed ^ 0x5EED_D15C);
        let disk = SimDisk::new(node.disk.clone(), disk_rng, self.crash_in_sync);
        let options = ReplicaOptions {
            read_timeout_ticks: 2 * self.config.election_tick as u64,
            // Read ids never repeat across lives.
            first_read_id: node.incarnation << 40,
            ..ReplicaOptions::default()
        };
        node.replica = Some(Replica::new(raw, disk, sm, Outbox::default(), options));
        let incarnation = node.incarnation;
        self.checker.observe_restart(id);
        self.trace(format_args!("node {id} starts (incarnation {incarnation})"));
        Ok(())
    }

    /// Crashes node `id`: what it had not synced is lost; it comes back
    /// after a random downtime.
    pub(crate) fn crash(&mut self, id: NodeId) {
        let downtime = self.rng.random_range(5..50) * STEPS_PER_TICK;
        let node = self.nodes.get_mut(&id).expect("known id");
        node.stop();
        node.restart_at = Some(self.now + downtime);
        self.report.crashes += 1;
        self.trace(format_args!(
            "node {id} crashes, back in {} ticks",
            downtime / STEPS_PER_TICK
        ));
    }

    /// Drops node `id` from the simulation for good.
    pub(crate) fn decommission(&mut self, id: NodeId) {
        if let Some(mut node) = self.nodes.remove(&id) {
            node.stop();
        }
    }

    /// Has node `id`'s replica handle its next Ready, if it has one, and
    /// shows the checkers what it did; a crash in a sync takes the node
    /// down. One Ready per node and step (where keel-node's loop handles
    /// every Ready in a row) lets the network interleave more.
    pub(crate) fn handle_ready(&mut self, id: NodeId) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        let Some(replica) = node.replica.as_mut() else {
            return Ok(());
        };
        let Some(ready) = replica.ready() else {
            return Ok(());
        };
        if let Some(first) = ready.entries.first() {
            let prev_term = replica.raw().log_term(first.index - 1).map_err(|e| {
                node_error(format!("node {id} lost the entry before its new ones: {e}"))
            })?;
            self.checker.observe_log(id, prev_term, &ready.entries)?;
        }
        if let Some(ss) = &ready.soft_state {
            self.trace(format_args!(
                "node {id} is {:?}, leader {:?}",
                ss.role, ss.leader
            ));
        }
        let node = self.nodes.get_mut(&id).expect("known id");
        let replica = node.replica.as_mut().expect("checked above");
        let digest_before = replica.state_machine().digest;
        let result = replica.handle_ready(ready);
        let journal = replica.state_machine_mut().take_journal();
        let installed = replica.store_mut().take_installed();
        let durable = durable_hard_state(replica.store(), replica.applied()).commit;
        for batch in replica.transport().take() {
            self.send_all(batch);
        }
        self.checker.observe_durable_commit(id, durable)?;
        if let Some(meta) = installed {
            let digest = journal.restored.ok_or_else(|| {
                node_error(format!("node {id} installed a snapshot without restoring"))
            })?;
            let index = meta.last.index;
            self.report.snapshots_installed += 1;
            self.trace(format_args!(
                "node {id} installs a snapshot at {index}/{}",
                meta.last.term
            ));
            self.checker.observe_snapshot(id, index, digest)?;
        }
        match result {
            Ok(handled) => self.observe_applied(id, digest_before, &handled, &journal),
            Err(Fatal::Store(DiskError::Crashed { when })) => {
                self.trace(format_args!("node {id} crashes {when}"));
                self.crash(id);
                Ok(())
            }
            Err(e) => Err(node_error(format!("node {id} stopped: {e}"))),
        }
    }

    /// Shows the checker every entry a Ready applied with the state right
    /// after it, and retires the client commands among them.
    fn observe_applied(
        &mut self,
        id: NodeId,
        digest_before: u64,
        handled: &Handled,
        journal: &Journal,
    ) -> Step {
        let mut digest = journal.restored.unwrap_or(digest_before);
        let mut commands = journal.applied.iter().peekable();
        for e in &handled.applied {
            if let Some(&(_, command, after)) = commands.next_if(|(i, _, _)| *i == e.index) {
                digest = after;
                if self.pending.remove(&command).is_some() {
                    self.trace(format_args!("command {command} applied at {}", e.index));
                }
            }
            self.checker.observe_apply(id, e, digest)?;
        }
        if let Some((index, ..)) = commands.next() {
            return Err(Violation {
                property: Property::StateMachineSafety,
                detail: format!("node {id} applied a command at {index} outside its Ready"),
            });
        }
        Ok(())
    }

    /// Snapshots live node `id`'s state machine, if it applied anything
    /// since its last snapshot, and compacts its log up to a few entries
    /// short of the snapshot.
    pub(crate) fn take_snapshot(&mut self, id: NodeId) -> Step {
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        let Some(replica) = node.replica.as_ref() else {
            return Ok(());
        };
        let first = node.disk.first_index().expect("MemStorage never fails");
        let applied = replica.applied();
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
        // As keel-node's driver writes one: the address book, then the
        // state machine's part.
        let mut data = Vec::new();
        keel_node::replica::write_snapshot_head(&replica.addresses(), &mut data)
            .expect("writing to memory cannot fail");
        data.extend_from_slice(&replica.state_machine().snapshot_data(padding));
        node.disk
            .create_snapshot(applied, node.durable_conf(), bytes::Bytes::from(data))
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
}
