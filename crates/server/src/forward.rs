//! Follower → leader write forwarding on the peer port: the `keelpb.Forward`
//! service, and the conversion of what applying a command produced to and
//! from its wire form.

use std::sync::Arc;

use keel_mvcc::pb::keelpb::{outcome::Result as Outcome_, Command as CommandPb, Outcome};
use keel_mvcc::{validate, WriteResponse};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::errors;
use crate::rpc::keelpb::forward_server::{Forward, ForwardServer};

/// The wire form of a write's result.
pub fn outcome_of(response: WriteResponse) -> Result<Outcome, Status> {
    let result = match response {
        WriteResponse::Put(r) => Outcome_::Put(r),
        WriteResponse::DeleteRange(r) => Outcome_::DeleteRange(r),
        WriteResponse::Txn(r) => Outcome_::Txn(r),
        WriteResponse::Compact(r) => Outcome_::Compact(r),
        WriteResponse::Alarm(r) => Outcome_::Alarm(r),
        WriteResponse::Member => Outcome_::Member(true),
        WriteResponse::AlreadyApplied => {
            return Err(Status::internal(
                "a fresh proposal was reported as replayed",
            ))
        }
    };
    Ok(Outcome {
        result: Some(result),
    })
}

/// A write's result from its wire form.
pub fn response_of(outcome: Outcome) -> Result<WriteResponse, Status> {
    Ok(match outcome.result {
        Some(Outcome_::Put(r)) => WriteResponse::Put(r),
        Some(Outcome_::DeleteRange(r)) => WriteResponse::DeleteRange(r),
        Some(Outcome_::Txn(r)) => WriteResponse::Txn(r),
        Some(Outcome_::Compact(r)) => WriteResponse::Compact(r),
        Some(Outcome_::Alarm(r)) => WriteResponse::Alarm(r),
        Some(Outcome_::Member(_)) => WriteResponse::Member,
        None => return Err(Status::internal("the leader sent an empty outcome")),
    })
}

/// Serves forwarded writes; only the leader accepts them (a member that
/// is not says so, and the sender retries on the new leader).
pub struct ForwardService(pub Arc<Backend>);

impl ForwardService {
    /// The tonic service.
    pub fn into_server(self) -> ForwardServer<Self> {
        let limit = self.0.limits.max_request_bytes + 512 * 1024;
        ForwardServer::new(self).max_decoding_message_size(limit)
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(&self, request: Request<CommandPb>) -> Result<Response<Outcome>, Status> {
        let backend = &self.0;
        if !backend.is_leader() {
            return Err(Status::unavailable("etcdserver: not leader"));
        }
        // A peer's command enters the log only if a client's would.
        let command = request.into_inner();
        validate::command(&command, backend.limits.max_txn_ops).map_err(errors::mvcc)?;
        let deadline = Instant::now() + backend.limits.request_timeout;
        let response = backend.propose_here(command, deadline).await?;
        Ok(Response::new(outcome_of(response)?))
    }
}
