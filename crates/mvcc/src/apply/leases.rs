//! The leases' part of a batch: granting, renewing, revoking and expiring
//! them. Revoking (or expiring) a lease deletes every key attached to it at
//! one new revision, as etcd does. Time is not the store's business: the
//! server decides when a lease is past its time and proposes its expiry,
//! naming the renewals it had seen, so a renewal applied in between keeps
//! the lease.

use bytes::Bytes;
use fjall::Readable;
use keel_api::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse};
use keel_api::keelpb::LeaseExpire;

use super::{Change, Writer};
use crate::schema::{encode_lease, lease_key, Lease};
use crate::MvccError;

impl Writer<'_> {
    /// Lease `id` as of the batch so far.
    pub(super) fn lease(&self, id: i64) -> Option<Lease> {
        match self.leases.get(&id) {
            Some(lease) => *lease,
            None => self
                .store
                .inner
                .leases
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&id)
                .copied(),
        }
    }

    fn set_lease(&mut self, id: i64, lease: Option<Lease>) {
        let keyspace = &self.store.inner.keyspaces.leases;
        match &lease {
            Some(lease) => self
                .batch
                .insert(keyspace, lease_key(id), encode_lease(lease)),
            None => self.batch.remove(keyspace, lease_key(id)),
        }
        self.leases.insert(id, lease);
    }

    pub(super) fn grant(
        &mut self,
        grant: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, MvccError> {
        if grant.id <= 0 || grant.ttl <= 0 {
            return Err(MvccError::InvalidArgument(format!(
                "lease {} with TTL {} reached the log",
                grant.id, grant.ttl
            )));
        }
        if self.lease(grant.id).is_some() {
            return Err(MvccError::LeaseExists);
        }
        let lease = Lease {
            ttl: grant.ttl,
            renewals: 0,
        };
        self.set_lease(grant.id, Some(lease));
        Ok(LeaseGrantResponse {
            header: None,
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        })
    }

    /// Renews each lease that exists; its TTL, or 0 for one that does not.
    pub(super) fn renew(&mut self, ids: &[i64]) -> Vec<i64> {
        ids.iter()
            .map(|&id| match self.lease(id) {
                Some(lease) => {
                    let renewed = Lease {
                        renewals: lease.renewals + 1,
                        ..lease
                    };
                    self.set_lease(id, Some(renewed));
                    lease.ttl
                }
                None => 0,
            })
            .collect()
    }

    /// Ends lease `id` and deletes its keys at one revision.
    pub(super) fn revoke(&mut self, id: i64) -> Result<(), MvccError> {
        if self.lease(id).is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        for key in self.attached(id)? {
            if let Some(kv) = self.get(&key)?.filter(|kv| kv.lease == id) {
                self.staged.push(Change {
                    key,
                    version: None,
                    previous: Some(kv),
                });
            }
        }
        self.set_lease(id, None);
        Ok(())
    }

    /// Ends a lease the server found past its time, unless it was renewed
    /// after the server looked (or is gone).
    pub(super) fn expire(&mut self, expire: &LeaseExpire) -> Result<bool, MvccError> {
        match self.lease(expire.id) {
            Some(lease) if lease.renewals == expire.renewals => {
                self.revoke(expire.id)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The keys that may be attached to lease `id`: the committed index's,
    /// and every key the batch wrote (the caller checks each).
    fn attached(&self, id: i64) -> Result<Vec<Bytes>, MvccError> {
        let prefix = lease_key(id);
        let mut keys: Vec<Bytes> = Vec::new();
        for entry in self
            .snapshot
            .prefix(&self.store.inner.keyspaces.attached, prefix)
        {
            let stored = entry.key()?;
            keys.push(Bytes::copy_from_slice(&stored[prefix.len()..]));
        }
        keys.extend(self.pending.keys().cloned());
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}
