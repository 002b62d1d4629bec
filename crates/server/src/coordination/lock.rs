//! Locks: the waiter whose key under the lock's name was created first
//! holds it.

use bytes::Bytes;
use keel_api::etcdserverpb::{DeleteRangeRequest, RangeRequest};
use keel_api::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

use super::{entry_key, prefix_of, Coordinator};
use crate::auth::Caller;
use crate::core::ServerError;

impl Coordinator {
    /// Waits for the lock `name` under `lease`; the key that holds it.
    pub(crate) async fn lock(&self, request: LockRequest) -> Result<LockResponse, ServerError> {
        let prefix = prefix_of(&request.name);
        let key = entry_key(&prefix, request.lease);
        let (revision, _) = self.create_key(&key, Bytes::new(), request.lease).await?;
        self.wait_for_earlier(&prefix, revision).await?;
        // The lease may have ended while waiting: then the lock is not held.
        let held = self
            .core
            .range(
                &Caller::Member,
                RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                },
            )
            .await?;
        if held.kvs.first().map(|kv| kv.create_revision) != Some(revision) {
            return Err(ServerError::SessionExpired);
        }
        Ok(LockResponse {
            header: held.header,
            key,
        })
    }

    /// Releases a lock by deleting the key that holds it.
    pub(crate) async fn unlock(
        &self,
        request: UnlockRequest,
    ) -> Result<UnlockResponse, ServerError> {
        let deleted = self
            .core
            .delete_range(
                &Caller::Member,
                DeleteRangeRequest {
                    key: request.key,
                    ..DeleteRangeRequest::default()
                },
            )
            .await?;
        Ok(UnlockResponse {
            header: deleted.header,
        })
    }
}
