//! keel's HTTP plane, on the client port beside gRPC (HTTP/1.1 and
//! HTTP/2 share the listener): etcd's JSON gateway ([`gateway`]), the
//! admin API ([`admin`]), the dashboard at `/` ([`dashboard`]),
//! `GET /version` and `GET /health` as etcd answers them, and `GET /metrics`
//! ([`crate::metrics`]). A path nobody
//! serves gets a JSON 404 (a gRPC call to an unknown service still gets
//! gRPC's `UNIMPLEMENTED`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

mod admin;
mod dashboard;
mod gateway;
mod json;

pub(crate) use admin::StatusClients;
pub(crate) use gateway::Gateway;

use crate::core::maintenance::API_VERSION;

/// The etcd cluster version keel answers with.
const CLUSTER_VERSION: &str = "3.5.0";

/// The HTTP routes, to merge with the gRPC services' (which they do not
/// overlap).
pub(crate) fn router(gateway: Gateway) -> Router {
    let gateway = Arc::new(gateway);
    Router::new()
        .merge(gateway::routes())
        .merge(admin::routes(gateway.clone()))
        .merge(dashboard::routes())
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .layer(axum::middleware::map_response(allow_cross_origin))
        .with_state(gateway)
}

/// What a path nobody serves gets.
pub(crate) async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    let why = format!("no such path: {}", request.uri().path());
    json::respond(
        StatusCode::NOT_FOUND,
        &json::ErrorBody {
            error: &why,
            message: &why,
            code: tonic::Code::NotFound as i32,
        },
    )
}

/// The headers etcd's gateway sends so that browser pages elsewhere may
/// call it.
async fn allow_cross_origin(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}

/// `GET /metrics`: every metric in Prometheus' text format, with the
/// gauges read from the store and the watch hub now.
async fn metrics_text(State(g): State<Arc<Gateway>>) -> Response {
    metrics::gauge!(crate::metrics::DB_SIZE).set(g.core.store.db_size() as f64);
    let (streams, watches) = g.hub.counts();
    metrics::gauge!(crate::metrics::WATCH_STREAMS).set(streams as f64);
    metrics::gauge!(crate::metrics::WATCHERS).set(watches as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::recorder().render(),
    )
        .into_response()
}

/// `GET /version`'s body.
#[derive(Serialize)]
struct Version {
    etcdserver: &'static str,
    etcdcluster: &'static str,
}

async fn version() -> Response {
    json::respond(
        StatusCode::OK,
        &Version {
            etcdserver: API_VERSION,
            etcdcluster: CLUSTER_VERSION,
        },
    )
}

/// `GET /health`: healthy while the member knows a leader and no alarm is
/// raised, as etcd's (503 otherwise).
async fn health(State(g): State<Arc<Gateway>>) -> Response {
    let healthy = g.core.has_leader() && g.core.store.alarms().is_empty();
    let (status, body) = if healthy {
        (StatusCode::OK, "true")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "false")
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"health\":\"{body}\"}}"),
    )
        .into_response()
}
