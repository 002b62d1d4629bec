//! The cluster as an operator sees it: each member's raft progress (asked
//! of the member itself), alarms, and the actions on the cluster.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use keel_api::etcdserverpb::cluster_server::Cluster;
use keel_api::etcdserverpb::kv_server::Kv;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::{
    AlarmType, CompactionRequest, Member, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, StatusRequest, StatusResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;

use super::{checked, hex, ok, parse_id, AdminError, Answer};
use crate::api::http::Gateway;
use crate::config::host_port;
use crate::tls::{Channels, Dialer};

/// How long a member may take to answer for its status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// One channel per member's client URL, for asking members their status.
pub(crate) struct StatusClients(Channels);

impl StatusClients {
    /// Clients dialing members' client ports with `dialer` (TLS as this
    /// member's own client port: its certificate, its trusted CA).
    pub(crate) fn new(dialer: Dialer) -> Self {
        StatusClients(Channels::new(dialer, |endpoint| {
            endpoint
                .connect_timeout(STATUS_TIMEOUT)
                .timeout(STATUS_TIMEOUT)
        }))
    }

    /// A client of the member serving `url` (connected on first use).
    fn client(&self, url: &str) -> Result<MaintenanceClient<Channel>, String> {
        let bad = |e: &dyn std::fmt::Display| format!("bad client URL {url}: {e}");
        let address = host_port(url).map_err(|e| bad(&e))?;
        let channel = self.0.get(&address).map_err(|e| bad(&e))?;
        Ok(MaintenanceClient::new(channel))
    }
}

/// `GET /api/v1/cluster`.
#[derive(Serialize)]
struct Overview {
    cluster_id: String,
    served_by: String,
    leader: Option<String>,
    members: Vec<MemberView>,
}

/// One member in the overview; its raft figures are absent when it did
/// not answer.
#[derive(Serialize)]
struct MemberView {
    id: String,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    is_learner: bool,
    role: &'static str,
    term: Option<u64>,
    commit: Option<u64>,
    applied: Option<u64>,
    /// How far its applied index is behind the leader's commit index.
    lag: Option<u64>,
    db_size: Option<i64>,
    revision: Option<i64>,
    version: Option<String>,
    error: Option<String>,
}

pub(super) async fn overview(State(g): State<Arc<Gateway>>) -> Answer {
    let core = &g.core;
    let me = core.identity.member_id;
    let leader = core.node.status().leader;
    let members = core.members();
    let mut asked = Vec::with_capacity(members.len());
    for member in &members {
        let task = if member.id == me {
            let status = core.status();
            tokio::spawn(async move { Ok(status) })
        } else if let Some(url) = member.client_ur_ls.first() {
            tokio::spawn(ask_status(g.status_clients.client(url)))
        } else {
            let why = "has not started: it published no client URLs".to_string();
            tokio::spawn(async move { Err(why) })
        };
        asked.push(task);
    }
    let mut statuses = Vec::with_capacity(asked.len());
    for task in asked {
        statuses.push(task.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    let leader_commit = members
        .iter()
        .zip(&statuses)
        .find(|(m, _)| Some(m.id) == leader)
        .and_then(|(_, s)| s.as_ref().ok())
        .map(|s| s.raft_index);
    let members = members
        .into_iter()
        .zip(statuses)
        .map(|(member, status)| view(member, status, leader, leader_commit))
        .collect();
    ok(&Overview {
        cluster_id: hex(core.identity.cluster_id),
        served_by: hex(me),
        leader: leader.map(hex),
        members,
    })
}

async fn ask_status(
    client: Result<MaintenanceClient<Channel>, String>,
) -> Result<StatusResponse, String> {
    let mut client = client?;
    client
        .status(StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| match e.message() {
            "" => format!("{:?}", e.code()),
            m => m.to_string(),
        })
}

fn view(
    member: Member,
    status: Result<StatusResponse, String>,
    leader: Option<u64>,
    leader_commit: Option<u64>,
) -> MemberView {
    let role = match &status {
        Err(_) => "unreachable",
        Ok(_) if member.is_learner => "learner",
        Ok(_) if Some(member.id) == leader => "leader",
        Ok(_) => "follower",
    };
    let mut view = MemberView {
        id: hex(member.id),
        name: member.name,
        peer_urls: member.peer_ur_ls,
        client_urls: member.client_ur_ls,
        is_learner: member.is_learner,
        role,
        term: None,
        commit: None,
        applied: None,
        lag: None,
        db_size: None,
        revision: None,
        version: None,
        error: None,
    };
    match status {
        Ok(s) => {
            view.term = Some(s.raft_term);
            view.commit = Some(s.raft_index);
            view.applied = Some(s.raft_applied_index);
            view.lag = leader_commit.map(|c| c.saturating_sub(s.raft_applied_index));
            view.db_size = Some(s.db_size);
            view.revision = s.header.map(|h| h.revision);
            view.version = Some(s.version);
        }
        Err(why) => view.error = Some(why),
    }
    view
}

/// A JSON request body, every field known.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError::bad_request(format!("the request body is not as documented: {e}")))
}

/// `POST /api/v1/cluster/leader`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveLeader {
    member: String,
}

/// Hands leadership to a voter, through the leader wherever this request
/// arrived.
pub(super) async fn move_leader(
    State(g): State<Arc<Gateway>>,
    headers: HeaderMap,
    request: Bytes,
) -> Answer {
    let MoveLeader { member } = body(&request)?;
    let target = parse_id(&member, "member")?;
    if !g.core.members().iter().any(|m| m.id == target) {
        return Err(AdminError::not_found(format!(
            "no member {member}; GET /api/v1/cluster lists them"
        )));
    }
    let leader = g.core.leader().await?;
    if leader == g.core.identity.member_id {
        g.core.move_leader(target).await?;
    } else {
        let url = g
            .core
            .members()
            .into_iter()
            .find(|m| m.id == leader)
            .and_then(|m| m.client_ur_ls.into_iter().next())
            .ok_or_else(|| {
                AdminError::from(tonic::Status::unavailable("the leader has no client URL"))
            })?;
        let mut client = g
            .status_clients
            .client(&url)
            .map_err(AdminError::bad_request)?;
        // The leader checks the same token.
        let mut request = tonic::Request::new(MoveLeaderRequest { target_id: target });
        if let Some(token) = headers.get(header::AUTHORIZATION) {
            if let Ok(token) = tonic::metadata::MetadataValue::try_from(token.as_bytes()) {
                request.metadata_mut().insert("token", token);
            }
        }
        client.move_leader(request).await?;
    }
    ok(&json!({ "leader": hex(target) }))
}

/// Promotes a learner to a voter.
pub(super) async fn promote(State(g): State<Arc<Gateway>>, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id, "member")?;
    g.cluster
        .member_promote(checked(MemberPromoteRequest { id }))
        .await?;
    ok(&json!({ "promoted": hex(id) }))
}

