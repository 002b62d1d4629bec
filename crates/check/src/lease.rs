//! The lease check: no lease expires before its TTL has run out since the
//! last moment it may have been renewed, and an expired lease's key is
//! gone from every member.
//!
//! A renewal (the grant, or an acknowledged keep-alive) took effect at
//! some instant inside its call's interval, so the lease lives at least
//! until `call + ttl` of each: the *call* is the safe end to take. A read
//! that finds the key absent counts against the lease only if it surely
//! took effect while the lease surely lived:
//!
//! - it was called after the put attaching the key was acknowledged (so
//!   the key must be visible to it);
//! - it returned before the lower bound on the lease's life, counting only
//!   the keep-alives acknowledged before the read was called (a keep-alive
//!   still in flight might have reached the lease after it had expired, or
//!   not at all before the read; one acknowledged before the read began
//!   surely renewed it first);
//! - it returned before any revoke was called.
//!
//! A read that overlaps the bound, or a revoke, proves nothing.

use std::fmt;

/// One lease's life, as its client saw it. Times are on one monotonic
/// clock (e.g. nanoseconds since the test began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLife {
    /// The lease's ID.
    pub lease: i64,
    /// Its TTL, in the clock's units (nanoseconds).
    pub ttl_ns: u64,
    /// The key attached to it.
    pub key: String,
    /// When the grant was called and returned.
    pub granted: (u64, u64),
    /// When the key was attached: (call, ret) of the acknowledged put with
    /// the lease.
    pub attached: (u64, u64),
    /// Acknowledged keep-alives (call, ret), in order.
    pub keepalives: Vec<(u64, u64)>,
    /// Reads of the key while the lease was in use: (call, ret, present).
    pub observations: Vec<(u64, u64, bool)>,
    /// Whether it was revoked (call, ret) — acknowledged revokes only.
    pub revoked: Option<(u64, u64)>,
}

/// What checked lives held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseSummary {
    /// Leases checked.
    pub leases: usize,
    /// Acknowledged keep-alives, in all.
    pub keepalives: usize,
    /// Reads of the leases' keys, in all.
    pub observations: usize,
}

/// What went wrong with a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseFault {
    /// Its key was found absent while the lease must still have lived.
    ExpiredEarly,
    /// Its key was found present after its revoke was acknowledged.
    OutlivedRevoke,
    /// Its key was still on a member after the lease must have ended.
    StillPresent,
}

/// A lease that broke the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseViolation {
    /// What went wrong.
    pub fault: LeaseFault,
    /// The lease.
    pub lease: i64,
    /// Its key (empty if the lease is not among the lives checked).
    pub key: String,
    /// What happened, with the times that show it.
    pub explanation: String,
}

impl fmt::Display for LeaseViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.fault {
            LeaseFault::ExpiredEarly => "expired early",
            LeaseFault::OutlivedRevoke => "key outlived the revoke",
            LeaseFault::StillPresent => "expired lease's key still present",
        };
        write!(
            f,
            "lease {:#x} (key {:?}): {what}: {}",
            self.lease, self.key, self.explanation
        )
    }
}

impl std::error::Error for LeaseViolation {}

impl LeaseLife {
    /// The earliest the lease may expire, as a read called at `at` knows
    /// it: TTL after the grant's call or the call of the last keep-alive
    /// acknowledged before `at`, and which of those it was (`None`: the
    /// grant).
    pub fn lives_until(&self, at: u64) -> (u64, Option<usize>) {
        let last = self
            .keepalives
            .iter()
            .enumerate()
            .filter(|(_, &(_, ret))| ret < at)
            .max_by_key(|(_, &(call, _))| call);
        match last {
            Some((i, &(call, _))) if call > self.granted.0 => {
                (call.saturating_add(self.ttl_ns), Some(i))
            }
            _ => (self.granted.0.saturating_add(self.ttl_ns), None),
        }
    }
}

/// Checks leases' lives: no key found absent while its lease surely
/// lived (see the module's rules), none found present after its revoke
/// was acknowledged, and none in `still_present`. `still_present`: for
/// leases whose keep-alives stopped long enough ago that they must have
/// expired, the (lease, member) pairs whose member still had the key at
/// the end — each one a violation.
pub fn check_leases(
    lives: &[LeaseLife],
    still_present: &[(i64, String)],
) -> Result<LeaseSummary, LeaseViolation> {
    let mut summary = LeaseSummary::default();
    for life in lives {
        check_life(life)?;
        summary.leases += 1;
        summary.keepalives += life.keepalives.len();
        summary.observations += life.observations.len();
    }
    if let Some((lease, member)) = still_present.first() {
        let life = lives.iter().find(|l| l.lease == *lease);
        let last = life.map(|l| {
            let renewed = l.keepalives.last().map_or(l.granted.0, |k| k.0);
            match l.revoked {
                Some((_, ret)) => format!(" (revoked at {ret})"),
                None => format!(" (last renewed at {renewed}, TTL {})", l.ttl_ns),
            }
        });
        let others = still_present.len() - 1;
        let others = if others > 0 {
            format!("; and {others} more (lease, member) pairs")
        } else {
            String::new()
        };
        return Err(LeaseViolation {
            fault: LeaseFault::StillPresent,
            lease: *lease,
            key: life.map_or(String::new(), |l| l.key.clone()),
            explanation: format!(
                "member {member} still had the key at the end{}{others}",
                last.unwrap_or_default()
            ),
        });
    }
    Ok(summary)
}

