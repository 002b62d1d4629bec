//! `etcdserverpb.Cluster`: membership. Who is a member (and who a learner)
//! is the raft configuration; names and URLs are replicated member records.
//! Changes run on the leader; other members forward them there.
//!
//! A member added as a voter joins as a learner first (keel-raft refuses
//! voters that have not caught up) and is promoted by the leader once it
//! has: its record says it wants to vote, and [`promote_caught_up`] acts on
//! that on whichever member leads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keel_mvcc::pb::etcdserverpb::*;
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use keel_node::{ConfState, NodeId, ProposeError, RefusedProposal};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::config::host_port;
use crate::errors;
use crate::identity::stable_id;
use crate::rpc::cluster_client::ClusterClient;
use crate::rpc::cluster_server::{Cluster, ClusterServer};

/// Marks a request a member forwarded to the leader, so it is never
/// forwarded twice.
const FORWARDED_KEY: &str = "keel-forwarded";

/// The Cluster service of one member (served to clients and to peers).
pub struct ClusterService(pub Arc<Backend>);

impl ClusterService {
    /// The tonic service.
    pub fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
    }

    /// A client for the leader when this member does not lead, `None` when
    /// it does.
    async fn leader_client<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<ClusterClient<Channel>>, Status> {
        let leader = self.0.leader().await?;
        if leader == self.0.identity.member_id {
            return Ok(None);
        }
        if request.metadata().contains_key(FORWARDED_KEY) {
            return Err(Status::unavailable("etcdserver: not leader"));
        }
        Ok(Some(ClusterClient::new(self.0.peer_channel(leader)?)))
    }

    fn list(&self) -> Vec<Member> {
        member_list(&self.0)
    }

    async fn conf_change(
        &self,
        change: impl std::future::Future<Output = Result<ConfState, ProposeError>>,
    ) -> Result<(), Status> {
        match tokio::time::timeout(self.0.limits.request_timeout, change).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(errors::propose(e)),
            Err(_) => Err(errors::timeout()),
        }
    }

    async fn set_member(&self, member: Member) -> Result<(), Status> {
        let command = CommandPb {
            op: Some(Op::SetMember(member)),
        };
        self.0.write(command).await.map(|_| ())
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.0.header())
    }
}

/// A request to pass on to the leader.
fn forwarded<T>(request: Request<T>) -> Request<T> {
    let mut request = Request::new(request.into_inner());
    request.metadata_mut().insert(
        FORWARDED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    request
}

/// The members as etcd lists them: every voter and learner of the raft
/// configuration, with its recorded name and URLs.
pub fn member_list(backend: &Backend) -> Vec<Member> {
    let conf = backend.node.status().conf_state;
    let learners: BTreeSet<NodeId> = conf.learners.iter().copied().collect();
    let ids: BTreeSet<NodeId> = conf
        .voters
        .iter()
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners)
        .chain(&conf.learners_next)
        .copied()
        .collect();
    let records = backend.store.members();
    ids.into_iter()
        .map(|id| {
            let mut member = records
                .iter()
                .find(|m| m.id == id)
                .cloned()
                .unwrap_or_else(|| Member {
                    id,
                    peer_ur_ls: backend
                        .peers
                        .address(id)
                        .map(|a| vec![format!("http://{a}")])
                        .unwrap_or_default(),
                    ..Member::default()
                });
            member.is_learner = learners.contains(&id);
            member
        })
        .collect()
}

/// On the leader: promotes each learner whose record asks to vote, once it
/// has caught up. Runs until the node stops.
pub async fn promote_caught_up(backend: Arc<Backend>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticker.tick().await;
        let status = backend.node.status();
        if !status.running {
            return;
        }
        if !backend.is_leader() {
            continue;
        }
        for record in backend.store.members() {
            if record.is_learner || !status.conf_state.learners.contains(&record.id) {
                continue;
            }
            match backend.node.promote(record.id).await {
                Ok(_) => {
                    tracing::info!(member = %format!("{:x}", record.id), "learner promoted to voter")
                }
                Err(ProposeError::Refused(RefusedProposal::NotCaughtUp { .. })) => {}
                Err(e) => tracing::debug!(error = %e, "promotion deferred"),
            }
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.0.admit(&request)?;
        if let Some(mut leader) = self.leader_client(&request).await? {
            return leader.member_add(forwarded(request)).await;
        }
        let request = request.into_inner();
        if request.peer_ur_ls.is_empty() {
            return Err(Status::invalid_argument("etcdserver: no peer URLs given"));
        }
        for url in &request.peer_ur_ls {
            host_port(url).map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        }
        let members = self.list();
        if members
            .iter()
            .any(|m| m.peer_ur_ls.iter().any(|u| request.peer_ur_ls.contains(u)))
        {
            return Err(errors::peer_url_exists());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_le_bytes();
        let id = stable_id(
            request
                .peer_ur_ls
                .iter()
                .map(|u| u.as_bytes())
                .chain([&now[..]]),
        );
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: request.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: request.is_learner,
        };
        self.set_member(member.clone()).await?;
        self.conf_change(self.0.node.add_learner(id)).await?;
        tracing::info!(member = %format!("{id:x}"), urls = ?member.peer_ur_ls, learner = request.is_learner, "member added");
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.list(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.0.admit(&request)?;
        if let Some(mut leader) = self.leader_client(&request).await? {
            return leader.member_remove(forwarded(request)).await;
        }
        let id = request.into_inner().id;
        if !self.list().iter().any(|m| m.id == id) {
            return Err(errors::member_not_found());
        }
        self.conf_change(self.0.node.remove(id)).await?;
        let command = CommandPb {
            op: Some(Op::RemoveMember(id)),
        };
        self.0.write(command).await?;
        tracing::info!(member = %format!("{id:x}"), "member removed");
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.0.admit(&request)?;
        if let Some(mut leader) = self.leader_client(&request).await? {
            return leader.member_update(forwarded(request)).await;
        }
        let request = request.into_inner();
        for url in &request.peer_ur_ls {
            host_port(url).map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        }
        let Some(mut member) = self.list().into_iter().find(|m| m.id == request.id) else {
            return Err(errors::member_not_found());
        };
        member.peer_ur_ls = request.peer_ur_ls;
        // The record's learner flag means "wants to stay a learner".
        member.is_learner = self
            .0
            .store
            .members()
            .iter()
            .find(|m| m.id == request.id)
            .is_some_and(|m| m.is_learner);
        self.set_member(member).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.0.admit(&request)?;
        if request.get_ref().linearizable {
            self.0.linearizable().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.0.admit(&request)?;
        if let Some(mut leader) = self.leader_client(&request).await? {
            return leader.member_promote(forwarded(request)).await;
        }
        let id = request.into_inner().id;
        let Some(member) = self.list().into_iter().find(|m| m.id == id) else {
            return Err(errors::member_not_found());
        };
        if !member.is_learner {
            return Err(errors::member_not_learner());
        }
        self.conf_change(self.0.node.promote(id)).await?;
        let mut record = member;
        record.is_learner = false;
        self.set_member(record).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.list(),
        }))
    }
}