/// Removes a member.
pub(super) async fn remove(State(g): State<Arc<Gateway>>, Path(id): Path<String>) -> Answer {
    let id = parse_id(&id, "member")?;
    g.cluster
        .member_remove(checked(MemberRemoveRequest { id }))
        .await?;
    ok(&json!({ "removed": hex(id) }))
}

#[derive(Serialize)]
struct Alarms {
    alarms: Vec<AlarmView>,
}

#[derive(Serialize)]
struct AlarmView {
    member: String,
    alarm: &'static str,
}

/// The alarms raised.
pub(super) async fn alarms(State(g): State<Arc<Gateway>>) -> Answer {
    let alarms = g
        .core
        .store
        .alarms()
        .into_iter()
        .map(|a| AlarmView {
            member: hex(a.member_id),
            alarm: AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name()),
        })
        .collect();
    ok(&Alarms { alarms })
}

/// `POST /api/v1/compact`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Compact {
    revision: i64,
    #[serde(default)]
    physical: bool,
}

/// Compacts the history up to a revision.
pub(super) async fn compact(State(g): State<Arc<Gateway>>, request: Bytes) -> Answer {
    let Compact { revision, physical } = body(&request)?;
    g.kv.compact(checked(CompactionRequest { revision, physical }))
        .await?;
    ok(&json!({ "compact_revision": revision }))
}

/// A backup of this member's store as a download, the file `etcdctl
/// snapshot save` writes.
pub(super) async fn backup(State(g): State<Arc<Gateway>>) -> Answer {
    let backup = g.maintenance.backup().await?;
    let revision = backup.header.revision;
    let file = tokio::fs::File::from_std(backup.file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, backup.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"keel-backup-{revision}.db\""),
            ),
        ],
        body,
    )
        .into_response())
}
