//! # keel-check
//!
//! Checkers for the histories that fault tests record: what concurrent
//! clients asked of a store and what came back, each with the time it was
//! called and the time it returned (or none: its outcome is unknown, as
//! after a timeout or a lost connection). Each checker says what it found
//! wrong in words that name the operations involved, as they were
//! recorded.
//!
//! [`linearizable`] decides whether a history of gets, puts, deletes and
//! compare-and-swaps is linearizable, key by key (linearizability is
//! compositional: a history is linearizable iff each key's is), with the
//! Wing–Gong search as Lowe improved it: operations are linearized in an
//! order their real-time intervals allow, backtracking when an operation
//! returns before it could be placed, and every (set of linearized
//! operations, register value) pair already explored is remembered, so no
//! configuration is searched twice. An operation whose outcome is unknown
//! may have taken effect at any time after its call, or never. A history
//! that is not linearizable is shrunk to a small sub-history that still is
//! not ([`Violation::witness`]), which prints readably.
//!
//! [`check_append`] checks transactions over lists (Jepsen's list-append
//! workload) for strict serializability: each key's final list gives the
//! order of its appends, every list read must be a prefix of it, and the
//! write-write, write-read and anti-dependencies that follow, with
//! real-time order, must have no cycle. It also catches duplicate,
//! garbage and aborted reads, lost acknowledged writes and transactions
//! inconsistent with themselves, and names a cycle's kind (G0, G1c,
//! G-single, G2, or one that needs real time) with one line per edge.
//!
//! [`check_watchers`] compares what watchers received, across reconnects,
//! with the store's history, for the guarantees etcd's robustness tests
//! list: ordered, unique, reliable, atomic, resumable and bookmarkable.
//!
//! [`check_leases`] checks that no lease expired before its TTL ran out
//! since the last moment it may have been renewed, that a revoked lease's
//! key is gone, and that no expired lease's key is left on any member.

mod append;
mod graph;
mod history;
mod lease;
mod search;
mod shrink;
mod watch;

pub use append::{
    check_append, AnomalyKind, AppendAnomaly, AppendSummary, AppendTxn, MicroOp, TxnOutcome,
};
pub use history::{Input, Operation, Output};
pub use lease::{check_leases, LeaseFault, LeaseLife, LeaseSummary, LeaseViolation};
pub use search::linearizable;
pub use shrink::Violation;
pub use watch::{
    check_watchers, EventKind, StoreEvent, WatchGuarantee, WatchResponseRecord, WatchSession,
    WatchSummary, WatchViolation, Watcher,
};
