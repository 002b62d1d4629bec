//! The key-value operations: ranges served from the local store (after a
//! ReadIndex unless serializable), writes replicated through raft.

use std::time::Duration;

use keel_api::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use keel_api::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{txn_is_read_only, txn_is_serializable, validate, WriteResponse};

use super::{blocking, Core, ServerError};
use crate::auth::Caller;

impl Core {
    /// A range read for `caller`.
    pub(crate) async fn range(
        &self,
        caller: &Caller,
        request: RangeRequest,
    ) -> Result<RangeResponse, ServerError> {
        validate::range(&request)?;
        if !request.serializable {
            self.linearizable().await?;
        }
        // After the read index, as etcd checks: a permission (or user)
        // removed before the read began is seen here.
        self.authorize_read(caller, &request.key, &request.range_end)?;
        let store = self.store.clone();
        let mut response = blocking("range", move || store.range(&request)).await??;
        self.complete(&mut response.header);
        Ok(response)
    }

    /// Puts a key for `caller`.
    pub(crate) async fn put(
        &self,
        caller: &Caller,
        request: PutRequest,
    ) -> Result<PutResponse, ServerError> {
        match self.write_op(caller, Op::Put(request)).await? {
            WriteResponse::Put(mut response) => {
                self.complete(&mut response.header);
                Ok(response)
            }
            _ => Err(unexpected("put")),
        }
    }

    /// Deletes a key or a range for `caller`.
    pub(crate) async fn delete_range(
        &self,
        caller: &Caller,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ServerError> {
        match self.write_op(caller, Op::DeleteRange(request)).await? {
            WriteResponse::DeleteRange(mut response) => {
                self.complete(&mut response.header);
                Ok(response)
            }
            _ => Err(unexpected("delete")),
        }
    }

    /// A transaction for `caller`. As in etcd, only the outer response's
    /// header is a full one: the responses inside carry their revision only.
    /// One that only reads is served here, as a range is.
    pub(crate) async fn txn(
        &self,
        caller: &Caller,
        request: TxnRequest,
    ) -> Result<TxnResponse, ServerError> {
        if txn_is_read_only(&request) {
            return self.read_only_txn(caller, request).await;
        }
        match self.write_op(caller, Op::Txn(request)).await? {
            WriteResponse::Txn(mut response) => {
                self.complete(&mut response.header);
                Ok(response)
            }
            _ => Err(unexpected("txn")),
        }
    }

    /// A transaction of ranges only: after a read index (unless every
    /// range is serializable), from this member's store, as etcd serves it.
    /// It never enters the log, so its outcome is never in doubt.
    async fn read_only_txn(
        &self,
        caller: &Caller,
        request: TxnRequest,
    ) -> Result<TxnResponse, ServerError> {
        let serializable = txn_is_serializable(&request);
        let mut command = CommandPb {
            op: Some(Op::Txn(request)),
            auth: None,
        };
        validate::command(&command, self.limits.max_txn_ops)?;
        if !serializable {
            self.linearizable().await?;
        }
        // After the read index, as for a range.
        self.authorize(caller, &mut command)?;
        let Some(Op::Txn(request)) = command.op else {
            return Err(unexpected("txn"));
        };
        let store = self.store.clone();
        let mut response = blocking("txn", move || store.read_txn(&request)).await??;
        self.complete(&mut response.header);
        Ok(response)
    }

    /// Compacts history up to a revision; a physical compaction answers
    /// once the history is gone from this member's storage, as etcd's does.
    pub(crate) async fn compact(
        &self,
        caller: &Caller,
        request: CompactionRequest,
    ) -> Result<CompactionResponse, ServerError> {
        let (revision, physical) = (request.revision, request.physical);
        let mut response = match self.write_op(caller, Op::Compact(request)).await? {
            WriteResponse::Compact(response) => response,
            _ => return Err(unexpected("compaction")),
        };
        if physical {
            let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
            while self.store.physically_compacted() < revision {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ServerError::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.complete(&mut response.header);
        Ok(response)
    }

    /// Writes `op` for `caller`, if the auth rules let it.
    async fn write_op(&self, caller: &Caller, op: Op) -> Result<WriteResponse, ServerError> {
        let mut command = CommandPb {
            op: Some(op),
            auth: None,
        };
        self.authorize(caller, &mut command)?;
        self.write(command).await
    }
}

/// The store answered with a response of another kind than the request's.
pub(super) fn unexpected(what: &str) -> ServerError {
    ServerError::Internal(format!(
        "the store answered a {what} with another kind of response"
    ))
}
