//! Failed logins, limited per user name: after a few failures in a row, a
//! name must wait before its next try, twice as long after each further
//! failure (up to a minute); a success clears it. Memory stays bounded
//! however many names are tried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed in a row before waits begin.
const FREE_FAILURES: u32 = 5;
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most names tracked at once.
const MAX_NAMES: usize = 4096;

/// Failed logins per user name.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    /// No try before this.
    until: Instant,
}

fn wait_after(count: u32) -> Duration {
    let doublings = count.saturating_sub(FREE_FAILURES).min(16);
    (Duration::from_millis(500) * 2u32.pow(doublings)).min(MAX_WAIT)
}

impl LoginLimiter {
    /// Whether `user` may try to log in at `now`.
    pub(crate) fn may_try(&self, user: &str, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(user).is_none_or(|f| now >= f.until)
    }

    /// A login of `user` failed at `now`.
    pub(crate) fn failed(&self, user: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_NAMES && !failures.contains_key(user) {
            failures.retain(|_, f| f.until > now);
            if failures.len() >= MAX_NAMES {
                failures.clear();
            }
        }
        let entry = failures.entry(user.to_string()).or_insert(Failures {
            count: 0,
            until: now,
        });
        entry.count += 1;
        entry.until = if entry.count >= FREE_FAILURES {
            now + wait_after(entry.count)
        } else {
            now
        };
    }

    /// A login of `user` succeeded.
    pub(crate) fn succeeded(&self, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_make_a_name_wait_longer_and_a_success_clears_it() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            limiter.failed("alice", t0);
            assert!(limiter.may_try("alice", t0));
        }
        limiter.failed("alice", t0);
        assert!(!limiter.may_try("alice", t0));
        assert!(limiter.may_try("bob", t0), "other names are not held up");
        assert!(limiter.may_try("alice", t0 + wait_after(FREE_FAILURES)));
        limiter.failed("alice", t0 + Duration::from_secs(1));
        assert!(!limiter.may_try(
            "alice",
            t0 + Duration::from_secs(1) + wait_after(FREE_FAILURES)
        ));
        limiter.succeeded("alice");
        assert!(limiter.may_try("alice", t0));
        assert_eq!(wait_after(100), MAX_WAIT);
    }

    #[test]
    fn many_names_take_bounded_memory() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for i in 0..3 * MAX_NAMES {
            limiter.failed(&format!("user-{i}"), now);
        }
        assert!(limiter.failures.lock().unwrap().len() <= MAX_NAMES);
    }
}
