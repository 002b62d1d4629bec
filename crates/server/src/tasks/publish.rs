//! Records this member's name and URLs in the replicated member list once a
//! leader exists (and again whenever they changed since the last start).

use std::sync::Arc;
use std::time::Duration;

use keel_api::etcdserverpb::Member;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::Core;

/// How long one ReadIndex before publishing may take before it is asked
/// again.
const READ_PATIENCE: Duration = Duration::from_millis(300);

/// Runs until the record is published or `stop`.
pub(crate) async fn publish_member(core: Arc<Core>, config: Config, stop: CancellationToken) {
    let id = core.identity.member_id;
    while !stop.is_cancelled() {
        // The record's learner flag says whether the member asked to vote,
        // and a member that just joined may not have applied the record
        // its MemberAdd wrote yet: read it only once this store has
        // everything committed so far (else a learner asks to vote).
        // A leader first, then a ReadIndex, asked again if unanswered (one
        // asked of a leader still settling can go unanswered).
        let caught_up = tokio::select! {
            _ = stop.cancelled() => return,
            read = async {
                core.leader().await?;
                core.linearizable_within(READ_PATIENCE).await
            } => read,
        };
        if let Err(e) = caught_up {
            tracing::debug!(error = %e, "publishing this member: will retry");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
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
