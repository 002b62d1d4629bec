//! The state machine both examples replicate: a map from keys to values.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_node::StateMachine;
use serde::{Deserialize, Serialize};

/// The replicated state.
#[derive(Default)]
pub struct Kv(pub BTreeMap<String, String>);

/// What clients can ask for.
#[derive(Serialize, Deserialize)]
pub enum Command {
    /// Sets `key` to `value`.
    Put { key: String, value: String },
}

impl StateMachine for Kv {
    type Command = Command;
    type Response = Option<String>; // The previous value.

    fn apply(&mut self, _index: u64, command: Command) -> Option<String> {
        match command {
            Command::Put { key, value } => self.0.insert(key, value),
        }
    }

    fn snapshot(&self) -> Bytes {
        postcard::to_allocvec(&self.0)
            .expect("a map always encodes")
            .into()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0 = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A put command.
pub fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}
