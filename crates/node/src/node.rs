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
use crate::replica::{
    write_snapshot_head, AddressBook, Fatal, ReadFn, ReadView, Replica, ReplicaOptions,
};
use crate::snapshot_file::{FileSnapshot, SnapshotWriter};
use crate::state_machine::StateMachine;
use crate::store::{snapshot_path, DiskStore, StoreError};
use crate::transport::{LocalNetwork, MessageSink, Transport};
use crate::RefusedProposal;

/// What an observer sees of a node; published on every change. A stopped
/// node reports `running: false`, no leader, and the follower role (it
/// leads nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role (never `Leader` once stopped).
    pub role: Role,
    /// The leader it knows of (none once stopped).
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

impl Status {
    /// Whether this node is running and leads.
    pub fn is_leader(&self) -> bool {
        self.running && self.role == Role::Leader
    }
}

/// Who leads, as this node sees it; changes only when the leader or this
/// node's role does (not on every commit, as [`Status`] does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
    /// False once the node has stopped.
    pub running: bool,
}

/// How far the members' logs are, as the leader sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    /// The leader's last log index.
    pub last: Index,
    /// The highest index known to be on each member (the leader's own
    /// included).
    pub matched: BTreeMap<NodeId, Index>,
}

enum Request<S: StateMachine> {
    Propose(Bytes, oneshot::Sender<Result<S::Response, ProposeError>>),
    Read(ReadFn<S>),
    ConfChange(
        ConfChange,
        BTreeMap<NodeId, String>,
        oneshot::Sender<Result<ConfState, ProposeError>>,
    ),
    Transfer(NodeId, oneshot::Sender<Result<(), TransferError>>),
    Replication(oneshot::Sender<Option<Replication>>),
    Stop,
}

/// A handle to a running node. Cheap to clone; every clone talks to the same node.
pub struct RaftNode<S: StateMachine> {
    requests: mpsc::UnboundedSender<Request<S>>,
    inbox: MessageSink,
    status: watch::Receiver<Status>,
    leadership: watch::Receiver<Leadership>,
    addresses: AddressBook,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// What runs beside the node and stops with it (a transport's server).
    companions: Arc<std::sync::Mutex<Vec<Companion>>>,
    wal_syncs: Arc<AtomicU64>,
    /// One raft tick: how often membership changes are retried.
    tick: std::time::Duration,
    /// How far behind a learner may be and count as caught up.
    max_promotion_lag: u64,
    /// How `propose` retries: see [`NodeConfig::propose_retries`].
    retries: RetryPolicy,
}

/// Which refusals [`RaftNode::propose`] retries, how often, and how long it
/// waits for a leader in between.
#[derive(Clone, Copy)]
struct RetryPolicy {
    retries: u32,
    forwarding: bool,
    election_timeout: std::time::Duration,
}

impl RetryPolicy {
    /// Whether `e` guarantees the command was not applied and may pass by
    /// itself. Without forwarding, a known other leader does not pass.
    fn retries(&self, e: &ProposeError) -> bool {
        match e {
            ProposeError::NotLeader { leader: None, .. } | ProposeError::Lost => true,
            ProposeError::NotLeader { .. } => self.forwarding,
            ProposeError::Refused(
                RefusedProposal::TransferInProgress { .. }
                | RefusedProposal::UncommittedSizeExceeded { .. },
            ) => true,
            _ => false,
        }
    }
}

