//! [`RaftNode`]: the handle applications use, and the task that drives the
//! Raft core — ticks, messages, the Ready loop (send ∥ persist, then apply),
//! snapshots — on tokio.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::io::{self, Write};

use bytes::Bytes;
use keel_raft::{
    ConfChange, ConfState, Entry, EntryId, EntryKind, Index, MemStorage, Message, NodeId, RawNode,
    ReadIndexError, Ready, Role, SnapshotChunk, SnapshotMeta,
};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::NodeConfig;
use crate::error::{ProposeError, ReadError, StartError, TransferError};
use crate::snapshot_file::{FileSnapshot, SnapshotWriter};
use crate::state_machine::StateMachine;
use crate::store::{snapshot_path, LogStore, StoreError};
use crate::transport::{MessageSink, Transport};

/// What an observer sees of a node; published on every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: u64,
    /// Its commit index.
    pub commit: Index,
    /// Its applied index.
    pub applied: Index,
    /// The membership in effect.
    pub conf_state: ConfState,
    /// False once the node has stopped.
    pub running: bool,
}

type ReadFn<S> = Box<dyn FnOnce(Result<&S, ReadError>) + Send>;

enum Request<S: StateMachine> {
    Propose(Bytes, oneshot::Sender<Result<S::Response, ProposeError>>),
    Read(ReadFn<S>),
    ConfChange(ConfChange, oneshot::Sender<Result<ConfState, ProposeError>>),
    Transfer(NodeId, oneshot::Sender<Result<(), TransferError>>),
    Stop,
}

/// A handle to a running node. Cheap to clone; every clone talks to the same node.
pub struct RaftNode<S: StateMachine> {
    requests: mpsc::UnboundedSender<Request<S>>,
    inbox: MessageSink,
    status: watch::Receiver<Status>,
    addresses: Arc<BTreeMap<NodeId, String>>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    wal_syncs: Arc<AtomicU64>,
}

impl<S: StateMachine> Clone for RaftNode<S> {
    fn clone(&self) -> Self {
        RaftNode {
            requests: self.requests.clone(),
            inbox: self.inbox.clone(),
            status: self.status.clone(),
            addresses: self.addresses.clone(),
            task: self.task.clone(),
            wal_syncs: self.wal_syncs.clone(),
        }
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Starts a node: recovers its state from `config.data_dir`, and runs
    /// until [`stop`](Self::stop). Messages from peers go into
    /// [`inbox`](Self::inbox); messages to peers go out through `transport`.
    pub fn start(
        config: NodeConfig,
        mut state_machine: S,
        transport: impl Transport,
    ) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Config(format!(
                "creating data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let opened = LogStore::open(&config)?;
        let applied = opened.snapshot.as_ref().map_or(0, |s| s.meta.last.index);
        if let Some(snapshot) = opened
            .snapshot
            .as_ref()
            .filter(|s| s.meta.last.index > state_machine.applied_index())
        {
            let failed = |reason: String| StartError::Snapshot {
                path: config.data_dir.clone(),
                reason,
            };
            let mut reader = snapshot.reader().map_err(|e| failed(e.to_string()))?;
            state_machine.restore(&mut reader).map_err(failed)?;
        }
        let storage = opened.store.storage();
        // Election timeouts must differ between nodes and between runs.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(
            clock ^ config.id.rotate_left(32),
        ));
        let raw = RawNode::new(config.core_config(applied), storage, rng)?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (inbox, inbox_rx) = mpsc::unbounded_channel();
        let (snapshots_tx, snapshots_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(status_of(&raw, true));
        let addresses = Arc::new(config.initial_members.clone());
        let wal_syncs = Arc::new(AtomicU64::new(0));
        let driver = Driver {
            wal_syncs: wal_syncs.clone(),
            raw,
            store: opened.store,
            sm: state_machine,
            transport,
            config,
            proposals: BTreeMap::new(),
            changes: BTreeMap::new(),
            reads_waiting_index: BTreeMap::new(),
            reads_waiting_apply: Vec::new(),
            next_read: 0,
            receiving: None,
            snapshot_running: false,
            snapshots_done: snapshots_tx,
            applied,
            last_snapshot: applied,
            status: status_tx,
            addresses: addresses.clone(),
        };
        let task = tokio::spawn(driver.run(requests_rx, inbox_rx, snapshots_rx));
        Ok(RaftNode {
            requests,
            inbox,
            status,
            addresses,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            wal_syncs,
        })
    }

    /// Where the transport delivers messages addressed to this node.
    pub fn inbox(&self) -> MessageSink {
        self.inbox.clone()
    }

    /// Proposes `command`; resolves with the state machine's response once it
    /// is applied on this node (which must be the leader).
    pub async fn propose(&self, command: S::Command) -> Result<S::Response, ProposeError> {
        let data =
            postcard::to_allocvec(&command).map_err(|e| ProposeError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.send(Request::Propose(Bytes::from(data), tx))?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// A linearizable read: `f` runs on the state machine once this node has
    /// applied everything committed before the read began (ReadIndex,
    /// confirmed by the leader; works on followers too).
    pub async fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> R + Send + 'static,
    ) -> Result<R, ReadError> {
        let (tx, rx) = oneshot::channel();
        let run: ReadFn<S> = Box::new(move |sm| {
            let _ = tx.send(sm.map(f));
        });
        self.requests
            .send(Request::Read(run))
            .map_err(|_| ReadError::Stopped)?;
        rx.await.map_err(|_| ReadError::Stopped)?
    }

    /// Confirms a linearizable read point (ReadIndex) and waits until this
    /// node has applied it; returns the applied index then (at least the
    /// read index), at which reading local state is linearizable.
    pub async fn read_index(&self) -> Result<Index, ReadError> {
        let status = self.status.clone();
        self.read(move |_| status.borrow().applied).await
    }

    /// Adds `id` as a learner: it receives the log but does not vote.
    pub async fn add_learner(&self, id: NodeId) -> Result<ConfState, ProposeError> {
        self.change_membership(ConfChange::add_learner(id)).await
    }

    /// Promotes learner `id` to voter (refused until it has caught up).
    pub async fn promote(&self, id: NodeId) -> Result<ConfState, ProposeError> {
        self.change_membership(ConfChange::add_voter(id)).await
    }

    /// Removes `id` (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<ConfState, ProposeError> {
        self.change_membership(ConfChange::remove(id)).await
    }

    /// Any membership change; resolves with the membership once applied here.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::ConfChange(change, tx))?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Hands leadership to voter `to`.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), TransferError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Transfer(to, tx))
            .map_err(|_| TransferError::Stopped)?;
        rx.await.map_err(|_| TransferError::Stopped)?
    }

