//! Removing the history below the compaction point in the background, a
//! chunk at a time between applied batches, so applying a compaction never
//! waits for the removal. Runs on every member.

use std::time::Duration;

use keel_mvcc::Store;
use tokio_util::sync::CancellationToken;

/// Entries of history examined per step: a step holds the store's writer
/// for about a millisecond.
const CHUNK: usize = 1000;

/// Runs until `stop` (or a panic in the store, which it reports).
pub(crate) async fn remove_compacted_history(store: Store, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let step = store.clone();
        let pause = match tokio::task::spawn_blocking(move || step.compact_step(CHUNK)).await {
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
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