fn check_life(life: &LeaseLife) -> Result<(), LeaseViolation> {
    let violation = |fault, explanation| LeaseViolation {
        fault,
        lease: life.lease,
        key: life.key.clone(),
        explanation,
    };
    for &(call, ret, present) in &life.observations {
        if present {
            if let Some((_, revoked)) = life.revoked.filter(|r| r.1 < call) {
                return Err(violation(
                    LeaseFault::OutlivedRevoke,
                    format!(
                        "a read [{call} .. {ret}] found the key, but the revoke had returned at {revoked}"
                    ),
                ));
            }
            continue;
        }
        if call <= life.attached.1 || life.revoked.is_some_and(|r| r.0 <= ret) {
            continue;
        }
        let (until, renewal) = life.lives_until(call);
        if ret < until {
            let since = match renewal {
                None => format!("granted (called at {})", life.granted.0),
                Some(i) => {
                    let (c, r) = life.keepalives[i];
                    format!("renewed by keep-alive {i} [{c} .. {r}]")
                }
            };
            return Err(violation(
                LeaseFault::ExpiredEarly,
                format!(
                    "a read [{call} .. {ret}] found the key absent, but the lease was {since} with TTL {}, \
                     so it lived at least until {until} (the key was attached at {})",
                    life.ttl_ns, life.attached.1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TTL 100, granted [0 .. 1], attached [2 .. 3], renewed [50 .. 55]:
    /// it lives at least until 150.
    fn life(observations: Vec<(u64, u64, bool)>) -> LeaseLife {
        LeaseLife {
            lease: 0x1234,
            ttl_ns: 100,
            key: "lease/a".into(),
            granted: (0, 1),
            attached: (2, 3),
            keepalives: vec![(50, 55)],
            observations,
            revoked: None,
        }
    }

    #[test]
    fn a_lease_that_lived_its_ttl_passes() {
        let lives = [life(vec![
            (10, 20, true),
            (60, 70, true),
            (151, 160, false),
        ])];
        let summary = check_leases(&lives, &[]).unwrap();
        assert_eq!(
            summary,
            LeaseSummary {
                leases: 1,
                keepalives: 1,
                observations: 3,
            }
        );
    }

    #[test]
    fn an_early_expiry_is_caught() {
        let v = check_leases(&[life(vec![(60, 70, false)])], &[]).unwrap_err();
        assert_eq!(v.fault, LeaseFault::ExpiredEarly);
        assert_eq!(
            v.to_string(),
            "lease 0x1234 (key \"lease/a\"): expired early: a read [60 .. 70] found the key absent, \
             but the lease was renewed by keep-alive 0 [50 .. 55] with TTL 100, so it lived at least \
             until 150 (the key was attached at 3)"
        );
        // At 110: too early after the keep-alive, fine without it.
        assert!(check_leases(&[life(vec![(105, 110, false)])], &[]).is_err());
        let mut unrenewed = life(vec![(105, 110, false)]);
        unrenewed.keepalives.clear();
        assert!(check_leases(&[unrenewed], &[]).is_ok());
    }

    #[test]
    fn reads_that_prove_nothing_pass() {
        // Overlapping the bound: it may have taken effect after 150.
        assert!(check_leases(&[life(vec![(140, 160, false)])], &[]).is_ok());
        // A keep-alive still in flight when the read began does not count.
        let mut in_flight = life(vec![(52, 120, false)]);
        in_flight.keepalives = vec![(50, 130)];
        assert!(check_leases(&[in_flight], &[]).is_ok());
        // Before the key was surely attached.
        assert!(check_leases(&[life(vec![(2, 10, false)])], &[]).is_ok());
    }

    #[test]
    fn a_revoked_lease_passes() {
        let mut revoked = life(vec![(60, 70, true), (80, 90, false)]);
        revoked.revoked = Some((75, 85));
        assert!(check_leases(&[revoked.clone()], &[]).is_ok());
        // But its key cannot be seen after the revoke returned.
        revoked.observations.push((90, 95, true));
        let v = check_leases(&[revoked], &[]).unwrap_err();
        assert_eq!(v.fault, LeaseFault::OutlivedRevoke, "{v}");
    }

    #[test]
    fn a_key_left_on_a_member_is_caught() {
        let lives = [life(Vec::new())];
        let still = [(0x1234, "m2".to_string()), (0x1234, "m3".to_string())];
        let v = check_leases(&lives, &still).unwrap_err();
        assert_eq!(v.fault, LeaseFault::StillPresent);
        assert_eq!(
            v.to_string(),
            "lease 0x1234 (key \"lease/a\"): expired lease's key still present: member m2 still had \
             the key at the end (last renewed at 50, TTL 100); and 1 more (lease, member) pairs"
        );
    }
}
