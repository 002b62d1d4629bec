//! On the leader: promotes learners that asked to vote once they have
//! caught up (see `core::members`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::Core;

/// How often the leader looks for learners to promote.
const INTERVAL: Duration = Duration::from_millis(200);

/// Runs until `stop`.
pub(crate) async fn promote_caught_up(core: Arc<Core>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => core.promote_caught_up().await,
        }
    }
}
