//! `etcdserverpb.Cluster`, served to clients and to peers (which pass
//! membership changes on to the leader through it, marked as forwarded).

use std::sync::Arc;

use keel_api::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use keel_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::cluster::FORWARDED_KEY;
use crate::core::Core;

/// The Cluster service of one member.
pub(crate) struct ClusterService(pub(crate) Arc<Core>);

impl ClusterService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
    }
}

/// The request, and whether another member passed it on.
fn unwrap<T>(request: Request<T>) -> (T, bool) {
    let forwarded = request.metadata().contains_key(FORWARDED_KEY);
    (request.into_inner(), forwarded)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let (request, forwarded) = unwrap(request);
        Ok(Response::new(self.0.member_add(request, forwarded).await?))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let (request, forwarded) = unwrap(request);
        Ok(Response::new(
            self.0.member_remove(request, forwarded).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let (request, forwarded) = unwrap(request);
        Ok(Response::new(
            self.0.member_update(request, forwarded).await?,
        ))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let linearizable = request.get_ref().linearizable;
        Ok(Response::new(self.0.member_list(linearizable).await?))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let (request, forwarded) = unwrap(request);
        Ok(Response::new(
            self.0.member_promote(request, forwarded).await?,
        ))
    }
}
