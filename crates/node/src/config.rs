//! Runtime configuration with sane defaults and validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use keel_raft::NodeId;

/// How a node runs. Build with [`NodeConfig::new`] and adjust.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The voters of a new cluster, with their addresses (used in
    /// `NotLeader` errors and by network transports). Ignored once the node
    /// has state on disk, and empty for a node joining an existing cluster.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Where the WAL and snapshots live.
    pub data_dir: PathBuf,
    /// One Raft tick.
    pub tick_interval: Duration,
    /// Ticks before a follower without a leader campaigns (randomized up to twice this).
    pub election_ticks: u32,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Appends in flight per follower.
    pub max_inflight: usize,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_threshold: u64,
    /// Sync the WAL on every batch. Only tests turn this off.
    pub sync_wal: bool,
    /// Further core settings (pre-vote, check-quorum, read mode, size caps).
    pub raft: keel_raft::Config,
}

impl NodeConfig {
    /// Defaults for node `id` storing its data in `data_dir`.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            id,
            initial_members: BTreeMap::new(),
            data_dir: data_dir.into(),
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            max_inflight: 256,
            snapshot_threshold: 10_000,
            sync_wal: true,
            raft: keel_raft::Config::new(id),
        }
    }

    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_interval.is_zero() {
            return Err("tick_interval must be positive".into());
        }
        if self.snapshot_threshold == 0 {
            return Err("snapshot_threshold must be at least 1".into());
        }
        if !self.initial_members.is_empty() && !self.initial_members.contains_key(&self.id) {
            return Err(format!(
                "initial_members does not include this node ({})",
                self.id
            ));
        }
        self.core_config(0).validate().map_err(|e| e.to_string())
    }

    /// The core configuration these settings make.
    pub(crate) fn core_config(&self, applied: u64) -> keel_raft::Config {
        let mut c = self.raft.clone();
        c.id = self.id;
        c.applied = applied;
        c.election_tick = self.election_ticks;
        c.heartbeat_tick = self.heartbeat_ticks;
        c.max_inflight_msgs = self.max_inflight;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_are_named() {
        let mut c = NodeConfig::new(1, "/tmp/x");
        assert_eq!(c.validate(), Ok(()));
        c.initial_members.insert(2, "a:1".into());
        assert!(c
            .validate()
            .unwrap_err()
            .contains("does not include this node (1)"));
        c.initial_members.insert(1, "a:0".into());
        c.tick_interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().contains("tick_interval"));
        c.tick_interval = Duration::from_millis(1);
        c.election_ticks = 1;
        assert!(c.validate().unwrap_err().contains("election_tick"));
        c.election_ticks = 10;
        c.snapshot_threshold = 0;
        assert!(c.validate().unwrap_err().contains("snapshot_threshold"));
    }
}
