//! Records this member's name and URLs in the replicated member list once a
//! leader exists (and again whenever they changed since the last start).

use std::sync::Arc;
use std::time::Duration;

use keel_api::etcdserverpb::Member;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::Core;

/// Runs until the record is published or `stop`.
pub(crate) async fn publish_member(core: Arc<Core>, config: Config, stop: CancellationToken) {
    let id = core.identity.member_id;
    while !stop.is_cancelled() {
        let record = core.store.members().into_iter().find(|m| m.id == id);
        let wanted = Member {
            id,
            name: config.name.clone(),
            peer_ur_ls: vec![config.advertise_peer_url.clone()],
            client_ur_ls: config.advertise_client_urls.clone(),
            is_learner: record.as_ref().is_some_and(|r| r.is_learner),
        };
        if record.as_ref() == Some(&wanted) {
            return;
        }
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = core.set_member(wanted) => attempt,
        };
        match attempt {
            Ok(()) => {
                tracing::info!("published this member's name and URLs");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "publishing this member: will retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
