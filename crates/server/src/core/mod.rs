//! The typed core of the store: every operation the APIs offer, as plain
//! Rust calls returning `Result<_, ServerError>`. No gRPC or HTTP in here:
//! the API edges (`crate::api`) decode requests, call the core and encode
//! what it returns, so etcd's gRPC service and the JSON gateway share one
//! behaviour.
//!
//! Writes are proposed on this member when it leads and passed on to the
//! leader otherwise ([`write`]); linearizable reads wait for a ReadIndex.

mod auth;
mod disk_space;
mod error;
mod kv;
mod leases;
pub(crate) mod maintenance;
mod members;
mod state_machine;
mod write;

use std::time::Duration;

use keel_api::etcdserverpb::ResponseHeader;
use keel_mvcc::Store;
use keel_node::{NodeId, RaftNode, Role};

use crate::cluster::{Forwarder, Peers};
use crate::identity::Identity;
use crate::leases::{LeaseClock, Renewer};

pub(crate) use auth::AuthSettings;
pub(crate) use disk_space::DiskSpace;
pub(crate) use error::ServerError;
pub(crate) use maintenance::Backup;
pub(crate) use state_machine::{EventSink, MvccStateMachine};

/// How far a request may go.
#[derive(Debug)]
pub(crate) struct Limits {
    /// The largest request accepted.
    pub(crate) max_request_bytes: usize,
    /// The most operations in one transaction.
    pub(crate) max_txn_ops: usize,
    /// The store size past which writes are refused.
    pub(crate) quota_backend_bytes: u64,
    /// How long a request may wait on raft.
    pub(crate) request_timeout: Duration,
    /// The space writes must leave on the data directory's disk.
    pub(crate) disk: DiskSpace,
}

/// One member's store, raft node and identity, and the operations on them.
pub(crate) struct Core {
    /// The raft node.
    pub(crate) node: RaftNode<MvccStateMachine>,
    /// The store (read directly; written only through the node).
    pub(crate) store: Store,
    /// This member.
    pub(crate) identity: Identity,
    /// Peer addresses.
    pub(crate) peers: Peers,
    /// Request limits.
    pub(crate) limits: Limits,
    /// When this member's leases run out.
    pub(crate) lease_clock: LeaseClock,
    /// The shortest TTL a lease is granted, in seconds.
    pub(crate) min_lease_ttl: i64,
    /// How this member issues tokens and hashes passwords.
    pub(crate) auth: AuthSettings,
    renewer: Renewer,
    forwarder: Forwarder,
}

impl Core {
    /// A core over a started node and its store.
    pub(crate) fn new(
        node: RaftNode<MvccStateMachine>,
        store: Store,
        identity: Identity,
        peers: Peers,
        limits: Limits,
        leases: (LeaseClock, Renewer, i64),
        auth: AuthSettings,
    ) -> Self {
        let (lease_clock, renewer, min_lease_ttl) = leases;
        Core {
            node,
            store,
            identity,
            forwarder: Forwarder::new(peers.clone()),
            peers,
            limits,
            lease_clock,
            min_lease_ttl,
            renewer,
            auth,
        }
    }

    /// A response header as of now.
    pub(crate) fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision: self.store.revision(),
            raft_term: self.node.status().term,
        }
    }

    /// Fills this member's fields of a header the store started (with the
    /// revision of the response).
    fn complete(&self, header: &mut Option<ResponseHeader>) {
        let ours = self.header();
        let header = header.get_or_insert(ours);
        header.cluster_id = ours.cluster_id;
        header.member_id = ours.member_id;
        header.raft_term = ours.raft_term;
    }

    /// Whether a leader is known.
    pub(crate) fn has_leader(&self) -> bool {
        self.node.status().leader.is_some()
    }

    /// Whether this member leads right now.
    pub(crate) fn is_leader(&self) -> bool {
        self.node.status().role == Role::Leader
    }

    /// Waits until reading the local store is linearizable (ReadIndex).
    pub(crate) async fn linearizable(&self) -> Result<(), ServerError> {
        self.linearizable_within(self.limits.request_timeout).await
    }

    /// [`Core::linearizable`], giving up after `patience`.
    pub(crate) async fn linearizable_within(&self, patience: Duration) -> Result<(), ServerError> {
        match tokio::time::timeout(patience, self.node.read_index()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ServerError::Timeout),
        }
    }

    /// Whether member `id` answers a small request on its peer port within
    /// `patience`.
    pub(crate) async fn probe_peer(&self, id: NodeId, patience: Duration) -> bool {
        self.forwarder.probe(id, patience).await
    }

    /// The leader, waiting for one up to the request timeout.
    pub(crate) async fn leader(&self) -> Result<NodeId, ServerError> {
        let mut watch = self.node.watch();
        let wait = watch.wait_for(|s| s.leader.is_some() || !s.running);
        let leader = match tokio::time::timeout(self.limits.request_timeout, wait).await {
            Ok(Ok(status)) => status.leader,
            _ => None,
        };
        leader.ok_or(ServerError::NoLeader)
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServerError::Internal(format!("{what} task failed: {e}")))
}
