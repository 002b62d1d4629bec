//! The lease operations: grants and revocations go through the log,
//! keep-alives are batched into renewals ([`Renewer`]), and a lease's time
//! left is read from this member's [`LeaseClock`].

use crate::metrics::{LEASES_GRANTED, LEASES_RENEWED, LEASES_REVOKED};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use keel_api::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use keel_api::keelpb::{command::Op, Command as CommandPb};
use keel_mvcc::{MvccError, WriteResponse};

use super::kv::unexpected;
use super::{Core, ServerError};
use crate::auth::Caller;
use keel_mvcc::auth::Access;

/// The longest TTL a lease may be granted, in seconds (etcd's limit).
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How many server-chosen IDs are tried before a grant gives up.
const ID_ATTEMPTS: usize = 5;

impl Core {
    /// Grants a lease: the TTL is raised to the cluster's minimum, an ID of
    /// 0 is replaced by one this member picks.
    pub(crate) async fn lease_grant(
        &self,
        request: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, ServerError> {
        if request.ttl > MAX_LEASE_TTL {
            return Err(ServerError::LeaseTtlTooLarge);
        }
        let ttl = request.ttl.max(self.min_lease_ttl);
        let chosen = request.id != 0;
        for _ in 0..ID_ATTEMPTS {
            let id = if chosen {
                request.id
            } else {
                self.new_lease_id()
            };
            let command = CommandPb {
                op: Some(Op::LeaseGrant(LeaseGrantRequest { ttl, id })),
                auth: None,
            };
            match self.write(command).await {
                Ok(WriteResponse::LeaseGrant(mut response)) => {
                    self.complete(&mut response.header);
                    metrics::counter!(LEASES_GRANTED).increment(1);
                    return Ok(response);
                }
                Ok(_) => return Err(unexpected("lease grant")),
                Err(ServerError::Mvcc(MvccError::LeaseExists)) if !chosen => continue,
                Err(e) => return Err(e),
            }
        }
        Err(MvccError::LeaseExists.into())
    }

    /// Revokes a lease and deletes its keys; `caller` needs write on every
    /// one of them.
    pub(crate) async fn lease_revoke(
        &self,
        caller: &Caller,
        request: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, ServerError> {
        if self.auth_state().enabled() && *caller != Caller::Member {
            let keys = self.store.lease_keys(request.id)?;
            let ranges = keys.iter().map(|key| (&key[..], &b""[..]));
            self.authorize_ranges(caller, ranges, &[Access::Write])?;
        }
        let command = CommandPb {
            op: Some(Op::LeaseRevoke(request)),
            auth: None,
        };
        match self.write(command).await? {
            WriteResponse::LeaseRevoke(mut response) => {
                self.complete(&mut response.header);
                metrics::counter!(LEASES_REVOKED).increment(1);
                Ok(response)
            }
            _ => Err(unexpected("lease revoke")),
        }
    }

    /// Renews a lease: its TTL, or 0 if it does not exist.
    pub(crate) async fn lease_keep_alive(&self, id: i64) -> Result<i64, ServerError> {
        let ttl = self.renewer.renew(id).await?;
        if ttl > 0 {
            metrics::counter!(LEASES_RENEWED).increment(1);
        }
        Ok(ttl)
    }

    /// A lease's time left (-1 if it does not exist, as etcd answers), its
    /// granted TTL and, if asked, its keys.
    pub(crate) async fn lease_time_to_live(
        &self,
        request: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, ServerError> {
        self.linearizable().await?;
        let mut response = LeaseTimeToLiveResponse {
            header: Some(self.header()),
            id: request.id,
            ttl: -1,
            ..LeaseTimeToLiveResponse::default()
        };
        if self.store.lease(request.id).is_none() {
            return Ok(response);
        }
        if let Some((left, granted)) = self
            .lease_clock
            .remaining(request.id, self.lease_clock.now())
        {
            response.ttl = left;
            response.granted_ttl = granted;
        }
        if request.keys {
            response.keys = self.store.lease_keys(request.id)?;
        }
        Ok(response)
    }

    /// Every lease.
    pub(crate) async fn lease_leases(&self) -> Result<LeaseLeasesResponse, ServerError> {
        self.linearizable().await?;
        Ok(LeaseLeasesResponse {
            header: Some(self.header()),
            leases: self
                .store
                .leases()
                .into_iter()
                .map(|(id, _)| LeaseStatus { id })
                .collect(),
        })
    }

    /// A fresh positive lease ID: this member's ID mixed with the time and
    /// a counter, so members picking at once do not collide.
    fn new_lease_id(&self) -> i64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut x = self.identity.member_id
            ^ nanos.rotate_left(17)
            ^ COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // splitmix64's finalizer spreads the bits.
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        match (x >> 1) as i64 {
            0 => 1,
            id => id,
        }
    }
}
