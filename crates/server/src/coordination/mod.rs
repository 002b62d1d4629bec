//! Locks and elections, as etcd's v3lock and v3election services offer
//! them, on keys and leases: a lock or a candidacy is a key
//! `<name>/<lease in hex>` attached to the caller's lease, and the key under
//! a name created first holds the lock or leads. A waiter watches the key
//! created just before its own until it is deleted (released, resigned, or
//! its lease ended), so waiters are served in order and nobody polls.

mod election;
mod lock;

use std::sync::Arc;

use bytes::Bytes;
use keel_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use keel_api::etcdserverpb::watch_create_request::FilterType;
use keel_api::etcdserverpb::{
    request_op, response_op, Compare, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, WatchCreateRequest,
};
use keel_api::mvccpb::{event::EventType, KeyValue};
use keel_mvcc::auth::Access;
use keel_mvcc::prefix_end;
use tokio_stream::StreamExt;

use crate::auth::Caller;
use crate::core::{Core, ServerError};
use crate::watch::queue::queue;
use crate::watch::{StreamId, WatchHub};

/// Bytes of watch responses a waiter buffers.
const WAITER_BUFFER: usize = 64 * 1024;

/// Locks and elections over one member's core and watch hub.
pub(crate) struct Coordinator {
    core: Arc<Core>,
    hub: Arc<WatchHub>,
}

impl Coordinator {
    /// A coordinator over `core`, waiting through `hub`.
    pub(crate) fn new(core: Arc<Core>, hub: Arc<WatchHub>) -> Self {
        Coordinator { core, hub }
    }

    /// Whether `caller` may use the lock or election `name`: read its keys
    /// and, to take part (`write`), create and delete them.
    pub(crate) fn authorize(
        &self,
        caller: &Caller,
        name: &[u8],
        write: bool,
    ) -> Result<(), ServerError> {
        let prefix = prefix_of(name);
        let end = prefix_end(&prefix);
        let accesses: &[Access] = if write {
            &[Access::Read, Access::Write]
        } else {
            &[Access::Read]
        };
        self.core
            .authorize_ranges(caller, [(&prefix[..], &end[..])], accesses)
    }

    /// Creates `key` (under `lease`, holding `value`) unless it exists;
    /// its create revision, and its value if it existed.
    async fn create_key(
        &self,
        key: &Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<(i64, Option<KeyValue>), ServerError> {
        let txn = TxnRequest {
            compare: vec![created_at(key, 0)],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value,
                    lease,
                    ..PutRequest::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                })),
            }],
        };
        let response = self.core.txn(&Caller::Member, txn).await?;
        if response.succeeded {
            return Ok((response.header.map_or(0, |h| h.revision), None));
        }
        let existing = response
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            .ok_or_else(|| ServerError::Internal("a key both absent and present".into()))?;
        Ok((existing.create_revision, Some(existing)))
    }

    /// Waits until no key under `prefix` created before `revision` is left.
    async fn wait_for_earlier(&self, prefix: &Bytes, revision: i64) -> Result<(), ServerError> {
        let mut serializable = false;
        loop {
            let last = self
                .by_creation(prefix, SortOrder::Descend, revision - 1, serializable)
                .await?;
            serializable = true;
            let Some(kv) = last.kvs.into_iter().next() else {
                return Ok(());
            };
            let read_at = last.header.map_or(0, |h| h.revision);
            self.wait_deleted(kv.key, read_at).await?;
        }
    }

    /// The key under `prefix` created first (`Ascend`) or last (`Descend`)
    /// among those created at or below `max_create_revision` (0: any).
    async fn by_creation(
        &self,
        prefix: &Bytes,
        order: SortOrder,
        max_create_revision: i64,
        serializable: bool,
    ) -> Result<RangeResponse, ServerError> {
        self.core
            .range(
                &Caller::Member,
                RangeRequest {
                    key: prefix.clone(),
                    range_end: prefix_end(prefix),
                    max_create_revision,
                    sort_target: SortTarget::Create as i32,
                    sort_order: order as i32,
                    limit: 1,
                    serializable,
                    ..RangeRequest::default()
                },
            )
            .await
    }

    /// Waits until `key` is deleted after revision `after`.
    async fn wait_deleted(&self, key: Bytes, after: i64) -> Result<(), ServerError> {
        let mut watch = self.watch(WatchCreateRequest {
            key,
            start_revision: after + 1,
            filters: vec![FilterType::Noput as i32],
            ..WatchCreateRequest::default()
        })?;
        while let Some(response) = watch.next().await {
            let deleted = response
                .events
                .iter()
                .any(|e| e.r#type == EventType::Delete as i32);
            // A cancel (compaction passed it) sends the caller back to
            // reading the keys again.
            if deleted || response.canceled {
                return Ok(());
            }
        }
        Err(ServerError::Stopped)
    }

    /// A watch of this member's own, for waiting; it ends when dropped.
    fn watch(&self, request: WatchCreateRequest) -> Result<Watching, ServerError> {
        let (sender, responses) = queue(WAITER_BUFFER);
        let stream = self.hub.open_stream(sender);
        let watching = Watching {
            hub: self.hub.clone(),
            stream,
            responses,
        };
        let (id, _) = self
            .hub
            .create(stream, &request)
            .map_err(|e| ServerError::InvalidArgument(e.to_string()))?;
        self.hub.activate(stream, id);
        Ok(watching)
    }
}

/// A waiter's watch stream, closed when dropped (the client gave up).
struct Watching {
    hub: Arc<WatchHub>,
    stream: StreamId,
    responses: crate::watch::queue::QueueReceiver,
}

impl Watching {
    async fn next(&mut self) -> Option<keel_api::etcdserverpb::WatchResponse> {
        self.responses.next().await
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.hub.close_stream(self.stream);
    }
}

/// The key of `name`'s entry held by `lease`: `<name>/<lease in hex>`.
fn entry_key(prefix: &Bytes, lease: i64) -> Bytes {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Bytes::from(key)
}

/// The prefix of `name`'s entries: the name and a slash.
fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    Bytes::from(prefix)
}

/// A compare: `key` was created at `revision` (0: it does not exist).
fn created_at(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        ..Compare::default()
    }
}
