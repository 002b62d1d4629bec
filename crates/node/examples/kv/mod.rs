//! The state machine both examples replicate: a map from keys to values.

use std::collections::BTreeMap;

use keel_node::StateMachine;
use serde::{Deserialize, Serialize};

/// The replicated state.
#[derive(Default)]
pub(crate) struct Kv(pub BTreeMap<String, String>);

/// What clients can ask for.
#[derive(Serialize, Deserialize)]
pub(crate) enum Command {
    /// Sets `key` to `value`.
    Put { key: String, value: String },
}

impl StateMachine for Kv {
    type Command = Command;
    type Response = Option<String>; // The previous value.
    type Snapshot = BTreeMap<String, String>;

    fn apply(&mut self, _index: u64, command: Command) -> Option<String> {
        match command {
            Command::Put { key, value } => self.0.insert(key, value),
        }
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.0.clone()
    }

    fn write_snapshot(view: Self::Snapshot, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        keel_node::write_serde_snapshot(&view, out)
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        self.0 = keel_node::read_serde_snapshot(snapshot)?;
        Ok(())
    }
}

/// A put command.
pub(crate) fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}
