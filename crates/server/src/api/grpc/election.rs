//! `v3electionpb.Election`.

use std::pin::Pin;
use std::sync::Arc;

use keel_api::v3electionpb::election_server::{Election, ElectionServer};
use keel_api::v3electionpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::coordination::Coordinator;

/// The Election service of one member.
pub(crate) struct ElectionService(pub(crate) Arc<Coordinator>);

impl ElectionService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> ElectionServer<Self> {
        ElectionServer::new(self)
    }

    /// Whether the request's caller may use the election `name`: observe
    /// it, or (`write`) take part.
    fn allow<T>(&self, request: &Request<T>, name: &[u8], write: bool) -> Result<(), Status> {
        Ok(self
            .0
            .authorize(&Caller::of(request.extensions()), name, write)?)
    }
}

/// The election a leader key belongs to.
fn leader_name(leader: &Option<LeaderKey>) -> &[u8] {
    leader.as_ref().map_or(&[], |l| &l.name[..])
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        self.allow(&request, &request.get_ref().name, true)?;
        Ok(Response::new(self.0.campaign(request.into_inner()).await?))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        self.allow(&request, leader_name(&request.get_ref().leader), true)?;
        Ok(Response::new(self.0.proclaim(request.into_inner()).await?))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.allow(&request, &request.get_ref().name, false)?;
        Ok(Response::new(
            self.0.leader(request.into_inner().name).await?,
        ))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        self.allow(&request, &request.get_ref().name, false)?;
        let (out, changes) = mpsc::channel(16);
        tokio::spawn(self.0.clone().observe(request.into_inner().name, out));
        let changes = ReceiverStream::new(changes).map(|change| change.map_err(Status::from));
        Ok(Response::new(Box::pin(changes)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        self.allow(&request, leader_name(&request.get_ref().leader), true)?;
        Ok(Response::new(self.0.resign(request.into_inner()).await?))
    }
}
