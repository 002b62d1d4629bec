//! The tunables of one Raft node, with defaults that suit a LAN cluster ticked
//! every 100 ms or so, and their validation.

use crate::error::ConfigError;
use crate::message::{Index, NodeId};

/// How the leader confirms linearizable reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: one heartbeat round to a quorum, shared by every read
    /// waiting at that moment. Safe whatever the clocks do.
    Safe,
    /// Serve at once while a quorum has answered a heartbeat of the current
    /// CheckQuorum period (falling back to a round otherwise). Assumes ticks
    /// run at roughly the same rate on every node; requires `check_quorum`.
    /// A node in this mode also refuses votes for one election timeout after
    /// it starts, since before a crash it may have granted a lease.
    Lease,
}

/// Settings for one node. Build with [`Config::new`] and adjust fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The
    /// actual timeout is drawn at random from `[election_tick, 2 * election_tick)`
    /// each time, so that split votes resolve (Raft §5.2).
    pub election_tick: u32,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_tick: u32,
    /// The index the application has already applied (on restart).
    pub applied: Index,
    /// Largest append message in bytes (entries beyond it wait for the next one;
    /// a single larger entry still goes out alone).
    pub max_size_per_msg: u64,
    /// Most appends in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most bytes of appends in flight to one follower.
    pub max_inflight_bytes: u64,
    /// Most payload bytes the leader holds uncommitted; proposals beyond it are
    /// refused with [`ProposeError::UncommittedSizeExceeded`](crate::ProposeError).
    pub max_uncommitted_size: u64,
    /// Most bytes of committed entries handed out in one [`Ready`](crate::Ready).
    pub max_committed_size_per_ready: u64,
    /// Ask "would you vote for me?" before disrupting the cluster with a new term.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that hear from a leader ignore vote requests.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// A learner is promoted to voter only if it is at most this many
    /// entries behind the leader's log, so a promotion never stalls commits.
    pub max_promotion_lag: u64,
}

impl Config {
    /// The defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_uncommitted_size: 64 * 1024 * 1024,
            max_committed_size_per_ready: 64 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            max_promotion_lag: 1000,
        }
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.heartbeat_tick == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election: self.election_tick,
                heartbeat: self.heartbeat_tick,
            });
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        for (name, value) in [
            ("max_size_per_msg", self.max_size_per_msg),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_uncommitted_size", self.max_uncommitted_size),
            (
                "max_committed_size_per_ready",
                self.max_committed_size_per_ready,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1).validate(), Ok(()));
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(Config::new(0).validate(), Err(ConfigError::ZeroId));
        let mut c = Config::new(1);
        c.election_tick = 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionNotAboveHeartbeat { .. })
        ));
        let mut c = Config::new(1);
        c.max_inflight_bytes = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroLimit("max_inflight_bytes"))
        );
    }
}
