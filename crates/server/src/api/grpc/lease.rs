//! `etcdserverpb.Lease`. A keep-alive stream answers each request once its
//! renewal is applied; requests for many leases on one stream (as etcd's
//! clients send them) are renewed together, not one after another.

use std::pin::Pin;
use std::sync::Arc;

use keel_api::etcdserverpb::lease_server::{Lease, LeaseServer};
use keel_api::etcdserverpb::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::decoding_limit;
use crate::auth::Caller;
use crate::core::Core;

/// Keep-alive answers a stream holds for a client that reads slowly.
const KEEP_ALIVE_QUEUE: usize = 16;

/// The Lease service of one member.
pub(crate) struct LeaseService(pub(crate) Arc<Core>);

impl LeaseService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> LeaseServer<Self> {
        let limit = decoding_limit(self.0.limits.max_request_bytes);
        LeaseServer::new(self).max_decoding_message_size(limit)
    }
}

/// A keep-alive stream's answers.
pub(crate) type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Answers each keep-alive request of `requests` (gRPC's or the JSON
/// gateway's) once its renewal is applied; the answers end after the
/// requests do and every one is answered, or at the first bad request.
pub(crate) fn keep_alive<R>(core: Arc<Core>, mut requests: R) -> KeepAliveStream
where
    R: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    let (answers, answered) = mpsc::channel(KEEP_ALIVE_QUEUE);
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                request = requests.next() => request,
                _ = answers.closed() => return,
            };
            let id = match request {
                Some(Ok(request)) => request.id,
                None => return,
                Some(Err(status)) => {
                    let _ = answers.send(Err(status)).await;
                    return;
                }
            };
            let (core, answers) = (core.clone(), answers.clone());
            tokio::spawn(async move {
                let answer = match core.lease_keep_alive(id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(core.header()),
                        id,
                        ttl,
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                let _ = answers.send(answer).await;
            });
        }
    });
    Box::pin(ReceiverStream::new(answered))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(
            self.0.lease_grant(request.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        Ok(Response::new(
            self.0
                .lease_revoke(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Ok(Response::new(keep_alive(
            self.0.clone(),
            request.into_inner(),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            self.0.lease_time_to_live(request.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(self.0.lease_leases().await?))
    }
}
