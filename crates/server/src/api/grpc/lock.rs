//! `v3lockpb.Lock`.

use std::sync::Arc;

use keel_api::v3lockpb::lock_server::{Lock, LockServer};
use keel_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::coordination::Coordinator;

/// The Lock service of one member.
pub(crate) struct LockService(pub(crate) Arc<Coordinator>);

impl LockService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> LockServer<Self> {
        LockServer::new(self)
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        self.0.authorize(
            &Caller::of(request.extensions()),
            &request.get_ref().name,
            true,
        )?;
        Ok(Response::new(self.0.lock(request.into_inner()).await?))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        // The key names its lock: `<name>/<lease>`.
        let key = &request.get_ref().key;
        let name = key
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&key[..], |at| &key[..at]);
        self.0
            .authorize(&Caller::of(request.extensions()), name, true)?;
        Ok(Response::new(self.0.unlock(request.into_inner()).await?))
    }
}
