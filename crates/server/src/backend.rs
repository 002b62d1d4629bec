//! What every service shares: the raft node, the store, this member's
//! identity and limits — and the two paths every request takes: a write
//! (proposed here when leader, forwarded to the leader otherwise) and a
//! linearizable read point.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keel_mvcc::pb::etcdserverpb::{alarm_request, AlarmRequest, AlarmType, ResponseHeader};
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{validate, Command, MvccError, Store, WriteResponse};
use keel_node::{NodeId, RaftNode, Role};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::errors;
use crate::forward;
use crate::identity::Identity;
use crate::peers::Peers;
use crate::rpc::keelpb::forward_client::ForwardClient;
use crate::state_machine::MvccStateMachine;

/// The gRPC metadata key with which a client asks to fail fast without a leader.
pub const HAS_LEADER_KEY: &str = "hasleader";

/// How far a request may go.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request accepted.
    pub max_request_bytes: usize,
    /// The most operations in one transaction.
    pub max_txn_ops: usize,
    /// The store size past which writes are refused.
    pub quota_backend_bytes: u64,
    /// How long a request may wait on raft.
    pub request_timeout: Duration,
}

/// The state shared by the services of one member.
pub struct Backend {
    /// The raft node.
    pub node: RaftNode<MvccStateMachine>,
    /// The store (read directly; written only through the node).
    pub store: Store,
    /// This member.
    pub identity: Identity,
    /// Peer addresses.
    pub peers: Peers,
    /// Request limits.
    pub limits: Limits,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Backend {
    /// A backend over a started node and its store.
    pub fn new(
        node: RaftNode<MvccStateMachine>,
        store: Store,
        identity: Identity,
        peers: Peers,
        limits: Limits,
    ) -> Self {
        Backend {
            node,
            store,
            identity,
            peers,
            limits,
            channels: Mutex::default(),
        }
    }

    /// A response header as of now.
    pub fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision: self.store.revision(),
            raft_term: self.node.status().term,
        }
    }

    /// Refuses a request that is too large or that asked (with the
    /// `hasleader` metadata) to fail while there is no leader.
    pub fn admit<T: prost::Message>(&self, request: &Request<T>) -> Result<(), Status> {
        if request.get_ref().encoded_len() > self.limits.max_request_bytes {
            return Err(errors::request_too_large());
        }
        let wants_leader = request
            .metadata()
            .get(HAS_LEADER_KEY)
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && self.node.status().leader.is_none() {
            return Err(errors::no_leader());
        }
        Ok(())
    }

    /// Waits until reading the local store is linearizable (ReadIndex).
    pub async fn linearizable(&self) -> Result<(), Status> {
        match tokio::time::timeout(self.limits.request_timeout, self.node.read_index()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(errors::read(e)),
            Err(_) => Err(errors::timeout()),
        }
    }

    /// Replicates a write and returns what applying it produced: proposed
    /// here on the leader, forwarded to the leader from a follower, retried
    /// across leader changes until the request timeout.
    pub async fn write(&self, command: CommandPb) -> Result<WriteResponse, Status> {
        validate::command(&command, self.limits.max_txn_ops).map_err(errors::mvcc)?;
        if adds_data(&command) && self.store.db_size() > self.limits.quota_backend_bytes {
            self.raise_nospace().await;
            return Err(errors::mvcc(MvccError::NoSpace));
        }
        let deadline = Instant::now() + self.limits.request_timeout;
        loop {
            let attempt = match self.node.status().leader {
                Some(leader) if leader == self.identity.member_id => {
                    self.propose_here(command.clone(), deadline).await
                }
                Some(leader) => self.forward(leader, command.clone(), deadline).await,
                None => Err(errors::no_leader()),
            };
            match attempt {
                Err(status) if errors::is_retryable(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) if errors::is_retryable(&status) => return Err(errors::timeout()),
                other => return other,
            }
        }
    }

    /// Proposes on this member, which must be the leader.
    pub async fn propose_here(
        &self,
        command: CommandPb,
        deadline: Instant,
    ) -> Result<WriteResponse, Status> {
        match tokio::time::timeout_at(deadline, self.node.propose(Command(command))).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(e))) => Err(errors::mvcc(e)),
            Ok(Err(e)) => Err(errors::propose(e)),
            Err(_) => Err(errors::timeout()),
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        command: CommandPb,
        deadline: Instant,
    ) -> Result<WriteResponse, Status> {
        let channel = self.peer_channel(leader)?;
        let mut request = Request::new(command);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match ForwardClient::new(channel).propose(request).await {
            Ok(outcome) => forward::response_of(outcome.into_inner()),
            // The leader is unreachable or just lost office: try again.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Err(Status::unavailable("etcdserver: leader changed"))
            }
            Err(status) => Err(status),
        }
    }

    /// A channel to member `id`'s peer port.
    pub fn peer_channel(&self, id: NodeId) -> Result<Channel, Status> {
        let address = self
            .peers
            .address(id)
            .ok_or_else(|| Status::unavailable("etcdserver: leader changed"))?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(&address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("peer address {address}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        channels.insert(address, channel.clone());
        Ok(channel)
    }

    /// The leader, waiting for one up to the request timeout.
    pub async fn leader(&self) -> Result<NodeId, Status> {
        let mut watch = self.node.watch();
        let wait = watch.wait_for(|s| s.leader.is_some() || !s.running);
        let leader = match tokio::time::timeout(self.limits.request_timeout, wait).await {
            Ok(Ok(status)) => status.leader,
            _ => None,
        };
        leader.ok_or_else(errors::no_leader)
    }

    /// Whether this member leads right now.
    pub fn is_leader(&self) -> bool {
        self.node.status().role == Role::Leader
    }

    /// Records a NOSPACE alarm for this member (best effort: the write that
    /// noticed is refused either way).
    async fn raise_nospace(&self) {
        let already = self.store.alarms().iter().any(|a| {
            a.member_id == self.identity.member_id && a.alarm == AlarmType::Nospace as i32
        });
        if already {
            return;
        }
        let alarm = CommandPb {
            op: Some(Op::Alarm(AlarmRequest {
                action: alarm_request::AlarmAction::Activate as i32,
                member_id: self.identity.member_id,
                alarm: AlarmType::Nospace as i32,
            })),
        };
        if let Err(e) = Box::pin(self.write(alarm)).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
    }
}

/// Whether a command can grow the store (and so is refused over the quota).
fn adds_data(command: &CommandPb) -> bool {
    match &command.op {
        Some(Op::Put(_)) => true,
        Some(Op::Txn(txn)) => txn_puts(txn),
        _ => false,
    }
}

fn txn_puts(txn: &keel_mvcc::pb::etcdserverpb::TxnRequest) -> bool {
    use keel_mvcc::pb::etcdserverpb::request_op::Request as R;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(R::RequestPut(_)) => true,
            Some(R::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}
