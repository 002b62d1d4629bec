//! A simulated node: keel-node's [`Replica`] over keel-node's [`DiskStore`]
//! (keel-wal's log and the snapshot files) on a [`FaultFs`], and an
//! [`Outbox`], so the simulator runs the Ready handling and the storage
//! code that ship. Around it the simulator starts and crashes nodes, hands
//! them Readys, and shows the checkers what each Ready did.
//!
//! The state machine lives in memory, as keel-node's default one: a
//! restart restores it from the snapshot the disk names and replays the log
//! after it, exactly as `RaftNode::start` does.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use keel_node::replica::{
    read_snapshot_head, AddressBook, Fatal, Handled, Replica, ReplicaOptions,
};
use keel_node::snapshot_file::SnapshotWriter;
use keel_node::store::{snapshot_path, DiskStore};
use keel_node::{NodeConfig, StateMachine as _};
use keel_raft::{ConfState, EntryId, Index, MemStorage, NodeId, RawNode, Storage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checker::{Property, Violation};
use crate::fault_fs::FaultFs;
use crate::network::{Outbox, Time};
use crate::simulation::{node_error, Simulation, Step, STEPS_PER_TICK};
use crate::state_machine::{Journal, StateMachine};

/// keel-node's replica, as the simulator runs it.
pub type SimReplica = Replica<StateMachine, DiskStore<FaultFs>, Outbox>;

/// Where a node keeps its data on its own disk.
const DATA_DIR: &str = "/keel";

/// Entries a node applies after its log's start before it may snapshot.
const MIN_ENTRIES_PER_SNAPSHOT: Index = 8;

/// One node: its disk, and its replica while it runs.
pub struct SimNode {
    /// `None` while down.
    pub replica: Option<SimReplica>,
    /// The node's disk: what survives its crashes.
    pub fs: FaultFs,
    /// The members a node of the initial cluster bootstraps with (read
    /// only while its disk holds no state); empty for a spare.
    initial_members: BTreeMap<NodeId, String>,
    /// While down: the applied index and membership it had when it stopped.
    down: (Index, ConfState),
    /// Commit index already reported to the checker during this life.
    pub commit_reported: Index,
    incarnation: u64,
    /// When a crashed node comes back.
    pub restart_at: Option<Time>,
}

/// The address the simulator gives node `id`.
pub fn address(id: NodeId) -> String {
    format!("sim-node-{id}")
}

impl SimNode {
    /// A node of the initial cluster, on an empty disk whose faults are
    /// drawn from `seed`. Like etcd (and keel-node's `DiskStore`), it
    /// writes the initial membership as the first log entry, committed, on
    /// its first start: nodes added later learn it from the log.
    pub fn bootstrap(voters: &[NodeId], seed: u64) -> Self {
        SimNode {
            initial_members: voters.iter().map(|&v| (v, address(v))).collect(),
            ..SimNode::spare(seed)
        }
    }

    /// A spare node: an empty disk. It learns the log, or a snapshot, and
    /// with them the membership, from the leader.
    pub fn spare(seed: u64) -> Self {
        SimNode {
            replica: None,
            fs: FaultFs::new(seed),
            initial_members: BTreeMap::new(),
            down: (0, ConfState::default()),
            commit_reported: 0,
            incarnation: 0,
            restart_at: None,
        }
    }

    /// The membership as of the applied index (while down: when it stopped).
    pub fn conf(&self) -> ConfState {
        match &self.replica {
            Some(r) => r.raw().conf_state(),
            None => self.down.1.clone(),
        }
    }

    /// The index the state machine has applied (while down: when it stopped).
    pub fn applied(&self) -> Index {
        match &self.replica {
            Some(r) => r.applied(),
            None => self.down.0,
        }
    }

    /// The node's core, while it runs.
    pub fn raw(&self) -> Option<&RawNode<MemStorage>> {
        self.replica.as_ref().map(Replica::raw)
    }

    /// Stops the replica (answering whatever waits on it); the state
    /// machine goes with it.
    fn stop(&mut self) {
        if let Some(replica) = self.replica.take() {
            self.down = (replica.applied(), replica.raw().conf_state());
            replica.stop();
        }
    }
}

impl Simulation {
    /// Starts (or restarts) node `id` from what its disk holds: keel-node's
    /// `DiskStore` recovers the log and the snapshot, the state machine is
    /// restored from the snapshot. A disk error while recovering (an
    /// injected one) is a crash: the node tries again later.
    pub(crate) fn start(&mut self, id: NodeId) -> Step {
        let node = self.nodes.get_mut(&id).expect("known id");
        node.incarnation += 1;
        node.restart_at = None;
        node.fs
            .set_faults(self.disk_error_chance, self.crash_in_sync);
        node.fs.take_injected();
        let mut node_config = NodeConfig::new(id, DATA_DIR);
        node_config.initial_members = node.initial_members.clone();
        let opened = match DiskStore::open_in(node.fs.clone(), &node_config) {
            Ok(opened) => opened,
            Err(e) if node.fs.take_injected() => {
                self.trace(format_args!("node {id} fails to start: {e}"));
                self.crash(id);
                return Ok(());
            }
            Err(e) => {
                return Err(node_error(format!(
                    "node {id} cannot recover from its disk: {e}"
                )))
            }
        };
        let recovery_error =
            |e: String| node_error(format!("node {id} cannot restore its snapshot: {e}"));
        let mut sm = StateMachine::default();
        let mut book = if opened.fresh {
            node_config.initial_members.clone()
        } else {
            BTreeMap::new()
        };
        let mut restored = None;
        if let Some(snapshot) = &opened.snapshot {
            let mut reader = snapshot
                .reader()
                .map_err(|e| recovery_error(e.to_string()))?;
            if snapshot.has_address_book() {
                book = read_snapshot_head(&mut reader).map_err(recovery_error)?;
            }
            sm.restore(&mut reader).map_err(recovery_error)?;
            let digest = sm.take_journal().restored.expect("restored");
            restored = Some((snapshot.meta.last.index, digest));
        }
        let applied = restored.map_or(0, |(index, _)| index);
        let storage = opened.store.storage();
        let state = storage.initial_state().expect("MemStorage never fails");
        self.checker.observe_recovery(id, restored)?;
        if opened.fresh && !node_config.initial_members.is_empty() {
            let first = storage
                .entries(1, 2, u64::MAX)
                .map_err(|e| node_error(format!("node {id} lost its bootstrap entry: {e}")))?;
            self.checker.observe_log(id, 0, &first)?;
        }
        self.checker
            .observe_durable_commit(id, state.hard_state.commit)?;
        self.checker.observe_restart(id);
        let mut config = self.config.clone();
        config.id = id;
        config.applied = applied;
        let node = self.nodes.get_mut(&id).expect("known id");
        let seed = self.options.seed ^ (id << 48) ^ (node.incarnation << 32);
        let raw = RawNode::new(config, storage, Box::new(StdRng::seed_from_u64(seed)))
            .map_err(|e| node_error(format!("node {id} failed to restart: {e}")))?;
        node.commit_reported = raw.status().hard_state.commit;
        let options = ReplicaOptions {
            addresses: AddressBook::new(book),
            read_timeout_ticks: 2 * self.config.election_tick as u64,
            // As keel-node's: a lost request or answer is asked again.
            read_retry_ticks: (self.config.election_tick as u64 / 2).max(1),
            // Read ids never repeat across lives.
            first_read_id: node.incarnation << 40,
        };
        node.replica = Some(Replica::new(
            raw,
            opened.store,
            sm,
            Outbox::default(),
            options,
        ));
        let incarnation = node.incarnation;
        self.trace(format_args!(
            "node {id} starts (incarnation {incarnation}) from applied {applied}, commit {}",
            state.hard_state.commit
        ));
        Ok(())
    }

    /// Crashes node `id`: its disk loses what was not synced (see
    /// [`FaultFs::crash`]); it comes back after a random downtime.
    pub(crate) fn crash(&mut self, id: NodeId) {
        let downtime = self.rng.random_range(5..50) * STEPS_PER_TICK;
        let node = self.nodes.get_mut(&id).expect("known id");
        node.stop();
        node.fs.crash();
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
            self.report.disk.add(&node.fs.stats());
        }
    }

    /// Has node `id`'s replica handle its next Ready, if it has one, and
    /// shows the checkers what it did. A store error the disk injected
    /// (`EIO`, `ENOSPC`, a crash in a sync) stops the replica, as keel-node
    /// stops on a failed write: the simulator takes the node down and
    /// restarts it from what is durable. Any other store error is a bug.
    /// One Ready per node and step (where keel-node's loop handles every
    /// Ready in a row) lets the network interleave more.
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
        let installing = ready.snapshot.as_ref().map(|meta| meta.last);
        let node = self.nodes.get_mut(&id).expect("known id");
        node.fs.take_injected();
        let replica = node.replica.as_mut().expect("checked above");
        let digest_before = replica.state_machine().digest;
        let result = replica.handle_ready(ready);
        let journal = replica.state_machine_mut().take_journal();
        for batch in replica.transport().take() {
            self.send_all(batch);
        }
        if let Some(digest) = journal.restored {
            let last = installing.ok_or_else(|| {
                node_error(format!("node {id} restored its state without a snapshot"))
            })?;
            self.report.snapshots_installed += 1;
            self.trace(format_args!(
                "node {id} installs a snapshot at {}/{}",
                last.index, last.term
            ));
            self.checker.observe_snapshot(id, last.index, digest)?;
        }
        match result {
            Ok(handled) => self.observe_applied(id, digest_before, &handled, &journal),
            Err(Fatal::Store(e)) if self.nodes[&id].fs.take_injected() => {
                self.trace(format_args!("node {id} stops on a disk error: {e}"));
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

    /// Snapshots live node `id`'s state machine at its applied index, if
    /// its log holds entries up to there, as keel-node's driver does: a
    /// snapshot file written through the disk, then `DiskStore::compact`.
    /// A snapshot file that fails to write (an injected error) is given up,
    /// as the driver does; a failed compaction takes the node down.
    pub(crate) fn take_snapshot(&mut self, id: NodeId) -> Step {
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        let Some(replica) = node.replica.as_ref() else {
            return Ok(());
        };
        let raw = replica.raw();
        let first = raw.storage().first_index().expect("MemStorage never fails");
        let applied = replica.applied();
        // As keel-node's driver, only once enough entries were applied since
        // the last snapshot: DiskStore compacts the whole log up to it, so
        // every lagging node then needs the snapshot, and a transfer of one
        // byte per message restarts with each newer snapshot.
        if applied < first + MIN_ENTRIES_PER_SNAPSHOT {
            return Ok(());
        }
        let Ok(term) = raw.log_term(applied) else {
            return Ok(());
        };
        let last = EntryId {
            term,
            index: applied,
        };
        let padding = if self.config.max_size_per_msg >= 300 {
            self.rng.random_range(200..3000)
        } else {
            // Chunks of a byte or so: keep transfers short.
            self.rng.random_range(0..8)
        };
        // As keel-node's driver writes one: the address book, then the
        // state machine's part.
        let mut data = Vec::new();
        keel_node::replica::write_snapshot_head(&replica.addresses(), &mut data)
            .expect("writing to memory cannot fail");
        data.extend_from_slice(&replica.state_machine().snapshot_data(padding));
        let path = snapshot_path(replica.store().dir(), applied);
        let fs = node.fs.clone();
        fs.take_injected();
        let written = SnapshotWriter::create_in(fs.clone(), path, last, raw.conf_state()).and_then(
            |mut out| {
                out.write_all(&data)?;
                out.finish()
            },
        );
        let snapshot = match written {
            Ok(snapshot) => snapshot,
            Err(e) if fs.take_injected() => {
                self.trace(format_args!("node {id} fails to write a snapshot: {e}"));
                return Ok(());
            }
            Err(e) => {
                return Err(node_error(format!(
                    "node {id} cannot write a snapshot at {applied}: {e}"
                )))
            }
        };
        let node = self.nodes.get_mut(&id).expect("known id");
        let replica = node.replica.as_mut().expect("checked above");
        match replica.store_mut().compact(Arc::new(snapshot)) {
            Ok(()) => {
                self.report.snapshots_taken += 1;
                self.trace(format_args!("node {id} snapshots at {applied}, compacts"));
                Ok(())
            }
            Err(e) if fs.take_injected() => {
                self.trace(format_args!("node {id} stops compacting: {e}"));
                self.crash(id);
                Ok(())
            }
            Err(e) => Err(node_error(format!(
                "node {id} cannot compact to {applied}: {e}"
            ))),
        }
    }
}