/// A task that runs beside a node: told to stop, then awaited, when the
/// node stops.
struct Companion {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl<S: StateMachine> Clone for RaftNode<S> {
    fn clone(&self) -> Self {
        RaftNode {
            requests: self.requests.clone(),
            inbox: self.inbox.clone(),
            status: self.status.clone(),
            leadership: self.leadership.clone(),
            addresses: self.addresses.clone(),
            task: self.task.clone(),
            companions: self.companions.clone(),
            tick: self.tick,
            max_promotion_lag: self.max_promotion_lag,
            retries: self.retries,
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
        let lock = lock_data_dir(&config.data_dir)?;
        let opened = DiskStore::open(&config)?;
        let applied = opened.snapshot.as_ref().map_or(0, |s| s.meta.last.index);
        // The address book: the initial members' for a new node; else the
        // latest snapshot's, and the log's changes after it when applied.
        let mut book = if opened.fresh {
            config.initial_members.clone()
        } else {
            BTreeMap::new()
        };
        if let Some(snapshot) = opened.snapshot.as_ref() {
            let failed = |reason: String| StartError::Snapshot {
                path: config.data_dir.clone(),
                reason,
            };
            let mut reader = snapshot.reader().map_err(|e| failed(e.to_string()))?;
            if snapshot.has_address_book() {
                book = crate::addresses::read_from_snapshot(&mut reader).map_err(failed)?;
            }
            if snapshot.meta.last.index > state_machine.applied_index() {
                state_machine.restore(&mut reader).map_err(failed)?;
            }
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
        let (leadership_tx, leadership) = watch::channel(leadership_of(&status.borrow()));
        let addresses = AddressBook::new(book);
        let wal_syncs = Arc::new(AtomicU64::new(0));
        let options = ReplicaOptions {
            addresses: addresses.clone(),
            read_timeout_ticks: 2 * u64::from(config.election_ticks),
            // As etcd does after 500 ms: half its default election timeout.
            read_retry_ticks: u64::from(config.election_ticks / 2).max(1),
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
            leadership: leadership_tx,
            _lock: lock,
        };
        let tick = driver.config.tick_interval;
        let max_promotion_lag = driver.config.raft.max_promotion_lag;
        let retries = RetryPolicy {
            retries: driver.config.propose_retries,
            forwarding: driver.config.forward_proposals,
            election_timeout: tick * driver.config.election_ticks,
        };
        let task = tokio::spawn(driver.run(requests_rx, inbox_rx, snapshots_rx));
        Ok(RaftNode {
            requests,
            inbox,
            status,
            leadership,
            addresses,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
            companions: Arc::default(),
            tick,
            max_promotion_lag,
            retries,
            wal_syncs,
        })
    }

    /// Starts a node on an in-process network and registers it there, so
    /// it receives its peers' messages at once (see [`start`](Self::start)).
    pub fn start_local(
        config: NodeConfig,
        state_machine: S,
        network: &LocalNetwork,
    ) -> Result<Self, StartError> {
        let id = config.id;
        let node = Self::start(config, state_machine, network.transport(id))?;
        network.register(id, node.inbox());
        Ok(node)
    }

    /// Starts a node talking gRPC: binds `listen`, starts the node with a
    /// [`GrpcTransport`](crate::GrpcTransport) to the peers in `config.initial_members`, and
    /// serves peers on the port. [`stop`](Self::stop) stops all of it and
    /// frees the port. A port in use is an error here, not later.
    #[cfg(feature = "grpc")]
    pub async fn start_grpc(
        config: NodeConfig,
        state_machine: S,
        cluster_id: u64,
        listen: &str,
    ) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Bind(listen.to_string(), e.to_string()))?;
        let transport = crate::GrpcTransport::new(cluster_id, config.initial_members.clone());
        let advertised = config
            .initial_members
            .get(&config.id)
            .cloned()
            .unwrap_or_else(|| listen.to_string());
        transport.advertise(advertised);
        let replies = transport.clone();
        let node = Self::start(config, state_machine, transport)?;
        let service = crate::RaftService::new(cluster_id, node.inbox()).answering_through(replies);
        let (stop, stopped) = oneshot::channel::<()>();
        let id = node.status().id;
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = crate::serve(listener, service, shutdown).await {
                tracing::error!(id, error = %e, "the raft transport's server failed");
            }
        });
        node.companions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Companion { stop, task });
        Ok(node)
    }

    /// Where the transport delivers messages addressed to this node.
    pub fn inbox(&self) -> MessageSink {
        self.inbox.clone()
    }

    /// Proposes `command`; resolves with this node's state machine's
    /// response once the command is applied here.
    ///
    /// Any member takes proposals: a follower sends the command to the
    /// leader through the transport ([`NodeConfig::forward_proposals`]).
    /// Refusals that guarantee the command was not applied and that pass
    /// by themselves — no leader yet, a leader change, a leadership
    /// transfer, a full pipeline, an entry lost to a new leader — are
    /// retried up to [`NodeConfig::propose_retries`] times, waiting for a
    /// leader (up to an election timeout) or a tick in between. What
    /// remains is returned; [`ProposeError::outcome`] says whether the
    /// command may have been applied: retry only what is
    /// [`Outcome::NotApplied`](crate::Outcome::NotApplied).
    pub async fn propose(&self, command: S::Command) -> Result<S::Response, ProposeError> {
        let data =
            postcard::to_allocvec(&command).map_err(|e| ProposeError::Encode(e.to_string()))?;
        let data = Bytes::from(data);
        let mut retries = self.retries.retries;
        loop {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Propose(data.clone(), tx))?;
            // Every request is answered; a reply dropped unanswered means
            // the node's task died, maybe after the entry reached the log.
            match rx.await.map_err(|_| ProposeError::Indeterminate)? {
                Err(e) if retries > 0 && self.retries.retries(&e) => {
                    retries -= 1;
                    if let ProposeError::NotLeader { leader: None, .. } = e {
                        self.wait_for_leader(self.retries.election_timeout).await;
                    } else {
                        tokio::time::sleep(self.tick).await;
                    }
                }
                outcome => return outcome,
            }
        }
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

    /// Adds `id`, listening at `address`, as a learner: it receives the
    /// log but does not vote. The address is recorded in the membership
    /// change itself, so every member learns it (and tells its transport).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: impl Into<String>,
    ) -> Result<ConfState, ProposeError> {
        let addresses = BTreeMap::from([(id, address.into())]);
        self.conf_change(ConfChange::add_learner(id), addresses)
            .await
    }

    /// Adds `id`, listening at `address`, as a learner and waits up to
    /// `timeout` until it has caught up (its log within the promotion lag
    /// of the leader's), retrying while a new leader settles or another
    /// change is being applied. It stays a learner.
    pub async fn add_learner_caught_up(
        &self,
        id: NodeId,
        address: impl Into<String>,
        timeout: std::time::Duration,
    ) -> Result<ConfState, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let conf = self.join_as_learner(id, address.into(), deadline).await?;
        loop {
            let Some(r) = self.replication().await else {
                let leader = self.status().leader;
                return Err(ProposeError::NotLeader {
                    leader,
                    address: leader.and_then(|l| self.address_of(l)),
                });
            };
            let matched = r.matched.get(&id).copied().unwrap_or(0);
            if matched > 0 && r.last.saturating_sub(matched) <= self.max_promotion_lag {
                return Ok(conf);
            }
            if tokio::time::Instant::now() + self.tick >= deadline {
                return Err(ProposeError::Refused(RefusedProposal::NotCaughtUp {
                    id,
                    matched,
                    last: r.last,
                }));
            }
            tokio::time::sleep(self.tick).await;
        }
    }

    /// Leader: how far each member's log is (`None` unless this node
    /// leads).
    pub async fn replication(&self) -> Option<Replication> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(Request::Replication(tx)).ok()?;
        rx.await.ok().flatten()
    }

    /// Promotes learner `id` to voter (refused until it has caught up).
    pub async fn promote(&self, id: NodeId) -> Result<ConfState, ProposeError> {
        self.change_membership(ConfChange::add_voter(id)).await
    }

    /// Adds `id` as a voter the safe way, waiting up to `timeout`: as a
    /// learner first, then promoted once it has caught up. Retries while a
    /// new leader settles or another change is being applied; fails on
    /// anything else (not the leader, an invalid change) or at the timeout.
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: impl Into<String>,
        timeout: std::time::Duration,
    ) -> Result<ConfState, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.join_as_learner(id, address.into(), deadline).await?;
        self.promote_when_caught_up(
            id,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
    }

    /// Promotes learner `id` once it has caught up, retrying up to
    /// `timeout` while it catches up, a new leader settles or another
    /// change is being applied.
    pub async fn promote_when_caught_up(
        &self,
        id: NodeId,
        timeout: std::time::Duration,
    ) -> Result<ConfState, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.retrying(deadline, || self.promote(id)).await
    }

    /// Adds `id` as a learner unless it is a member already, retrying
    /// until `deadline` while a new leader settles or another change is
    /// being applied; the membership then.
    async fn join_as_learner(
        &self,
        id: NodeId,
        address: String,
        deadline: tokio::time::Instant,
    ) -> Result<ConfState, ProposeError> {
        let state = self.status().conf_state;
        if state.learners.contains(&id) || state.voters.contains(&id) {
            return Ok(state);
        }
        self.retrying(deadline, || self.add_learner(id, address.clone()))
            .await
    }

    /// Runs a membership change until it is taken, retrying (once per tick)
    /// the refusals that pass by themselves, until `deadline`.
    async fn retrying<F: std::future::Future<Output = Result<ConfState, ProposeError>>>(
        &self,
        deadline: tokio::time::Instant,
        change: impl Fn() -> F,
    ) -> Result<ConfState, ProposeError> {
        loop {
            match change().await {
                Err(ProposeError::Refused(
                    RefusedProposal::NotCaughtUp { .. }
                    | RefusedProposal::NewLeader { .. }
                    | RefusedProposal::ConfChangeInProgress { .. },
                )) if tokio::time::Instant::now() + self.tick < deadline => {
                    tokio::time::sleep(self.tick).await;
                }
                other => return other,
            }
        }
    }

    /// Removes `id` (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<ConfState, ProposeError> {
        self.change_membership(ConfChange::remove(id)).await
    }

    /// Any membership change; resolves with the membership once applied
    /// here. Members it adds must already be in the address book (added
    /// before with [`add_learner`](Self::add_learner)), or be reachable by
    /// the transport without one.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, ProposeError> {
        self.conf_change(change, BTreeMap::new()).await
    }

    async fn conf_change(
        &self,
        change: ConfChange,
        addresses: BTreeMap<NodeId, String>,
    ) -> Result<ConfState, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::ConfChange(change, addresses, tx))?;
        let state = rx.await.map_err(|_| ProposeError::Indeterminate)??;
        // The change is answered as it applies, and the driver publishes
        // its status right after that Ready: wait for it, so that status()
        // (and a member list built on it) shows a change once it is
        // answered. The bound covers a later change applied in the same
        // round, which the status would show instead.
        let mut status = self.status.clone();
        let shown = status.wait_for(|s| s.conf_state == state || !s.running);
        let _ = tokio::time::timeout(STATUS_PATIENCE, shown).await;
        Ok(state)
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

    /// A channel that tells of every status change, leadership included
    /// (it changes with every commit).
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A channel that tells only of leadership changes: a new leader, no
    /// leader, this node's role, the node stopping.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// The leader, once one is known, waiting up to `timeout`; `None` if
    /// none was known in time or the node stopped.
    pub async fn wait_for_leader(&self, timeout: std::time::Duration) -> Option<NodeId> {
        let mut leadership = self.leadership.clone();
        let known = tokio::time::timeout(
            timeout,
            leadership.wait_for(|l| l.leader.is_some() || !l.running),
        )
        .await;
        match known {
            Ok(Ok(l)) => l.leader,
            _ => None,
        }
    }

    /// How many times the WAL has been synced (fdatasync): with group
    /// commit, far fewer than the entries written.
    pub fn wal_syncs(&self) -> u64 {
        self.wal_syncs.load(Ordering::Relaxed)
    }

    /// The configured address of `id`, if known.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.addresses.get(id)
    }

    /// Stops the node and waits for its task to end. Pending requests fail
    /// with `Stopped`; everything acknowledged is durable.
    pub async fn stop(&self) {
        let _ = self.requests.send(Request::Stop);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let companions =
            std::mem::take(&mut *self.companions.lock().unwrap_or_else(|e| e.into_inner()));
        for companion in companions {
            let _ = companion.stop.send(());
            let _ = companion.task.await;
        }
    }

    fn send(&self, request: Request<S>) -> Result<(), ProposeError> {
        self.requests
            .send(request)
            .map_err(|_| ProposeError::Stopped)
    }
}

