//! # keel-check
//!
//! Checkers for the histories that fault tests record: concurrent clients'
//! operations on a key-value store, each with the time it was called and
//! the time it returned (or none: its outcome is unknown, as after a
//! timeout or a lost connection).
//!
//! [`linearizable`] decides whether a history of gets, puts, deletes and
//! compare-and-swaps is linearizable, key by key (linearizability is
//! compositional: a history is linearizable iff each key's is), with the
//! Wing–Gong search as Lowe improved it: operations are linearized in an
//! order their real-time intervals allow, backtracking when an operation
//! returns before it could be placed, and every (set of linearized
//! operations, register value) pair already explored is remembered, so no
//! configuration is searched twice. An operation whose outcome is unknown
//! may have taken effect at any time after its call, or never.
//!
//! A history that is not linearizable is shrunk to a small sub-history
//! that still is not ([`Violation::witness`]), which prints readably.

mod history;
mod search;
mod shrink;

pub use history::{Input, Operation, Output};
pub use search::linearizable;
pub use shrink::Violation;
