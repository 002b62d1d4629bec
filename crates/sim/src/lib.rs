//! # keel-sim
//!
//! A deterministic simulator for keel-raft clusters. Each node runs
//! keel-node's [`Replica`](keel_node::replica::Replica), the Ready handling
//! that ships, over keel-node's `DiskStore` (keel-wal and the snapshot
//! files) on a fault-injecting disk ([`fault_fs`]) and a simulated network. Nodes, network and
//! clients run in virtual time from one seed: messages are delayed,
//! reordered, duplicated and lost; links are cut one way or both; nodes crash
//! (even halfway through handling a `Ready`) and restart with only what they
//! persisted. Nodes snapshot and compact at random, clients read from any
//! node, and the membership and leadership change on request. After every
//! step the [`checker`] verifies Raft's safety properties and [`reads`]
//! checks that every read returned is linearizable; once faults stop, the
//! run must make progress within a bound.
//! A failure names its seed and the command that replays it.

pub mod checker;
pub mod clients;
pub mod fault_fs;
pub mod faults;
pub mod network;
pub mod node;
pub mod options;
pub mod reads;
pub mod reconfig;
pub mod scenario;
pub mod simulation;
pub mod state_machine;

pub use checker::{Property, Violation};
pub use options::{Failure, RunReport, SimOptions};
pub use scenario::Scenario;
pub use simulation::{run, Simulation, Tamper};
