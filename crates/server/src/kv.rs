//! `etcdserverpb.KV`: ranges served from the local store (after a ReadIndex
//! unless serializable), writes replicated through raft.

use std::sync::Arc;
use std::time::Duration;

use keel_mvcc::pb::etcdserverpb::*;
use keel_mvcc::pb::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{validate, WriteResponse};
use tonic::{Request, Response, Status};

use crate::backend::Backend;
use crate::errors;
use crate::rpc::kv_server::{Kv, KvServer};

/// The KV service of one member.
pub struct KvService(pub Arc<Backend>);

impl KvService {
    /// The tonic service, accepting messages a little over the request cap
    /// so that oversized ones get etcd's error rather than a transport one.
    pub fn into_server(self) -> KvServer<Self> {
        let limit = self.0.limits.max_request_bytes + 512 * 1024;
        KvServer::new(self).max_decoding_message_size(limit)
    }

    /// Fills the member's fields of a header the store started.
    fn complete(&self, header: &mut Option<ResponseHeader>) {
        let ours = self.0.header();
        let header = header.get_or_insert(ours);
        header.cluster_id = ours.cluster_id;
        header.member_id = ours.member_id;
        header.raft_term = ours.raft_term;
    }

    async fn write(&self, op: Op) -> Result<WriteResponse, Status> {
        if let Op::Put(put) = &op {
            refuse_leases(put)?;
        }
        self.0.write(CommandPb { op: Some(op) }).await
    }
}

/// Leases are not served yet, so no lease id can exist.
fn refuse_leases(put: &PutRequest) -> Result<(), Status> {
    if put.lease != 0 {
        return Err(Status::not_found("etcdserver: requested lease not found"));
    }
    Ok(())
}

fn refuse_leases_in(txn: &TxnRequest) -> Result<(), Status> {
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestPut(put)) => refuse_leases(put)?,
            Some(request_op::Request::RequestTxn(inner)) => refuse_leases_in(inner)?,
            _ => {}
        }
    }
    Ok(())
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!(
        "the store answered a {what} with another kind of response"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        self.0.admit(&request)?;
        let request = request.into_inner();
        validate::range(&request).map_err(errors::mvcc)?;
        if !request.serializable {
            self.0.linearizable().await?;
        }
        let store = self.0.store.clone();
        let mut response = tokio::task::spawn_blocking(move || store.range(&request))
            .await
            .map_err(|e| Status::internal(format!("range task failed: {e}")))?
            .map_err(errors::mvcc)?;
        self.complete(&mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.0.admit(&request)?;
        match self.write(Op::Put(request.into_inner())).await? {
            WriteResponse::Put(mut response) => {
                self.complete(&mut response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.0.admit(&request)?;
        match self.write(Op::DeleteRange(request.into_inner())).await? {
            WriteResponse::DeleteRange(mut response) => {
                self.complete(&mut response.header);
                Ok(Response::new(response))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.0.admit(&request)?;
        let txn = request.into_inner();
        refuse_leases_in(&txn)?;
        match self.write(Op::Txn(txn)).await? {
            WriteResponse::Txn(mut response) => {
                self.complete(&mut response.header);
                fill_nested_headers(&mut response, &self.0.header());
                Ok(Response::new(response))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.0.admit(&request)?;
        let request = request.into_inner();
        let (revision, physical) = (request.revision, request.physical);
        let mut response = match self.write(Op::Compact(request)).await? {
            WriteResponse::Compact(response) => response,
            _ => return Err(unexpected("compaction")),
        };
        if physical {
            // etcd answers a physical compaction once the history is gone
            // from this member's storage.
            let deadline = tokio::time::Instant::now() + self.0.limits.request_timeout;
            while self.0.store.physically_compacted() < revision {
                if tokio::time::Instant::now() >= deadline {
                    return Err(errors::timeout());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.complete(&mut response.header);
        Ok(Response::new(response))
    }
}

/// etcd fills the header of every response inside a txn too.
fn fill_nested_headers(txn: &mut TxnResponse, ours: &ResponseHeader) {
    let revision = txn.header.as_ref().map_or(ours.revision, |h| h.revision);
    let header = ResponseHeader { revision, ..*ours };
    for op in &mut txn.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header = Some(header),
            Some(response_op::Response::ResponsePut(r)) => r.header = Some(header),
            Some(response_op::Response::ResponseDeleteRange(r)) => r.header = Some(header),
            Some(response_op::Response::ResponseTxn(r)) => {
                r.header = Some(header);
                fill_nested_headers(r, ours);
            }
            None => {}
        }
    }
}
