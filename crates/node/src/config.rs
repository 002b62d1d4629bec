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
    /// `NotLeader` errors and by network transports). Empty for a node
    /// joining an existing cluster. Read only when the node starts with no
    /// state on disk (then it must include this node); once it has state,
    /// the log and snapshots say who the members are.
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
    /// A proposal made on a follower is sent to the leader through the
    /// transport (and answered with this node's own state machine's
    /// response once applied here). Off: followers refuse proposals with
    /// `NotLeader`, naming the leader.
    pub forward_proposals: bool,
    /// How many times [`propose`](crate::RaftNode::propose) tries again
    /// after a refusal that guarantees the command was not applied and
    /// that passes by itself (no leader yet, a leader change, a transfer,
    /// a full pipeline, an entry lost to a new leader). Errors whose
    /// outcome is unknown are never retried.
    pub propose_retries: u32,
    /// Further core settings (pre-vote, check-quorum, read mode, size caps).
    pub raft: RaftTuning,
}

/// The consensus core's settings that [`NodeConfig`] does not set itself
/// (the id, timing and in-flight window are `NodeConfig`'s own fields).
/// Defaults are keel-raft's.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// The most bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// The most bytes of entries in flight to one follower (0: no limit).
    pub max_inflight_bytes: u64,
    /// The most bytes of uncommitted entries the leader takes (0: no limit).
    pub max_uncommitted_size: u64,
    /// The most bytes of committed entries handed out in one Ready.
    pub max_committed_size_per_ready: u64,
    /// Poll voters before campaigning, so a partitioned node cannot disrupt.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum in an election timeout
    /// steps down.
    pub check_quorum: bool,
    /// How linearizable reads are confirmed.
    pub read_mode: keel_raft::ReadMode,
    /// How far behind the leader's log a learner may be and still be
    /// promoted.
    pub max_promotion_lag: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        let c = keel_raft::Config::new(1);
        RaftTuning {
            max_size_per_msg: c.max_size_per_msg,
            max_inflight_bytes: c.max_inflight_bytes,
            max_uncommitted_size: c.max_uncommitted_size,
            max_committed_size_per_ready: c.max_committed_size_per_ready,
            pre_vote: c.pre_vote,
            check_quorum: c.check_quorum,
            read_mode: c.read_mode,
            max_promotion_lag: c.max_promotion_lag,
        }
    }
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
            forward_proposals: true,
            propose_retries: 3,
            raft: RaftTuning::default(),
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
        self.core_config(0).validate().map_err(|e| e.to_string())
    }

    /// The core configuration these settings make.
    pub(crate) fn core_config(&self, applied: u64) -> keel_raft::Config {
        let t = &self.raft;
        keel_raft::Config {
            id: self.id,
            applied,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            max_inflight_msgs: self.max_inflight,
            max_size_per_msg: t.max_size_per_msg,
            max_inflight_bytes: t.max_inflight_bytes,
            max_uncommitted_size: t.max_uncommitted_size,
            max_committed_size_per_ready: t.max_committed_size_per_ready,
            pre_vote: t.pre_vote,
            check_quorum: t.check_quorum,
            read_mode: t.read_mode,
            max_promotion_lag: t.max_promotion_lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_are_named() {
        let mut c = NodeConfig::new(1, "/tmp/x");
        assert_eq!(c.validate(), Ok(()));
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
