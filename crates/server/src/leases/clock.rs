//! When each lease runs out on this member, in lease time.
//!
//! Lease time is the member's monotonic clock, except that one step between
//! two readings counts for at most [`MAX_STEP`]. A process that was paused
//! (SIGSTOP, a VM frozen or migrated) or whose clock jumped ahead would
//! otherwise find every lease past its time at once, and expire leases
//! whose holders kept them alive all along; instead the leases outlive such
//! a gap. Every member reads the clock every 100 ms (a task for it; the
//! leader's expiry task too), so while it runs normally lease time is real
//! time. A step counts up to
//! [`MAX_STEP`] where less real time passed only once per jump, and leases
//! run out [`GRACE`] after their deadline to make up for it: a jump ends no
//! lease early. A clock that runs fast shortens leases by its rate, as in
//! etcd: no member can tell that alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use keel_mvcc::Lease;

/// The most lease time one step of the clock counts: twice the period at
/// which every member reads it. A member starved of CPU reads it late and
/// counts less than passed: its leases last longer, never shorter.
const MAX_STEP: Duration = Duration::from_millis(200);

/// How long after its deadline a lease runs out: the lease time a jump of
/// the clock can count that did not pass.
const GRACE: Duration = MAX_STEP;

/// A point in lease time: how much of it had passed since the member
/// started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LeaseInstant(Duration);

impl std::ops::Add<Duration> for LeaseInstant {
    type Output = LeaseInstant;

    fn add(self, d: Duration) -> LeaseInstant {
        LeaseInstant(self.0 + d)
    }
}

impl LeaseInstant {
    fn saturating_duration_since(self, earlier: LeaseInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// Lease time's source: the last reading of the monotonic clock and the
/// lease time counted up to it.
#[derive(Debug)]
struct Time {
    read: Instant,
    counted: Duration,
}

impl Time {
    fn new() -> Time {
        Time {
            read: Instant::now(),
            counted: Duration::ZERO,
        }
    }

    /// Counts the time since the last reading, at most [`MAX_STEP`] of it.
    fn advance(&mut self, read: Instant) -> LeaseInstant {
        let step = read.saturating_duration_since(self.read);
        self.read = self.read.max(read);
        self.counted += step.min(MAX_STEP);
        LeaseInstant(self.counted)
    }
}

/// One lease's time on this member.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When it runs out.
    deadline: LeaseInstant,
    /// Its granted TTL, in seconds.
    ttl: i64,
    /// The renewals the store had applied when the deadline was set.
    renewals: u64,
}

impl Entry {
    /// `lease` (as the store holds it) granted or renewed at `at`.
    fn new(lease: Lease, at: LeaseInstant) -> Entry {
        Entry {
            deadline: at + Duration::from_secs(lease.ttl.max(0) as u64),
            ttl: lease.ttl,
            renewals: lease.renewals,
        }
    }
}

/// The deadlines of this member's leases, set as their grants and renewals
/// are applied, and the lease time they are in. Cloning is cheap; clones
/// share the clock.
#[derive(Clone)]
pub(crate) struct LeaseClock {
    entries: Arc<Mutex<HashMap<i64, Entry>>>,
    time: Arc<Mutex<Time>>,
}

impl Default for LeaseClock {
    fn default() -> Self {
        LeaseClock {
            entries: Arc::default(),
            time: Arc::new(Mutex::new(Time::new())),
        }
    }
}

impl LeaseClock {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lease time now.
    pub(crate) fn now(&self) -> LeaseInstant {
        let mut time = self.time.lock().unwrap_or_else(PoisonError::into_inner);
        time.advance(Instant::now())
    }

    /// Lease `id` (as the store holds it now) was granted or renewed at
    /// `at`: it runs out a TTL later.
    pub(crate) fn renewed(&self, id: i64, lease: Lease, at: LeaseInstant) {
        self.lock().insert(id, Entry::new(lease, at));
    }

