//! The gRPC health status follows whether a leader is known.

use keel_node::Status;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Runs until the node stops or `stop`.
pub(crate) async fn report_health(
    mut status: watch::Receiver<Status>,
    health: HealthReporter,
    stop: CancellationToken,
) {
    loop {
        let (serving, running) = {
            let status = status.borrow_and_update();
            (status.leader.is_some() && status.running, status.running)
        };
        let serving = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", serving).await;
        if !running {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}
