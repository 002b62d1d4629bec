//! Lease time, which the replicated store does not keep: when each lease
//! runs out on this member ([`LeaseClock`]), and keep-alives batched into
//! renewals through the log ([`Renewer`]).
//!
//! Every member anchors a lease's time to live at the moment it applies the
//! entry that granted or last renewed it, on its own monotonic clock. A
//! keep-alive is answered once its renewal is applied; so whichever member
//! leads next already knows, from its own log, every renewal a client was
//! told of, and when: a lease never runs out earlier than its TTL after an
//! acknowledged keep-alive, and no later than that plus the time to apply
//! it, however often the leader changes. The leader proposes the expiry of
//! leases past their time (`tasks::lease_expiry`), naming the renewals it
//! saw, so a renewal applied in between keeps the lease.

mod clock;
mod renewer;

pub(crate) use clock::LeaseClock;
pub(crate) use renewer::Renewer;