    /// Lease `id` is gone.
    pub(crate) fn ended(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Starts over from `leases` (after opening or restoring the store):
    /// each gets its full TTL from `at`, so nothing expires at once.
    pub(crate) fn reset(&self, leases: Vec<(i64, Lease)>, at: LeaseInstant) {
        *self.lock() = leases
            .into_iter()
            .map(|(id, lease)| (id, Entry::new(lease, at)))
            .collect();
    }

    /// Lease `id`'s whole seconds left at `now` (rounded down, as etcd
    /// reports them) and its granted TTL.
    pub(crate) fn remaining(&self, id: i64, now: LeaseInstant) -> Option<(i64, i64)> {
        let entry = *self.lock().get(&id)?;
        let left = entry.deadline.saturating_duration_since(now);
        Some((left.as_secs() as i64, entry.ttl))
    }

    /// Up to `limit` leases past their time (and the [`GRACE`]) at `now`,
    /// earliest first, with the renewals seen.
    pub(crate) fn expired(&self, now: LeaseInstant, limit: usize) -> Vec<(i64, u64)> {
        let mut due: Vec<(LeaseInstant, i64, u64)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.deadline + GRACE <= now)
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
        let t0 = clock.now();
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
        assert_eq!(clock.expired(t0 + Duration::from_secs(13), 10), [(1, 0)]);
        assert_eq!(
            clock.expired(t0 + Duration::from_secs(13) + GRACE, 10),
            [(1, 0), (2, 1)],
            "a grace past the deadline"
        );
        clock.ended(1);
        assert_eq!(clock.remaining(1, t0), None);
        clock.reset(vec![(9, lease(30, 4))], t0);
        assert_eq!(clock.len(), 1);
        assert_eq!(
            clock.expired(t0 + Duration::from_secs(30) + GRACE, 10),
            [(9, 4)]
        );
    }

    #[test]
    fn lease_time_follows_the_clock_but_counts_a_jump_or_a_pause_as_one_step() {
        let start = Instant::now();
        let mut time = Time {
            read: start,
            counted: Duration::ZERO,
        };
        let at = |ms| start + Duration::from_millis(ms);
        let counted = |ms| LeaseInstant(Duration::from_millis(ms));
        assert_eq!(time.advance(at(100)), counted(100));
        assert_eq!(time.advance(at(250)), counted(250));
        // Sixty seconds at once (a pause, a jump): one step's worth.
        assert_eq!(time.advance(at(60_250)), counted(450));
        assert_eq!(time.advance(at(60_350)), counted(550));
        // A reading from before the last one counts nothing.
        assert_eq!(time.advance(at(60_000)), counted(550));
        assert_eq!(time.advance(at(60_450)), counted(650));
    }

    #[test]
    fn a_lease_kept_alive_survives_its_member_being_paused_past_its_ttl() {
        let clock = LeaseClock::default();
        clock.renewed(
            1,
            Lease {
                ttl: 5,
                renewals: 0,
            },
            clock.now(),
        );
        // The member's clock jumps ahead of the deadline; the lease stays.
        let jumped = {
            let mut time = clock.time.lock().unwrap();
            let read = time.read + Duration::from_secs(30);
            time.advance(read)
        };
        assert!(clock.expired(jumped, 10).is_empty());
        assert_eq!(clock.remaining(1, jumped).map(|(left, _)| left), Some(4));
    }

    #[test]
    fn a_jump_of_the_clock_ends_no_lease_before_its_ttl() {
        let start = Instant::now();
        let clock = LeaseClock {
            entries: Arc::default(),
            time: Arc::new(Mutex::new(Time {
                read: start,
                counted: Duration::ZERO,
            })),
        };
        let ttl = Lease {
            ttl: 3,
            renewals: 0,
        };
        clock.renewed(1, ttl, clock.now());
        // Read every 100 ms of true time, and by a keep-alive at 1.01 s,
        // just after the clock jumped 80 s ahead.
        let readings = (1..=40u64)
            .map(|tick| Duration::from_millis(tick * 100))
            .chain([Duration::from_millis(1010)]);
        let mut readings: Vec<Duration> = readings.collect();
        readings.sort();
        let mut expired_at = None;
        for true_time in readings {
            let jump = Duration::from_secs(if true_time > Duration::from_secs(1) {
                80
            } else {
                0
            });
            let now = clock.time.lock().unwrap().advance(start + true_time + jump);
            if expired_at.is_none() && !clock.expired(now, 10).is_empty() {
                expired_at = Some(true_time);
            }
        }
        let expired_at = expired_at.expect("it runs out in the end");
        assert!(
            expired_at >= Duration::from_secs(3),
            "ran out at {expired_at:?}"
        );
    }
}
