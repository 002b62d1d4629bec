//! keel's admin API, `/api/v1/...`: JSON for people and scripts that run a
//! cluster — members with their raft progress, a key browser with each
//! key's history, leases, alarms, and the actions an operator takes
//! (move the leader, promote or remove a member, compact, download a
//! backup). Documented in `docs/admin-api.openapi.json`, served at
//! `/api/v1/openapi.json`.
//!
//! Reads are served from this member's store as it has applied it (the
//! `served_by` member); actions go through the same services as gRPC, so
//! they are passed on to the leader the same way.
//!
//! Ids are hex strings as etcdctl prints them; keys and values are base64
//! in JSON, as etcd's gateway has them; keys in query parameters are
//! percent-encoded bytes.
//!
//! Once auth is on, every path but the OpenAPI document is root's: the
//! token from `/v3/auth/authenticate` goes in the `Authorization` header.

mod cluster;
mod keys;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use base64::Engine;
use serde::Serialize;
use tonic::Code;

pub(crate) use cluster::StatusClients;

use super::json;
use super::Gateway;
use crate::auth::Caller;
use crate::core::ServerError;
use crate::tls::ClientCommonName;

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("../../../../../../docs/admin-api.openapi.json");

/// The admin API's routes; `gateway` checks their callers.
pub(crate) fn routes(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    let v1 = Router::new()
        .route("/cluster", get(cluster::overview))
        .route("/cluster/leader", post(cluster::move_leader))
        .route("/members/{id}", delete(cluster::remove))
        .route("/members/{id}/promote", post(cluster::promote))
        .route("/alarms", get(cluster::alarms))
        .route("/compact", post(cluster::compact))
        .route("/backup", get(cluster::backup))
        .route("/keys", get(keys::list))
        .route("/key", get(keys::one))
        .route("/key/history", get(keys::history))
        .route("/leases", get(keys::leases))
        .route_layer(middleware::from_fn_with_state(gateway, require_root))
        .route("/openapi.json", get(openapi));
    Router::new().nest("/api/v1", v1)
}

/// Lets a request through only if its caller is root (or auth is off).
async fn require_root(State(g): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let caller = Caller::client(
        request.headers(),
        request.extensions().get::<ClientCommonName>(),
    );
    if caller.is_anonymous() && g.core.auth_state().enabled() {
        return AdminError {
            status: StatusCode::UNAUTHORIZED,
            message: "auth is enabled: send root's token (from POST /v3/auth/authenticate) \
                      in the Authorization header"
                .into(),
        }
        .into_response();
    }
    match g.core.authorize_admin(&caller) {
        Ok(()) => next.run(request).await,
        Err(e) => AdminError::from(e).into_response(),
    }
}

/// `message` as a request the admin API makes for its (checked) caller.
fn checked<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Caller::Member);
    request
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// An admin API error: an HTTP status and a message a person can act on.
#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    message: String,
}

impl AdminError {
    /// A request that cannot be served as asked.
    fn bad_request(message: impl Into<String>) -> Self {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// Nothing by that name.
    fn not_found(message: impl Into<String>) -> Self {
        AdminError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// The short word for the status, for scripts.
    fn slug(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PRECONDITION_FAILED => "failed_precondition",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            _ => "internal",
        }
    }
}

/// The error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        json::respond(
            self.status,
            &ErrorBody {
                error: self.slug(),
                message: &self.message,
            },
        )
    }
}

impl From<tonic::Status> for AdminError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message();
        let message = if message.is_empty() {
            format!("{:?}", status.code())
        } else {
            message.trim_start_matches("etcdserver: ").to_string()
        };
        let status = match status.code() {
            // A request that timed out on raft, or no leader: try again.
            Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            code => json::http_status(code),
        };
        AdminError { status, message }
    }
}

impl From<ServerError> for AdminError {
    fn from(e: ServerError) -> Self {
        tonic::Status::from(e).into()
    }
}

type Answer = Result<Response, AdminError>;

/// `value` as a 200 JSON response.
fn ok<T: Serialize>(value: &T) -> Answer {
    Ok(json::respond(StatusCode::OK, value))
}

/// An id as etcdctl prints it.
fn hex(id: u64) -> String {
    format!("{id:x}")
}

/// A lease id as etcdctl prints it: 16 hex digits ("0" for no lease).
fn lease_hex(id: i64) -> String {
    match id {
        0 => "0".into(),
        id => format!("{:016x}", id as u64),
    }
}

/// Reads an id written in hex (as etcdctl prints it).
fn parse_id(text: &str, what: &str) -> Result<u64, AdminError> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| AdminError::bad_request(format!("{what} {text:?} is not a hex id")))
}

/// Bytes as base64, as the gateway writes them.
fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A query string's parameters, percent-decoded to bytes (keys may be any
/// bytes, so not necessarily UTF-8).
struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let name = String::from_utf8_lossy(&decode_bytes(name)).into_owned();
                (name, decode_bytes(value))
            })
            .collect();
        Query(pairs)
    }

    /// The bytes of parameter `name`, if given.
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A count parameter: `default` when absent, at most `max`.
    fn limit(&self, default: i64, max: i64) -> Result<i64, AdminError> {
        let Some(text) = self.bytes("limit") else {
            return Ok(default);
        };
        let text = String::from_utf8_lossy(text);
        match text.parse::<i64>() {
            Ok(n) if n > 0 => Ok(n.min(max)),
            _ => Err(AdminError::bad_request(format!(
                "limit {text:?} is not a positive number"
            ))),
        }
    }
}

/// `+` is a space in a query string; `%XX` is a byte.
fn decode_bytes(text: &str) -> Vec<u8> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_decode_to_any_bytes() {
        let q = Query::parse(Some("prefix=app%2Fa+b&key=%FF%00x&flag&limit=5"));
        assert_eq!(q.bytes("prefix"), Some(&b"app/a b"[..]));
        assert_eq!(q.bytes("key"), Some(&[0xff, 0, b'x'][..]));
        assert_eq!(q.bytes("flag"), Some(&b""[..]));
        assert_eq!(q.bytes("missing"), None);
        assert_eq!(q.limit(100, 3).unwrap(), 3);
        assert_eq!(Query::parse(None).limit(100, 1000).unwrap(), 100);
        assert!(Query::parse(Some("limit=-1")).limit(1, 2).is_err());
        assert!(Query::parse(Some("limit=x")).limit(1, 2).is_err());
    }

    #[test]
    fn ids_are_hex_and_a_bad_one_says_what_is_wrong() {
        assert_eq!(
            parse_id("8e9e05c52164694d", "member").unwrap(),
            0x8e9e05c52164694d
        );
        assert_eq!(hex(0x8e9e05c52164694d), "8e9e05c52164694d");
        let e = parse_id("zz", "member").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("\"zz\""), "{}", e.message);
    }

    #[test]
    fn errors_from_the_core_keep_their_meaning() {
        let e = AdminError::from(tonic::Status::unavailable("etcdserver: no leader"));
        assert_eq!(
            (e.status, e.slug()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(e.message, "no leader");
        let e = AdminError::from(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn lease_ids_are_written_as_etcdctl_writes_them() {
        assert_eq!(lease_hex(0x0bde_4e6f_f89c_6d0b), "0bde4e6ff89c6d0b");
        assert_eq!(lease_hex(0), "0");
        assert_eq!(
            parse_id(&lease_hex(0x0bde_4e6f_f89c_6d0b), "lease").ok(),
            Some(0x0bde_4e6f_f89c_6d0b)
        );
    }
}
