//! The application's side: a deterministic state machine of its own types.

use std::io::{self, Read, Write};

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
    /// A consistent view of the whole state, as of the last applied command.
    type Snapshot: Send + 'static;

    /// Applies one committed command at `index`.
    fn apply(&mut self, index: Index, command: Self::Command) -> Self::Response;

    /// Applies consecutive committed commands (in log order) and returns one
    /// response per command, in the same order. Override it to make a batch
    /// one storage write; by default each command is applied on its own.
    fn apply_batch(&mut self, commands: Vec<(Index, Self::Command)>) -> Vec<Self::Response> {
        commands
            .into_iter()
            .map(|(index, command)| self.apply(index, command))
            .collect()
    }

    /// Takes a view of the state as of the last applied command. This runs
    /// on the apply path, so it must be cheap (clone an `Arc` of a
    /// persistent structure, open a database snapshot); the bytes are
    /// produced by [`write_snapshot`](Self::write_snapshot) on a background
    /// thread while commands keep being applied.
    fn snapshot(&self) -> Self::Snapshot;

    /// Streams a view taken by [`snapshot`](Self::snapshot) to `out`.
    fn write_snapshot(view: Self::Snapshot, out: &mut dyn Write) -> io::Result<()>;

    /// Replaces the whole state with a snapshot streamed from `snapshot`.
    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String>;

    /// For a state machine that keeps its own state on disk: the index of
    /// the last command whose effects it still has after a restart. At
    /// start the node then skips restoring a snapshot it already covers;
    /// the log after the snapshot is replayed as usual, so `apply` must
    /// ignore commands at or below this index. In-memory state machines
    /// keep the default, 0.
    fn applied_index(&self) -> Index {
        0
    }
}

/// Writes `value` as a snapshot (postcard): all a state machine whose whole
/// state is one serde value needs in `write_snapshot`.
pub fn write_serde_snapshot<T: Serialize>(value: &T, out: &mut dyn Write) -> io::Result<()> {
    postcard::to_io(value, out)
        .map(|_| ())
        .map_err(io::Error::other)
}

/// Reads a snapshot made by [`write_serde_snapshot`].
pub fn read_serde_snapshot<T: DeserializeOwned>(snapshot: &mut dyn Read) -> Result<T, String> {
    let mut buf = Vec::new();
    snapshot.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    postcard::from_bytes(&buf).map_err(|e| format!("decoding the snapshot: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn serde_snapshots_round_trip_and_refuse_garbage() {
        let state: BTreeMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        let mut bytes = Vec::new();
        write_serde_snapshot(&state, &mut bytes).unwrap();
        let back: BTreeMap<String, u64> = read_serde_snapshot(&mut &bytes[..]).unwrap();
        assert_eq!(back, state);
        assert!(read_serde_snapshot::<BTreeMap<String, u64>>(&mut &b"\xff\xff"[..]).is_err());
    }
}
