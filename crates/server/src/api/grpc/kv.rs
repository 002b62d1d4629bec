//! `etcdserverpb.KV`.

use std::sync::Arc;

use keel_api::etcdserverpb::kv_server::{Kv, KvServer};
use keel_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::decoding_limit;
use crate::auth::Caller;
use crate::core::Core;

/// The KV service of one member.
pub(crate) struct KvService(pub(crate) Arc<Core>);

impl KvService {
    /// The tonic service.
    pub(crate) fn into_server(self) -> KvServer<Self> {
        let limit = decoding_limit(self.0.limits.max_request_bytes);
        KvServer::new(self).max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(
            self.0
                .range(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(
            self.0
                .put(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(
            self.0
                .delete_range(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(
            self.0
                .txn(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(
            self.0
                .compact(&Caller::of(request.extensions()), request.into_inner())
                .await?,
        ))
    }
}
