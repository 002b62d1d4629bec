//! etcd's `etcd_network_peer_round_trip_time_seconds`: how long a small
//! request to each other member's peer port takes, measured every few
//! seconds, by peer (label `To`, the member id in hex, as etcd labels it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::MemberListRequest;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::core::Core;
use crate::metrics::PEER_ROUND_TRIP;

/// How often each peer is probed.
const EVERY: Duration = Duration::from_secs(3);
/// A probe slower than this counts as lost (and is not recorded).
const PATIENCE: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub(crate) async fn probe_peers(core: Arc<Core>, stop: CancellationToken) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let me = core.identity.member_id;
        for id in core.node.status().conf_state.voters.iter().copied() {
            let Some(address) = core.peers.address(id).filter(|_| id != me) else {
                continue;
            };
            let channel = match channels.get(&address) {
                Some(channel) => channel.clone(),
                None => {
                    let Ok(endpoint) = Endpoint::from_shared(format!("http://{address}")) else {
                        continue;
                    };
                    let channel = endpoint
                        .connect_timeout(PATIENCE)
                        .timeout(PATIENCE)
                        .connect_lazy();
                    channels.insert(address, channel.clone());
                    channel
                }
            };
            let started = Instant::now();
            let answered = ClusterClient::new(channel)
                .member_list(MemberListRequest {
                    linearizable: false,
                })
                .await
                .is_ok();
            if answered {
                metrics::histogram!(PEER_ROUND_TRIP, "To" => format!("{id:x}"))
                    .record(started.elapsed().as_secs_f64());
            }
        }
    }
}
