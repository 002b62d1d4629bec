//! Lease time kept current on every member; and on the leader, expiring
//! the leases past their time by proposing each one's expiry through the
//! log (so every member deletes the same keys at the same revision). At most [`PER_TICK`] a tick, earliest first: a mass
//! expiry is spread out rather than flooding the log, as etcd's is.

use std::sync::Arc;
use std::time::Duration;

use keel_api::keelpb::{command::Op, Command as CommandPb, LeaseExpire};
use tokio_util::sync::CancellationToken;

use crate::core::Core;

/// How often the leader looks for leases past their time.
const TICK: Duration = Duration::from_millis(100);
/// The most expiries proposed a tick (1,000 a second).
const PER_TICK: usize = 100;

/// On every member: reads the lease clock every tick until `stop`, so that
/// its lease time follows the monotonic clock whether or not it leads (a
/// step between two readings counts for little: a member that read it
/// seldom would fall behind, and expire leases late once it leads).
pub(crate) async fn keep_lease_time(core: Arc<Core>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        core.lease_clock.now();
    }
}

/// Runs until `stop`.
pub(crate) async fn expire_leases(core: Arc<Core>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut expiries = tokio::task::JoinSet::new();
        for (id, renewals) in core.lease_clock.expired(core.lease_clock.now(), PER_TICK) {
            let core = core.clone();
            expiries.spawn(async move {
                let command = CommandPb {
                    op: Some(Op::LeaseExpire(LeaseExpire { id, renewals })),
                    auth: None,
                };
                if let Err(e) = core.write(command).await {
                    tracing::debug!(lease = id, error = %e, "expiring a lease failed; will retry");
                }
            });
        }
        // Dropping the set at a stop aborts what is left.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = async { while expiries.join_next().await.is_some() {} } => {}
        }
    }
}
