//! etcd's `etcd_network_peer_round_trip_time_seconds`: how long a small
//! request to each other member's peer port takes, measured every few
//! seconds, by peer (label `To`, the member id in hex, as etcd labels it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::metrics::PEER_ROUND_TRIP;

/// How often each peer is probed.
const EVERY: Duration = Duration::from_secs(3);
/// A probe slower than this counts as lost (and is not recorded).
const PATIENCE: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub(crate) async fn probe_peers(core: Arc<Core>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let me = core.identity.member_id;
        for id in core.node.status().conf_state.voters {
            if id == me {
                continue;
            }
            let started = Instant::now();
            if core.probe_peer(id, PATIENCE).await {
                metrics::histogram!(PEER_ROUND_TRIP, "To" => format!("{id:x}"))
                    .record(started.elapsed().as_secs_f64());
            }
        }
    }
}