    /// The node's current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A channel that tells of every status change, leadership included.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// How many times the WAL has been synced (fdatasync): with group
    /// commit, far fewer than the entries written.
    pub fn wal_syncs(&self) -> u64 {
        self.wal_syncs.load(Ordering::Relaxed)
    }

    /// The configured address of `id`, if known.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.addresses.get(&id).cloned()
    }

    /// Stops the node and waits for its task to end. Pending requests fail
    /// with `Stopped`; everything acknowledged is durable.
    pub async fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn send(&self, request: Request<S>) -> Result<(), ProposeError> {
        self.requests
            .send(request)
            .map_err(|_| ProposeError::Stopped)
    }
}

fn status_of(raw: &RawNode<MemStorage>, running: bool) -> Status {
    let s = raw.status();
    Status {
        id: s.id,
        role: s.soft_state.role,
        leader: s.soft_state.leader,
        term: s.hard_state.term,
        commit: s.hard_state.commit,
        applied: s.applied,
        conf_state: raw.conf_state(),
        running,
    }
}

/// A proposal waiting for its entry to be applied.
struct Waiter<T> {
    term: u64,
    reply: oneshot::Sender<Result<T, ProposeError>>,
}

/// Answers every waiter below `index` with `error`.
/// Called for every applied entry, so it costs nothing when no waiter is below.
fn settle<R>(waiters: &mut BTreeMap<Index, Waiter<R>>, index: Index, error: &ProposeError) {
    while let Some(first) = waiters.first_entry() {
        if *first.key() >= index {
            break;
        }
        let _ = first.remove().reply.send(Err(error.clone()));
    }
}

/// The task that owns the core, the store and the state machine.
struct Driver<S: StateMachine, T> {
    raw: RawNode<MemStorage>,
    store: LogStore,
    sm: S,
    transport: T,
    config: NodeConfig,
    proposals: BTreeMap<Index, Waiter<S::Response>>,
    changes: BTreeMap<Index, Waiter<ConfState>>,
    /// Reads sent for confirmation: request id → (deadline, reader).
    reads_waiting_index: BTreeMap<u64, (Instant, ReadFn<S>)>,
    /// Confirmed reads waiting for the applied index to reach theirs.
    reads_waiting_apply: Vec<(Index, ReadFn<S>)>,
    next_read: u64,
    /// The file a snapshot being received is streamed into.
    receiving: Option<SnapshotWriter>,
    /// A snapshot of our own state is being written in the background.
    snapshot_running: bool,
    /// Where background snapshot writers report.
    snapshots_done: mpsc::UnboundedSender<io::Result<FileSnapshot>>,
    /// The last index applied to the state machine.
    applied: Index,
    last_snapshot: Index,
    status: watch::Sender<Status>,
    addresses: Arc<BTreeMap<NodeId, String>>,
    wal_syncs: Arc<AtomicU64>,
}

