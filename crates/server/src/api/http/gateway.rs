//! etcd's JSON gateway: the grpc-gateway paths etcd serves on its client
//! port (`/v3/...`, and `/v3beta/...` as etcd 3.4 still does), each a POST of the request's JSON answered with the
//! response's, through the same services as gRPC (so the same core, the
//! same checks and the same errors). Streamed calls (watch, lease
//! keep-alive, snapshot, observe) answer with one `{"result": ...}` line
//! per message. The auth token comes in the `Authorization` header (or
//! `token`), as etcd's gateway takes it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use keel_api::etcdserverpb::auth_server::Auth;
use keel_api::etcdserverpb::cluster_server::Cluster;
use keel_api::etcdserverpb::kv_server::Kv;
use keel_api::etcdserverpb::lease_server::Lease;
use keel_api::etcdserverpb::maintenance_server::Maintenance;
use keel_api::etcdserverpb::{LeaseKeepAliveRequest, SnapshotRequest, WatchRequest};
use keel_api::v3electionpb::election_server::Election;
use keel_api::v3electionpb::LeaderRequest;
use keel_api::v3lockpb::lock_server::Lock;
use tonic::Request;

use super::admin::StatusClients;
use super::json;
use crate::api::grpc::{
    keep_alive, AuthService, ClusterService, ElectionService, KvService, LeaseService, LockService,
    MaintenanceService, WatchService,
};
use crate::auth::Caller;
use crate::core::Core;
use crate::watch::WatchHub;

/// The services the gateway calls.
pub(crate) struct Gateway {
    pub(crate) core: Arc<Core>,
    pub(crate) kv: KvService,
    pub(crate) auth: AuthService,
    pub(crate) lease: LeaseService,
    pub(crate) cluster: ClusterService,
    pub(crate) maintenance: MaintenanceService,
    pub(crate) lock: LockService,
    pub(crate) election: ElectionService,
    pub(crate) watch: WatchService,
    /// The watch hub, for its counts in the metrics.
    pub(crate) hub: Arc<WatchHub>,
    /// Channels to the other members, for the admin API's cluster view.
    pub(crate) status_clients: StatusClients,
}

impl Gateway {
    fn limit(&self) -> usize {
        self.core.limits.max_request_bytes
    }
}

/// `message` as a request of `caller`.
fn request_of<T>(caller: Caller, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(caller);
    request
}

/// A unary call: `$service.$method` with the body's request.
macro_rules! unary {
    ($service:ident . $method:ident) => {
        post(
            |State(g): State<Arc<Gateway>>, caller: Caller, body: Body| async move {
                json::unary(body, g.limit(), |request| {
                    g.$service.$method(request_of(caller, request))
                })
                .await
            },
        )
    };
}

