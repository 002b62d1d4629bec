//! The application's side: a deterministic state machine of its own types.

use bytes::Bytes;
use keel_raft::Index;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A replicated state machine. Every node applies the same committed
/// commands in the same order, so `apply` must be deterministic.
pub trait StateMachine: Send + 'static {
    /// What clients propose. Encoded with postcard in the log.
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command returns to the proposer.
    type Response: Send + 'static;

    /// Applies one committed command at `index`.
    fn apply(&mut self, index: Index, command: Self::Command) -> Self::Response;

    /// A snapshot of the whole state as of the last applied command.
    fn snapshot(&self) -> Bytes;

    /// Replaces the whole state with a snapshot made by [`snapshot`](Self::snapshot).
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}
