//! keel's `Forward` service on the peer port: the leader's side of a write
//! another member passed on.

use std::sync::Arc;

use keel_api::keelpb::forward_server::{Forward, ForwardServer};
use keel_api::keelpb::{Command, Outcome};
use tonic::{Request, Response, Status};

use super::decoding_limit;
use crate::core::{Core, ServerError};

/// Serves forwarded writes.
pub(crate) struct ForwardService(pub(crate) Arc<Core>);

impl ForwardService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> ForwardServer<Self> {
        let limit = decoding_limit(self.0.limits.max_request_bytes);
        ForwardServer::new(self).max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(&self, request: Request<Command>) -> Result<Response<Outcome>, Status> {
        let response = self.0.propose_forwarded(request.into_inner()).await?;
        let outcome = response.into_outcome().map_err(ServerError::from)?;
        Ok(Response::new(outcome))
    }
}
