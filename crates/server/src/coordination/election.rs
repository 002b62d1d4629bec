//! Elections: the candidate whose key under the election's name was created
//! first leads, and its key's value is what it proclaims.

use std::sync::Arc;

use bytes::Bytes;
use keel_api::etcdserverpb::range_request::SortOrder;
use keel_api::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest, TxnResponse};
use keel_api::etcdserverpb::{DeleteRangeRequest, WatchCreateRequest};
use keel_api::mvccpb::KeyValue;
use keel_api::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;

use keel_mvcc::prefix_end;

use super::{created_at, entry_key, prefix_of, Coordinator};
use crate::auth::Caller;
use crate::core::ServerError;

impl Coordinator {
    /// Stands for election `name` under `lease` and waits until elected.
    pub(crate) async fn campaign(
        &self,
        request: CampaignRequest,
    ) -> Result<CampaignResponse, ServerError> {
        if request.name.is_empty() {
            return Err(ServerError::InvalidArgument(
                "election: name is not provided".into(),
            ));
        }
        let prefix = prefix_of(&request.name);
        let key = entry_key(&prefix, request.lease);
        let (revision, existing) = self
            .create_key(&key, request.value.clone(), request.lease)
            .await?;
        let leader = LeaderKey {
            name: request.name.clone(),
            key: key.clone(),
            rev: revision,
            lease: request.lease,
        };
        if existing.is_some_and(|kv| kv.value != request.value) {
            // Standing again with another value: proclaim it.
            self.proclaim(ProclaimRequest {
                leader: Some(leader.clone()),
                value: request.value,
            })
            .await?;
        }
        self.wait_for_earlier(&prefix, revision).await?;
        let now = self.current_leader(&request.name, true).await?;
        match now {
            Some((kv, header)) if kv.key == key && kv.create_revision == revision => {
                Ok(CampaignResponse {
                    header,
                    leader: Some(leader),
                })
            }
            _ => Err(ServerError::SessionExpired),
        }
    }

    /// Sets the leader's value, if `leader` still leads.
    pub(crate) async fn proclaim(
        &self,
        request: ProclaimRequest,
    ) -> Result<ProclaimResponse, ServerError> {
        let leader = request.leader.ok_or(ServerError::MissingLeaderKey)?;
        let put = request_op::Request::RequestPut(PutRequest {
            key: leader.key.clone(),
            value: request.value,
            lease: leader.lease,
            ..PutRequest::default()
        });
        let response = self.while_leading(&leader, put).await?;
        if !response.succeeded {
            return Err(ServerError::ElectionNotLeader);
        }
        Ok(ProclaimResponse {
            header: response.header,
        })
    }

    /// The current leader's key-value.
    pub(crate) async fn leader(&self, name: Bytes) -> Result<LeaderResponse, ServerError> {
        match self.current_leader(&name, false).await? {
            Some((kv, header)) => Ok(LeaderResponse {
                header,
                kv: Some(kv),
            }),
            None => Err(ServerError::ElectionNoLeader),
        }
    }

    /// Gives up leadership (or a candidacy): deletes the key, if it is
    /// still the one `leader` names.
    pub(crate) async fn resign(
        &self,
        request: ResignRequest,
    ) -> Result<ResignResponse, ServerError> {
        let leader = request.leader.ok_or(ServerError::MissingLeaderKey)?;
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..DeleteRangeRequest::default()
        });
        let response = self.while_leading(&leader, delete).await?;
        Ok(ResignResponse {
            header: response.header,
        })
    }

    /// Applies `op` to the key of `leader` if that key is still the one it
    /// names (created at its revision); the txn's answer says whether.
    async fn while_leading(
        &self,
        leader: &LeaderKey,
        op: request_op::Request,
    ) -> Result<TxnResponse, ServerError> {
        self.core
            .txn(
                &Caller::Member,
                TxnRequest {
                    compare: vec![created_at(&leader.key, leader.rev)],
                    success: vec![RequestOp { request: Some(op) }],
                    failure: Vec::new(),
                },
            )
            .await
    }

    /// The leaders of election `name` as they change, from the current one
    /// on, into `out` until the receiver is dropped.
    pub(crate) async fn observe(
        self: Arc<Self>,
        name: Bytes,
        out: mpsc::Sender<Result<LeaderResponse, ServerError>>,
    ) {
        let prefix = prefix_of(&name);
        let mut last: Option<(Bytes, i64)> = None;
        let mut serializable = false;
        loop {
            let current = match self.current_leader(&name, serializable).await {
                Ok(current) => current,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            serializable = true;
            let read_at = match &current {
                Some((_, header)) => header.map_or(0, |h| h.revision),
                None => self.core.store.revision(),
            };
            if let Some((kv, header)) = current {
                let seen = (kv.key.clone(), kv.mod_revision);
                if last.as_ref() != Some(&seen) {
                    last = Some(seen);
                    let response = LeaderResponse {
                        header,
                        kv: Some(kv),
                    };
                    if out.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
            // Anything under the name may change the leader: look again.
            let watch = self.watch(WatchCreateRequest {
                key: prefix.clone(),
                range_end: prefix_end(&prefix),
                start_revision: read_at + 1,
                ..WatchCreateRequest::default()
            });
            let mut watch = match watch {
                Ok(watch) => watch,
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            };
            tokio::select! {
                _ = out.closed() => return,
                changed = watch.next() => if changed.is_none() { return },
            }
        }
    }

    /// The key under `name` created first, and the header of the read.
    async fn current_leader(
        &self,
        name: &[u8],
        serializable: bool,
    ) -> Result<Option<(KeyValue, Option<keel_api::etcdserverpb::ResponseHeader>)>, ServerError>
    {
        let first = self
            .by_creation(&prefix_of(name), SortOrder::Ascend, 0, serializable)
            .await?;
        let header = first.header;
        Ok(first.kvs.into_iter().next().map(|kv| (kv, header)))
    }
}
