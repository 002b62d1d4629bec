//! The store as keel-node's state machine: committed commands go to
//! keel-mvcc in one write batch per Ready, and member records keep the peer
//! addresses current.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use keel_mvcc::pb::keelpb::command::Op;
use keel_mvcc::{Command, MvccError, Store, StoreView, WriteResponse};
use keel_node::{Index, StateMachine};

use crate::backend::Backend;
use crate::peers::Peers;

/// keel's replicated state machine: a [`Store`] plus the peer address book
/// it keeps up to date.
pub struct MvccStateMachine {
    store: Store,
    peers: Peers,
}

impl MvccStateMachine {
    /// Applies to `store`; member records update `peers`.
    pub fn new(store: Store, peers: Peers) -> Self {
        MvccStateMachine { store, peers }
    }
}

impl StateMachine for MvccStateMachine {
    type Command = Command;
    type Response = Result<WriteResponse, MvccError>;
    type Snapshot = StoreView;

    fn apply(&mut self, index: Index, command: Command) -> Self::Response {
        self.apply_batch(vec![(index, command)])
            .pop()
            .unwrap_or(Err(MvccError::Storage("no response from the store".into())))
    }

    fn apply_batch(&mut self, commands: Vec<(Index, Command)>) -> Vec<Self::Response> {
        let members_changed = commands
            .iter()
            .any(|(_, c)| matches!(c.0.op, Some(Op::SetMember(_)) | Some(Op::RemoveMember(_))));
        let responses = self.store.apply_batch(commands);
        if members_changed {
            self.peers.update(&self.store.members());
        }
        responses
    }

    fn snapshot(&self) -> StoreView {
        self.store.view()
    }

    fn write_snapshot(view: StoreView, out: &mut dyn Write) -> io::Result<()> {
        Store::write_snapshot(view, out)
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String> {
        self.store.restore(snapshot).map_err(|e| e.to_string())?;
        self.peers.update(&self.store.members());
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.store.applied_index()
    }
}

/// Entries of history examined per step of [`remove_compacted_history`]:
/// a step holds the store's writer for about a millisecond.
const COMPACTION_CHUNK: usize = 1000;

/// Removes the history below the compaction point in the background, a
/// chunk at a time between applied batches, so applying a compaction never
/// waits for the removal. Runs until the node stops.
pub async fn remove_compacted_history(backend: Arc<Backend>) {
    while backend.node.status().running {
        let step = backend.store.clone();
        let pause =
            match tokio::task::spawn_blocking(move || step.compact_step(COMPACTION_CHUNK)).await {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => Duration::from_millis(100),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "removing compacted history failed; retrying");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    // Cancelled means the runtime is going; a panic is a bug.
                    if e.is_panic() {
                        tracing::error!(error = %e, "removing compacted history panicked; stopped");
                    }
                    return;
                }
            };
        tokio::time::sleep(pause).await;
    }
}
