//! [`RaftNode`]: the handle applications use, and the task that drives the
//! Raft core — ticks, messages, the Ready loop (send ∥ persist, then apply),
//! snapshots — on tokio.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use keel_raft::{
    ConfChange, ConfState, EntryId, Index, MemStorage, Message, NodeId, RawNode, Role,
};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::error::{ProposeError, ReadError, StartError, TransferError};
use crate::replica::{Fatal, ReadFn, ReadView, Replica, ReplicaOptions};
use crate::snapshot_file::{FileSnapshot, SnapshotWriter};
use crate::state_machine::StateMachine;
use crate::store::{snapshot_path, DiskStore, StoreError};
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
        let opened = DiskStore::open(&config)?;
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
        let options = ReplicaOptions {
            addresses: addresses.clone(),
            read_timeout_ticks: 2 * u64::from(config.election_ticks),
            // Later lives start from later clocks: read ids never repeat.
            first_read_id: clock,
        };
        let replica = Replica::new(raw, opened.store, state_machine, transport, options);
        let driver = Driver {
            wal_syncs: wal_syncs.clone(),
            replica,
            config,
            snapshot_running: false,
            snapshots_done: snapshots_tx,
            last_snapshot: applied,
            status: status_tx,
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
        self.read_view(move |view| f(view.state)).await
    }

    /// Confirms a linearizable read point (ReadIndex) and waits until this
    /// node has applied it; returns the applied index then (at least the
    /// read index), at which reading local state is linearizable.
    pub async fn read_index(&self) -> Result<Index, ReadError> {
        self.read_view(|view| view.applied).await
    }

    async fn read_view<R: Send + 'static>(
        &self,
        f: impl FnOnce(ReadView<'_, S>) -> R + Send + 'static,
    ) -> Result<R, ReadError> {
        let (tx, rx) = oneshot::channel();
        let run: ReadFn<S> = Box::new(move |view| {
            let _ = tx.send(view.map(f));
        });
        self.requests
            .send(Request::Read(run))
            .map_err(|_| ReadError::Stopped)?;
        rx.await.map_err(|_| ReadError::Stopped)?
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

/// The task that runs a [`Replica`] on tokio: a ticker, the request and
/// message channels, and snapshots of its own state written on blocking
/// threads.
struct Driver<S: StateMachine, T> {
    replica: Replica<S, DiskStore, T>,
    config: NodeConfig,
    /// A snapshot of our own state is being written in the background.
    snapshot_running: bool,
    /// Where background snapshot writers report.
    snapshots_done: mpsc::UnboundedSender<io::Result<FileSnapshot>>,
    last_snapshot: Index,
    status: watch::Sender<Status>,
    wal_syncs: Arc<AtomicU64>,
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
                _ = ticker.tick() => self.replica.tick(),
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
            let syncs = self.replica.store().syncs();
            self.wal_syncs.store(syncs, Ordering::Relaxed);
            if stop {
                self.publish_status(false);
                self.replica.stop();
                break;
            }
            self.publish_status(true);
        }
    }

    fn step(&mut self, batch: Vec<Message>) {
        for m in batch {
            if let Err(e) = self.replica.step(m) {
                tracing::debug!(id = self.config.id, error = %e, "dropped a message");
            }
        }
    }

    /// Handles one request; returns true to stop.
    fn handle(&mut self, request: Request<S>) -> bool {
        match request {
            Request::Propose(data, reply) => {
                let _ = self.replica.propose(data, reply_to(reply));
            }
            Request::ConfChange(change, reply) => {
                let _ = self.replica.propose_conf_change(change, reply_to(reply));
            }
            Request::Read(read) => self.replica.read(read),
            Request::Transfer(to, reply) => {
                let _ = reply.send(self.replica.transfer_leader(to));
            }
            Request::Stop => return true,
        }
        false
    }

    fn handle_readies(&mut self) -> Result<(), Fatal<StoreError>> {
        while let Some(ready) = self.replica.ready() {
            let handled = self.replica.handle_ready(ready)?;
            if let Some(meta) = handled.installed {
                self.last_snapshot = meta.last.index;
            }
        }
        self.maybe_snapshot().map_err(Fatal::Store)
    }

    /// Every `snapshot_threshold` applied entries, takes a view of the state
    /// and writes it out on a blocking thread; apply goes on meanwhile.
    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let applied = self.replica.applied();
        if self.snapshot_running || applied < self.last_snapshot + self.config.snapshot_threshold {
            return Ok(());
        }
        let raw = self.replica.raw();
        let Ok(term) = raw.log_term(applied) else {
            return Ok(());
        };
        let last = EntryId {
            term,
            index: applied,
        };
        let conf_state = raw.conf_state();
        let view = self.replica.state_machine().snapshot();
        let path = snapshot_path(self.replica.store().dir(), applied);
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
                self.last_snapshot = self
                    .replica
                    .applied()
                    .saturating_sub(self.config.snapshot_threshold);
                return Ok(());
            }
        };
        let index = snapshot.meta.last.index;
        if index < self.last_snapshot || self.replica.raw().log_term(index).is_err() {
            // A snapshot from the leader overtook it.
            return Ok(());
        }
        self.replica.store_mut().compact(Arc::new(snapshot))?;
        tracing::info!(id = self.config.id, index, "snapshot taken, log compacted");
        Ok(())
    }

    fn publish_status(&self, running: bool) {
        let next = status_of(self.replica.raw(), running);
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
    }
}

/// A reply that answers through a oneshot channel.
fn reply_to<R: Send + 'static>(
    tx: oneshot::Sender<Result<R, ProposeError>>,
) -> crate::replica::Reply<R> {
    Box::new(move |result| {
        let _ = tx.send(result);
    })
}
