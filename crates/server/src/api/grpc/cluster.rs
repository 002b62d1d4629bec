//! `etcdserverpb.Cluster`, served to clients and to peers (which pass
//! membership changes on to the leader through it, marked as forwarded).
//! Changes need root once auth is on; a change another member passed on
//! was checked there, and is taken as such on the peer port only.

use std::sync::Arc;

use keel_api::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use keel_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::cluster::FORWARDED_KEY;
use crate::core::Core;

/// The Cluster service of one member, on its client port or its peer
/// port.
pub(crate) struct ClusterService {
    core: Arc<Core>,
    on_peer_port: bool,
}

impl ClusterService {
    /// The service for clients.
    pub(crate) fn for_clients(core: Arc<Core>) -> Self {
        ClusterService {
            core,
            on_peer_port: false,
        }
    }

    /// The service for the other members.
    pub(crate) fn for_peers(core: Arc<Core>) -> Self {
        ClusterService {
            core,
            on_peer_port: true,
        }
    }

    /// The tonic service.
    pub(crate) fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
    }

    /// The change request, and whether another member passed it on, once
    /// its caller may change the membership.
    fn change<T>(&self, request: Request<T>) -> Result<(T, bool), Status> {
        let forwarded = self.on_peer_port && request.metadata().contains_key(FORWARDED_KEY);
        if !forwarded {
            self.core
                .authorize_admin(&Caller::of(request.extensions()))?;
        }
        Ok((request.into_inner(), forwarded))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let (request, forwarded) = self.change(request)?;
        Ok(Response::new(
            self.core.member_add(request, forwarded).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let (request, forwarded) = self.change(request)?;
        Ok(Response::new(
            self.core.member_remove(request, forwarded).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let (request, forwarded) = self.change(request)?;
        Ok(Response::new(
            self.core.member_update(request, forwarded).await?,
        ))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let linearizable = request.get_ref().linearizable;
        Ok(Response::new(self.core.member_list(linearizable).await?))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let (request, forwarded) = self.change(request)?;
        Ok(Response::new(
            self.core.member_promote(request, forwarded).await?,
        ))
    }
}
