//! When each lease runs out on this member.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use keel_mvcc::Lease;

/// One lease's time on this member.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When it runs out.
    deadline: Instant,
    /// Its granted TTL, in seconds.
    ttl: i64,
    /// The renewals the store had applied when the deadline was set.
    renewals: u64,
}

impl Entry {
    /// `lease` (as the store holds it) granted or renewed at `at`.
    fn new(lease: Lease, at: Instant) -> Entry {
        Entry {
            deadline: at + Duration::from_secs(lease.ttl.max(0) as u64),
            ttl: lease.ttl,
            renewals: lease.renewals,
        }
    }
}

/// The deadlines of this member's leases, set as their grants and renewals
/// are applied. Cloning is cheap; clones share the clock.
#[derive(Clone, Default)]
pub(crate) struct LeaseClock {
    entries: Arc<Mutex<HashMap<i64, Entry>>>,
}

impl LeaseClock {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lease `id` (as the store holds it now) was granted or renewed at
    /// `at`: it runs out a TTL later.
    pub(crate) fn renewed(&self, id: i64, lease: Lease, at: Instant) {
        self.lock().insert(id, Entry::new(lease, at));
    }

    /// Lease `id` is gone.
    pub(crate) fn ended(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Starts over from `leases` (after opening or restoring the store):
    /// each gets its full TTL from `at`, so nothing expires at once.
    pub(crate) fn reset(&self, leases: Vec<(i64, Lease)>, at: Instant) {
        *self.lock() = leases
            .into_iter()
            .map(|(id, lease)| (id, Entry::new(lease, at)))
            .collect();
    }

    /// Lease `id`'s whole seconds left at `now` (rounded down, as etcd
    /// reports them) and its granted TTL.
    pub(crate) fn remaining(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let entry = *self.lock().get(&id)?;
        let left = entry.deadline.saturating_duration_since(now);
        Some((left.as_secs() as i64, entry.ttl))
    }

    /// Up to `limit` leases past their time at `now`, earliest first, with
    /// the renewals seen.
    pub(crate) fn expired(&self, now: Instant, limit: usize) -> Vec<(i64, u64)> {
        let mut due: Vec<(Instant, i64, u64)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, e)| (e.deadline, *id, e.renewals))
            .collect();
        due.sort_unstable();
        due.into_iter()
            .take(limit)
            .map(|(_, id, renewals)| (id, renewals))
            .collect()
    }

    /// How many leases the clock tracks.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_renewals_and_expire_earliest_first() {
        let clock = LeaseClock::default();
        let t0 = Instant::now();
        let lease = |ttl, renewals| Lease { ttl, renewals };
        clock.renewed(1, lease(10, 0), t0);
        clock.renewed(2, lease(5, 0), t0);
        clock.renewed(3, lease(60, 0), t0);
        assert_eq!(clock.remaining(1, t0), Some((10, 10)));
        assert_eq!(
            clock.remaining(1, t0 + Duration::from_millis(2500)),
            Some((7, 10)),
            "rounded down"
        );
        assert!(clock.expired(t0 + Duration::from_secs(4), 10).is_empty());
        assert_eq!(
            clock.expired(t0 + Duration::from_secs(11), 10),
            [(2, 0), (1, 0)]
        );
        assert_eq!(clock.expired(t0 + Duration::from_secs(11), 1), [(2, 0)]);
        // A renewal moves the deadline and is named in the expiry.
        clock.renewed(2, lease(5, 1), t0 + Duration::from_secs(8));
        assert_eq!(clock.expired(t0 + Duration::from_secs(11), 10), [(1, 0)]);
        assert_eq!(
            clock.expired(t0 + Duration::from_secs(13), 10),
            [(1, 0), (2, 1)]
        );
        clock.ended(1);
        assert_eq!(clock.remaining(1, t0), None);
        clock.reset(vec![(9, lease(30, 4))], t0);
        assert_eq!(clock.len(), 1);
        assert_eq!(clock.expired(t0 + Duration::from_secs(30), 10), [(9, 4)]);
    }
}
