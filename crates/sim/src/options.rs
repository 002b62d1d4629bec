//! What a run is asked to do, and what comes out of it: the report of a
//! passing run, or the failure of one with the command that replays it.

use keel_raft::Index;

use crate::checker::Violation;
use crate::fault_fs::FaultStats;
use crate::network::Time;
use crate::scenario::Scenario;

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// The fault profile.
    pub scenario: Scenario,
    /// Ticks of client load under faults.
    pub fault_ticks: Time,
    /// Ticks allowed, once faults stop, for a leader to be elected and every
    /// command to be applied everywhere.
    pub liveness_ticks: Time,
    /// Whether disk writes and syncs fail now and then with `EIO` or
    /// `ENOSPC` (each failure stops the node, which restarts from its
    /// disk); `None`: drawn from the seed (about half the seeds of the
    /// scenarios with crashes).
    pub disk_errors: Option<bool>,
    /// Print every event.
    pub verbose: bool,
}

impl SimOptions {
    /// Defaults for `seed`: 3 nodes, chaos, 300 fault ticks, 500 liveness ticks.
    pub fn new(seed: u64) -> Self {
        SimOptions {
            seed,
            nodes: 3,
            scenario: Scenario::Chaos,
            fault_ticks: 300,
            liveness_ticks: 500,
            disk_errors: None,
            verbose: false,
        }
    }

    /// The command line that replays this run with a trace.
    pub fn replay_command(&self) -> String {
        let disk_errors = match self.disk_errors {
            Some(true) => " --disk-errors on",
            Some(false) => " --disk-errors off",
            None => "",
        };
        format!(
            "cargo run --release -p keel-sim -- --seed {} --nodes {} --scenario {} --fault-ticks {}{disk_errors} --verbose",
            self.seed, self.nodes, self.scenario, self.fault_ticks
        )
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Commands clients asked for.
    pub commands: u64,
    /// Entries applied (the same on every node by the end).
    pub applied: Index,
    /// The highest term reached.
    pub max_term: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Messages sent and dropped.
    pub messages: u64,
    /// Messages lost to faults.
    pub dropped: u64,
    /// Ticks the liveness phase needed.
    pub recovery_ticks: Time,
    /// Reads that returned (each checked for linearizability).
    pub reads: u64,
    /// Snapshots nodes took of their own state (each followed by compaction).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Membership changes a leader accepted.
    pub conf_changes: u64,
    /// Leadership transfers a leader accepted.
    pub transfers: u64,
    /// What the nodes' disks injected: torn writes, lost unsynced bytes,
    /// `EIO`, `ENOSPC` (see [`FaultStats`]).
    pub disk: FaultStats,
}

/// A failed run: the broken property and how to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The property that broke.
    pub violation: Violation,
    /// When, in steps.
    pub at: Time,
    /// The run's options.
    pub options: SimOptions,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({} nodes, {}): {} at step {}\n  replay: {}",
            self.options.seed,
            self.options.nodes,
            self.options.scenario,
            self.violation,
            self.at,
            self.options.replay_command()
        )
    }
}
