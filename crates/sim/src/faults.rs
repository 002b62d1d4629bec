//! The scenario's faults, struck once per tick during the fault phase:
//! partitions (a node isolated, the cluster split in two, one link cut one
//! way, or everything healed) and crashes. Crashes in the middle of a Ready
//! come from the nodes' disks (see [`crate::fault_fs`]).

use keel_raft::NodeId;
use rand::Rng;

use crate::simulation::Simulation;

impl Simulation {
    /// The scenario's faults for one tick: partitions change, a node crashes.
    pub(crate) fn inject_faults(&mut self) {
        let scenario = self.options.scenario;
        if scenario.partitions() && self.rng.random_bool(0.05) {
            self.change_partitions();
        }
        if scenario.crashes() && self.rng.random_bool(0.02) {
            if let Some(id) = self.random_node_up() {
                self.crash(id);
            }
        }
    }

    /// Isolates a node, splits the cluster in two, cuts one link, or heals.
    fn change_partitions(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let n = ids.len();
        match self.rng.random_range(0..4) {
            0 => {
                let isolated = ids[self.rng.random_range(0..n)];
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&i| i != isolated).collect();
                self.trace(format_args!("partition: isolate {isolated}"));
                self.net.partition(&[vec![isolated], rest]);
            }
            1 => {
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    ids.iter().partition(|_| self.rng.random_bool(0.5));
                self.trace(format_args!("partition: {a:?} | {b:?}"));
                self.net.partition(&[a, b]);
            }
            2 => {
                let from = ids[self.rng.random_range(0..n)];
                let to = ids[self.rng.random_range(0..n)];
                if from != to {
                    self.trace(format_args!("partition: cut {from} -> {to}"));
                    self.net.cut_one_way(from, to);
                }
            }
            _ => {
                self.trace(format_args!("partition: heal"));
                self.net.heal();
            }
        }
    }
}