/// How long an answered membership change waits for the status to show
/// it (see `RaftNode::conf_change`).
const STATUS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

fn status_of(raw: &RawNode<MemStorage>, running: bool) -> Status {
    let s = raw.status();
    Status {
        id: s.id,
        role: if running {
            s.soft_state.role
        } else {
            Role::Follower
        },
        leader: s.soft_state.leader.filter(|_| running),
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
    leadership: watch::Sender<Leadership>,
    wal_syncs: Arc<AtomicU64>,
    /// The data directory's lock, held while the node runs.
    _lock: std::fs::File,
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
            // (Not past a stop: what follows it is refused, never proposed.)
            for _ in 0..MAX_BATCH {
                if stop {
                    break;
                }
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
                // Whatever is still queued never reached the log.
                requests.close();
                while let Ok(request) = requests.try_recv() {
                    refuse_stopped(request);
                }
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
            Request::Propose(data, reply) if self.config.forward_proposals => {
                self.replica.forward(data, reply_to(reply));
            }
            Request::Propose(data, reply) => {
                let _ = self.replica.propose(data, reply_to(reply));
            }
            Request::ConfChange(change, addresses, reply) => {
                let _ = self
                    .replica
                    .propose_conf_change(change, &addresses, reply_to(reply));
            }
            Request::Read(read) => self.replica.read(read),
            Request::Transfer(to, reply) => {
                let _ = reply.send(self.replica.transfer_leader(to));
            }
            Request::Replication(reply) => {
                let raw = self.replica.raw();
                let matched = raw.matched();
                let _ = reply.send((!matched.is_empty()).then(|| Replication {
                    last: raw.status().last.index,
                    matched,
                }));
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
        let addresses = self.replica.addresses();
        tokio::task::spawn_blocking(move || {
            let written = SnapshotWriter::create(path, last, conf_state).and_then(|mut out| {
                write_snapshot_head(&addresses, &mut out)?;
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
        let leadership = leadership_of(&next);
        self.status.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
        self.leadership.send_if_modified(|l| {
            let changed = *l != leadership;
            *l = leadership;
            changed
        });
    }
}

fn leadership_of(status: &Status) -> Leadership {
    Leadership {
        leader: status.leader,
        role: status.role,
        running: status.running,
    }
}

/// Answers a request that arrived after the node stopped.
fn refuse_stopped<S: StateMachine>(request: Request<S>) {
    match request {
        Request::Propose(_, reply) => {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
        Request::ConfChange(_, _, reply) => {
            let _ = reply.send(Err(ProposeError::Stopped));
        }
        Request::Read(read) => read(Err(ReadError::Stopped)),
        Request::Transfer(_, reply) => {
            let _ = reply.send(Err(TransferError::Stopped));
        }
        Request::Replication(reply) => {
            let _ = reply.send(None);
        }
        Request::Stop => {}
    }
}

/// Locks `data_dir` for this node (released when the node's task ends, or
/// by the OS if the process dies): two nodes on one directory would write
/// one WAL.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartError::Config(format!("opening {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked(data_dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError::Config(format!(
            "locking {}: {e}",
            path.display()
        ))),
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