/// The gateway's routes.
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    let kv = Router::new()
        .route("/kv/range", unary!(kv.range))
        .route("/kv/put", unary!(kv.put))
        .route("/kv/deleterange", unary!(kv.delete_range))
        .route("/kv/txn", unary!(kv.txn))
        .route("/kv/compaction", unary!(kv.compact));
    let lease = Router::new()
        .route("/lease/grant", unary!(lease.lease_grant))
        .route("/lease/revoke", unary!(lease.lease_revoke))
        .route("/kv/lease/revoke", unary!(lease.lease_revoke))
        .route("/lease/timetolive", unary!(lease.lease_time_to_live))
        .route("/kv/lease/timetolive", unary!(lease.lease_time_to_live))
        .route("/lease/leases", unary!(lease.lease_leases))
        .route("/kv/lease/leases", unary!(lease.lease_leases))
        .route("/lease/keepalive", keep_alives());
    let cluster = Router::new()
        .route("/cluster/member/list", unary!(cluster.member_list))
        .route("/cluster/member/add", unary!(cluster.member_add))
        .route("/cluster/member/remove", unary!(cluster.member_remove))
        .route("/cluster/member/update", unary!(cluster.member_update))
        .route("/cluster/member/promote", unary!(cluster.member_promote));
    let maintenance = Router::new()
        .route("/maintenance/status", unary!(maintenance.status))
        .route("/maintenance/alarm", unary!(maintenance.alarm))
        .route("/maintenance/defragment", unary!(maintenance.defragment))
        // etcd 3.4 routes this path to Hash (HashKV has no path of its own
        // that answers).
        .route("/maintenance/hash", unary!(maintenance.hash))
        .route("/maintenance/snapshot", snapshots())
        .route(
            "/maintenance/transfer-leadership",
            unary!(maintenance.move_leader),
        );
    let auth = Router::new()
        .route("/auth/enable", unary!(auth.auth_enable))
        .route("/auth/disable", unary!(auth.auth_disable))
        .route("/auth/status", unary!(auth.auth_status))
        .route("/auth/authenticate", unary!(auth.authenticate))
        .route("/auth/user/add", unary!(auth.user_add))
        .route("/auth/user/get", unary!(auth.user_get))
        .route("/auth/user/list", unary!(auth.user_list))
        .route("/auth/user/delete", unary!(auth.user_delete))
        .route("/auth/user/changepw", unary!(auth.user_change_password))
        .route("/auth/user/grant", unary!(auth.user_grant_role))
        .route("/auth/user/revoke", unary!(auth.user_revoke_role))
        .route("/auth/role/add", unary!(auth.role_add))
        .route("/auth/role/get", unary!(auth.role_get))
        .route("/auth/role/list", unary!(auth.role_list))
        .route("/auth/role/delete", unary!(auth.role_delete))
        .route("/auth/role/grant", unary!(auth.role_grant_permission))
        .route("/auth/role/revoke", unary!(auth.role_revoke_permission));
    let coordination = Router::new()
        .route("/lock/lock", unary!(lock.lock))
        .route("/lock/unlock", unary!(lock.unlock))
        .route("/election/campaign", unary!(election.campaign))
        .route("/election/proclaim", unary!(election.proclaim))
        .route("/election/leader", unary!(election.leader))
        .route("/election/resign", unary!(election.resign))
        .route("/election/observe", observations());
    let all = kv
        .merge(lease)
        .merge(cluster)
        .merge(maintenance)
        .merge(auth)
        .merge(coordination)
        .route("/watch", watches());
    // etcd 3.4 also serves the paths under /v3beta (deprecated there).
    Router::new().nest("/v3", all.clone()).nest("/v3beta", all)
}

/// `/v3/watch`: a watch stream; its requests are the body's messages.
fn watches() -> MethodRouter<Arc<Gateway>> {
    post(
        |State(g): State<Arc<Gateway>>, caller: Caller, body: Body| async move {
            let requests = json::requests::<WatchRequest>(body, g.limit());
            json::streamed(g.watch.open(false, caller, requests))
        },
    )
}

/// `/v3/lease/keepalive`: one answer per request of the body.
fn keep_alives() -> MethodRouter<Arc<Gateway>> {
    post(|State(g): State<Arc<Gateway>>, body: Body| async move {
        let requests = json::requests::<LeaseKeepAliveRequest>(body, g.limit());
        json::streamed(keep_alive(g.core.clone(), requests))
    })
}

/// `/v3/maintenance/snapshot`: the backup in messages.
fn snapshots() -> MethodRouter<Arc<Gateway>> {
    post(
        |State(g): State<Arc<Gateway>>, caller: Caller, body: Body| async move {
            server_streaming(body, g.limit(), |request: SnapshotRequest| {
                g.maintenance.snapshot(request_of(caller, request))
            })
            .await
        },
    )
}

/// `/v3/election/observe`: the election's leaders as they change.
fn observations() -> MethodRouter<Arc<Gateway>> {
    post(
        |State(g): State<Arc<Gateway>>, caller: Caller, body: Body| async move {
            server_streaming(body, g.limit(), |request: LeaderRequest| {
                g.election.observe(request_of(caller, request))
            })
            .await
        },
    )
}

/// A call with one request and streamed answers.
async fn server_streaming<Req, T, S, Fut>(
    body: Body,
    limit: usize,
    call: impl FnOnce(Req) -> Fut,
) -> Response
where
    Req: serde::de::DeserializeOwned + Default + prost::Message,
    T: serde::Serialize + Send + 'static,
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<S>, tonic::Status>>,
{
    let request = match json::request::<Req>(body, limit).await {
        Ok(request) => request,
        Err(bad) => return bad.into_response(),
    };
    match call(request).await {
        Ok(answers) => json::streamed(answers.into_inner()),
        Err(status) => json::error(&status),
    }
}
