//! The fault profiles a simulation run can be given.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::Rng;

use crate::network::NetworkFaults;

/// A named fault profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A perfect network and no crashes: only client load.
    Calm,
    /// Loss, duplication, and delays wide enough to reorder.
    Lossy,
    /// Partitions: isolated nodes, split groups, one-way cuts, heals.
    Partitions,
    /// Crashes (also in the middle of handling a Ready) and restarts.
    Crashes,
    /// Membership changes (the leader's own removal included) and
    /// leadership transfers over a reordering network.
    Membership,
    /// Everything at once.
    Chaos,
}

impl Scenario {
    /// Every scenario, in a fixed order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Calm,
        Scenario::Lossy,
        Scenario::Partitions,
        Scenario::Crashes,
        Scenario::Membership,
        Scenario::Chaos,
    ];

    /// The network faults of this scenario, drawn from `rng`.
    pub fn network(self, rng: &mut StdRng) -> NetworkFaults {
        match self {
            Scenario::Calm | Scenario::Partitions | Scenario::Crashes | Scenario::Membership => {
                NetworkFaults {
                    max_delay: rng.random_range(1..=5),
                    ..NetworkFaults::none()
                }
            }
            Scenario::Lossy | Scenario::Chaos => NetworkFaults {
                loss: rng.random_range(0.01..0.3),
                duplicate: rng.random_range(0.0..0.1),
                min_delay: 1,
                max_delay: rng.random_range(2..=30),
            },
        }
    }

    /// Whether links get cut.
    pub fn partitions(self) -> bool {
        matches!(self, Scenario::Partitions | Scenario::Chaos)
    }

    /// Whether nodes crash.
    pub fn crashes(self) -> bool {
        matches!(self, Scenario::Crashes | Scenario::Chaos)
    }

    /// Whether the membership changes and leadership moves on request.
    /// (Snapshots, compaction and reads happen in every scenario.)
    pub fn reconfigures(self) -> bool {
        matches!(self, Scenario::Membership | Scenario::Chaos)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Scenario::Calm => "calm",
            Scenario::Lossy => "lossy",
            Scenario::Partitions => "partitions",
            Scenario::Crashes => "crashes",
            Scenario::Membership => "membership",
            Scenario::Chaos => "chaos",
        };
        f.write_str(name)
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.to_string() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?} (calm, lossy, partitions, crashes, membership, chaos)"
                )
            })
    }
}