/// Why a node stopped on its own: going on could corrupt or lose state.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    /// Durable state could not be written.
    #[error("cannot persist: {0}")]
    Store(#[from] StoreError),
    /// A committed entry is not a command of this state machine: every
    /// replica would fail on it the same way, so applying must not go on.
    #[error("committed entry {index} does not decode as a command: {reason}")]
    Undecodable {
        /// The entry's index.
        index: Index,
        /// The decoder's complaint.
        reason: String,
    },
    /// The state machine's `apply_batch` broke its contract.
    #[error(
        "apply_batch returned {responses} responses for {commands} commands \
         (entries {first} to {last})"
    )]
    ResponseCount {
        /// The first entry of the batch.
        first: Index,
        /// The last entry of the batch.
        last: Index,
        /// Commands handed to the state machine.
        commands: usize,
        /// Responses it returned.
        responses: usize,
    },
}

/// How many queued inputs one loop turn takes before handling a Ready.
const MAX_BATCH: usize = 4096;

impl<S: StateMachine, T: Transport> Driver<S, T> {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request<S>>,
        mut inbox: mpsc::UnboundedReceiver<Vec<Message>>,
        mut snapshots: mpsc::UnboundedReceiver<io::Result<FileSnapshot>>,
    ) {
        let mut ticker = tokio::time::interval(self.config.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut stop = false;
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                request = requests.recv() => match request {
                    Some(r) => stop |= self.handle(r),
                    None => stop = true,
                },
                batch = inbox.recv() => {
                    if let Some(batch) = batch {
                        self.step(batch);
                    }
                }
                Some(written) = snapshots.recv() => {
                    if let Err(e) = self.snapshot_written(written) {
                        tracing::error!(id = self.config.id, error = %e, "cannot record a snapshot; stopping the node");
                        stop = true;
                    }
                }
            }
            // Take whatever else is queued, so one Ready carries it all.
            for _ in 0..MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => stop |= self.handle(r),
                    Err(_) => break,
                }
            }
            for _ in 0..MAX_BATCH {
                match inbox.try_recv() {
                    Ok(batch) => self.step(batch),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.handle_readies() {
                tracing::error!(id = self.config.id, error = %e, "stopping the node");
                stop = true;
            }
            self.wal_syncs.store(self.store.syncs(), Ordering::Relaxed);
            if stop {
                self.answer_pending();
                self.publish_status(false);
                break;
            }
            self.publish_status(true);
        }
    }

    /// The node stops: every proposal and read still waiting is answered.
    fn answer_pending(&mut self) {
        self.settle_before(Index::MAX, ProposeError::Stopped);
        for (_, (_, read)) in std::mem::take(&mut self.reads_waiting_index) {
            read(Err(ReadError::Stopped));
        }
        for (_, read) in std::mem::take(&mut self.reads_waiting_apply) {
            read(Err(ReadError::Stopped));
        }
    }

    fn tick(&mut self) {
        self.raw.tick();
        let now = Instant::now();
        let expired: Vec<u64> = self
            .reads_waiting_index
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((_, read)) = self.reads_waiting_index.remove(&id) {
                read(Err(ReadError::Timeout));
            }
        }
    }

    fn step(&mut self, batch: Vec<Message>) {
        for m in batch {
            if let Err(e) = self.raw.step(m) {
                tracing::debug!(id = self.config.id, error = %e, "dropped a message");
            }
        }
    }

    /// Handles one request; returns true to stop.
    fn handle(&mut self, request: Request<S>) -> bool {
        match request {
            Request::Propose(data, reply) => {
                let proposed = self.raw.propose(data);
                self.wait_for(proposed, reply, |d| &mut d.proposals);
            }
            Request::ConfChange(change, reply) => {
                let proposed = self.raw.propose_conf_change(change);
                self.wait_for(proposed, reply, |d| &mut d.changes);
            }
            Request::Read(read) => {
                self.next_read += 1;
                match self.raw.read_index(self.next_read) {
                    Ok(()) => {
                        let deadline = Instant::now()
                            + self.config.tick_interval * (2 * self.config.election_ticks);
                        self.reads_waiting_index
                            .insert(self.next_read, (deadline, read));
                    }
                    Err(ReadIndexError::NoLeader) => read(Err(ReadError::NoLeader)),
                }
            }
            Request::Transfer(to, reply) => {
                let _ = reply.send(self.raw.transfer_leader(to).map_err(TransferError::from));
            }
            Request::Stop => return true,
        }
        false
    }

    /// Files `reply` under the entry a proposal got, or answers at once if
    /// the core refused it.
    fn wait_for<R>(
        &mut self,
        proposed: Result<EntryId, keel_raft::ProposeError>,
        reply: oneshot::Sender<Result<R, ProposeError>>,
        waiters: fn(&mut Self) -> &mut BTreeMap<Index, Waiter<R>>,
    ) {
        match proposed {
            Ok(id) => {
                let waiter = Waiter {
                    term: id.term,
                    reply,
                };
                waiters(self).insert(id.index, waiter);
            }
            Err(e) => {
                let _ = reply.send(Err(self.refusal(e)));
            }
        }
    }

    fn refusal(&self, e: keel_raft::ProposeError) -> ProposeError {
        match e {
            keel_raft::ProposeError::NotLeader { leader } => ProposeError::NotLeader {
                leader,
                address: leader.and_then(|l| self.addresses.get(&l).cloned()),
            },
            other => ProposeError::Refused(other),
        }
    }

    fn handle_readies(&mut self) -> Result<(), Fatal> {
        while self.raw.has_ready() {
            let ready = self.raw.ready();
            self.handle_ready(ready)?;
            self.raw.advance();
        }
        Ok(self.maybe_snapshot()?)
    }

    fn handle_ready(&mut self, ready: Ready) -> Result<(), Fatal> {
        // The leader's appends go out first, so the network overlaps the fsync.
        self.send(ready.messages);
        for chunk in ready.snapshot_chunks {
            self.receive_chunk(chunk)?;
        }
        if let Some(meta) = ready.snapshot {
            let index = meta.last.index;
            let snapshot = self.install(meta)?;
            self.store.install_snapshot(snapshot)?;
            self.last_snapshot = index;
            self.applied = index;
            self.settle_before(index + 1, ProposeError::Indeterminate);
        }
        self.store.persist(&ready.entries, ready.hard_state)?;
        self.send(ready.persisted_messages);
        self.apply_entries(ready.committed_entries)?;
        if let Some(cs) = ready.conf_state {
            self.store.set_conf_state(cs);
        }
        for rs in ready.read_states {
            if let Some((_, read)) = self.reads_waiting_index.remove(&rs.request) {
                self.reads_waiting_apply.push((rs.index, read));
            }
        }
        self.run_reads();
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        let mut by_peer: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for m in messages {
            by_peer.entry(m.to).or_default().push(m);
        }
        for (to, batch) in by_peer {
            self.transport.send(to, batch);
        }
    }

    /// Applies a Ready's committed entries: the commands go to the state
    /// machine as one batch, then every waiting proposal is answered in log
    /// order. A command that does not decode, or a batch answered with the
    /// wrong number of responses, is fatal: nothing is answered.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Fatal> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last) = (first.index, last.index);
        let mut batch = Vec::new();
        for e in &entries {
            if e.kind == EntryKind::Normal && !e.data.is_empty() {
                let command = postcard::from_bytes::<S::Command>(&e.data).map_err(|err| {
                    Fatal::Undecodable {
                        index: e.index,
                        reason: err.to_string(),
                    }
                })?;
                batch.push((e.index, command));
            }
        }
        let indexes: Vec<Index> = batch.iter().map(|(i, _)| *i).collect();
        let responses = self.sm.apply_batch(batch);
        if responses.len() != indexes.len() {
            return Err(Fatal::ResponseCount {
                first,
                last,
                commands: indexes.len(),
                responses: responses.len(),
            });
        }
        let mut responses: BTreeMap<Index, S::Response> =
            indexes.into_iter().zip(responses).collect();
        for e in &entries {
            // Proposals at lower indexes were overwritten and never got here.
            self.settle_before(e.index, ProposeError::Lost);
            if e.kind == EntryKind::ConfChange {
                if let Some(w) = self.changes.remove(&e.index) {
                    let result = if w.term == e.term {
                        Ok(self.raw.conf_state())
                    } else {
                        Err(ProposeError::Lost)
                    };
                    let _ = w.reply.send(result);
                }
            }
            if let Some(w) = self.proposals.remove(&e.index) {
                let result = match responses.remove(&e.index) {
                    Some(r) if w.term == e.term => Ok(r),
                    _ => Err(ProposeError::Lost),
                };
                let _ = w.reply.send(result);
            }
        }
        self.applied = last;
        Ok(())
    }

    /// Waiters below `index` can no longer be applied here: their entries
    /// were replaced (`Lost`), a snapshot skipped them (`Indeterminate`), or
    /// the node stops (`Stopped`).
    fn settle_before(&mut self, index: Index, error: ProposeError) {
        settle(&mut self.proposals, index, &error);
        settle(&mut self.changes, index, &error);
    }

    fn run_reads(&mut self) {
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.reads_waiting_apply = waiting;
        for (_, read) in ready {
            read(Ok(&self.sm));
        }
    }

    /// Streams a received chunk into the snapshot file (a chunk at offset 0
    /// starts a new one).
    fn receive_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), StoreError> {
        let path = snapshot_path(self.store.dir(), chunk.meta.last.index);
        let err = |source| StoreError::Snapshot {
            path: path.clone(),
            source,
        };
        if chunk.offset == 0 {
            let writer = SnapshotWriter::create(
                path.clone(),
                chunk.meta.last,
                chunk.meta.conf_state.clone(),
            )
            .map_err(err)?;
            self.receiving = Some(writer);
        }
        let Some(writer) = self.receiving.as_mut() else {
            // The core hands out chunks in order from offset 0 within one life.
            return Err(err(io::Error::other(
                "a snapshot chunk without its beginning",
            )));
        };
        writer.write_all(&chunk.data).map_err(err)
    }

    /// Completes the received snapshot and restores the state machine from it.
    fn install(&mut self, meta: SnapshotMeta) -> Result<Arc<FileSnapshot>, StoreError> {
        let path = snapshot_path(self.store.dir(), meta.last.index);
        let err = |source| StoreError::Snapshot {
            path: path.clone(),
            source,
        };
        let writer = self
            .receiving
            .take()
            .ok_or_else(|| err(io::Error::other("no snapshot was being received")))?;
        let snapshot = writer.finish().map_err(err)?;
        if snapshot.meta != meta {
            return Err(err(io::Error::other(
                "the received snapshot does not match its metadata",
            )));
        }
        let mut reader = snapshot.reader().map_err(err)?;
        self.sm.restore(&mut reader).map_err(StoreError::Restore)?;
        Ok(Arc::new(snapshot))
    }

    /// Every `snapshot_threshold` applied entries, takes a view of the state
    /// and writes it out on a blocking thread; apply goes on meanwhile.
    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let applied = self.applied;
        if self.snapshot_running || applied < self.last_snapshot + self.config.snapshot_threshold {
            return Ok(());
        }
        let Ok(term) = self.raw.log_term(applied) else {
            return Ok(());
        };
        let last = EntryId {
            term,
            index: applied,
        };
        let conf_state = self.raw.conf_state();
        let view = self.sm.snapshot();
        let path = snapshot_path(self.store.dir(), applied);
        let done = self.snapshots_done.clone();
        self.snapshot_running = true;
        self.last_snapshot = applied;
        tokio::task::spawn_blocking(move || {
            let written = SnapshotWriter::create(path, last, conf_state).and_then(|mut out| {
                S::write_snapshot(view, &mut out)?;
                out.finish()
            });
            let _ = done.send(written);
        });
        Ok(())
    }

    /// A background snapshot is on disk: compact the log up to it.
    fn snapshot_written(&mut self, written: io::Result<FileSnapshot>) -> Result<(), StoreError> {
        self.snapshot_running = false;
        let snapshot = match written {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(id = self.config.id, error = %e, "writing a snapshot failed; will retry");
                self.last_snapshot = self.applied.saturating_sub(self.config.snapshot_threshold);
                return Ok(());
            }
        };
        let index = snapshot.meta.last.index;
        if index < self.last_snapshot || self.raw.log_term(index).is_err() {
            // A snapshot from the leader overtook it.
            return Ok(());
        }
        self.store.compact(Arc::new(snapshot))?;
        tracing::info!(id = self.config.id, index, "snapshot taken, log compacted");
        Ok(())
    }

    fn publish_status(&self, running: bool) {
        let next = status_of(&self.raw, running);
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}
