//! `grpc_server_handled_total`: every etcd gRPC call counted by service,
//! method, type and code, with grpc-go's label values (what etcd exports),
//! as a tower layer around the client port's services. A call is counted
//! when its response starts: a unary call's code is final then, a stream
//! is counted as it opens (with the code it opens with).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Code;
use tower::{Layer, Service};

use crate::metrics::GRPC_HANDLED;

/// etcd's methods: path, service, method and gRPC type, as grpc-go labels
/// them.
const METHODS: &[(&str, &str, &str, &str)] = &[
    (
        "/etcdserverpb.KV/Range",
        "etcdserverpb.KV",
        "Range",
        "unary",
    ),
    ("/etcdserverpb.KV/Put", "etcdserverpb.KV", "Put", "unary"),
    (
        "/etcdserverpb.KV/DeleteRange",
        "etcdserverpb.KV",
        "DeleteRange",
        "unary",
    ),
    ("/etcdserverpb.KV/Txn", "etcdserverpb.KV", "Txn", "unary"),
    (
        "/etcdserverpb.KV/Compact",
        "etcdserverpb.KV",
        "Compact",
        "unary",
    ),
    (
        "/etcdserverpb.Watch/Watch",
        "etcdserverpb.Watch",
        "Watch",
        "bidi_stream",
    ),
    (
        "/etcdserverpb.Cluster/MemberAdd",
        "etcdserverpb.Cluster",
        "MemberAdd",
        "unary",
    ),
    (
        "/etcdserverpb.Cluster/MemberRemove",
        "etcdserverpb.Cluster",
        "MemberRemove",
        "unary",
    ),
    (
        "/etcdserverpb.Cluster/MemberUpdate",
        "etcdserverpb.Cluster",
        "MemberUpdate",
        "unary",
    ),
    (
        "/etcdserverpb.Cluster/MemberList",
        "etcdserverpb.Cluster",
        "MemberList",
        "unary",
    ),
    (
        "/etcdserverpb.Cluster/MemberPromote",
        "etcdserverpb.Cluster",
        "MemberPromote",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/Alarm",
        "etcdserverpb.Maintenance",
        "Alarm",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/Status",
        "etcdserverpb.Maintenance",
        "Status",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/Defragment",
        "etcdserverpb.Maintenance",
        "Defragment",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/Hash",
        "etcdserverpb.Maintenance",
        "Hash",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/HashKV",
        "etcdserverpb.Maintenance",
        "HashKV",
        "unary",
    ),
    (
        "/etcdserverpb.Maintenance/Snapshot",
        "etcdserverpb.Maintenance",
        "Snapshot",
        "server_stream",
    ),
    (
        "/etcdserverpb.Maintenance/MoveLeader",
        "etcdserverpb.Maintenance",
        "MoveLeader",
        "unary",
    ),
    (
        "/etcdserverpb.Lease/LeaseGrant",
        "etcdserverpb.Lease",
        "LeaseGrant",
        "unary",
    ),
    (
        "/etcdserverpb.Lease/LeaseRevoke",
        "etcdserverpb.Lease",
        "LeaseRevoke",
        "unary",
    ),
    (
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "etcdserverpb.Lease",
        "LeaseKeepAlive",
        "bidi_stream",
    ),
    (
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "etcdserverpb.Lease",
        "LeaseTimeToLive",
        "unary",
    ),
    (
        "/etcdserverpb.Lease/LeaseLeases",
        "etcdserverpb.Lease",
        "LeaseLeases",
        "unary",
    ),
    ("/v3lockpb.Lock/Lock", "v3lockpb.Lock", "Lock", "unary"),
    ("/v3lockpb.Lock/Unlock", "v3lockpb.Lock", "Unlock", "unary"),
    (
        "/v3electionpb.Election/Campaign",
        "v3electionpb.Election",
        "Campaign",
        "unary",
    ),
    (
        "/v3electionpb.Election/Proclaim",
        "v3electionpb.Election",
        "Proclaim",
        "unary",
    ),
    (
        "/v3electionpb.Election/Leader",
        "v3electionpb.Election",
        "Leader",
        "unary",
    ),
    (
        "/v3electionpb.Election/Observe",
        "v3electionpb.Election",
        "Observe",
        "server_stream",
    ),
    (
        "/v3electionpb.Election/Resign",
        "v3electionpb.Election",
        "Resign",
        "unary",
    ),
];

/// grpc-go's name for a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Puts [`Handled`] around a service.
#[derive(Clone, Copy, Default)]
pub(crate) struct HandledLayer;

impl<S> Layer<S> for HandledLayer {
    type Service = Handled<S>;

    fn layer(&self, inner: S) -> Handled<S> {
        Handled { inner }
    }
}

/// The counting around `S`.
#[derive(Clone)]
pub(crate) struct Handled<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for Handled<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = HandledFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = METHODS
            .iter()
            .find(|(path, ..)| *path == request.uri().path())
            .copied();
        HandledFuture {
            inner: self.inner.call(request),
            method,
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's answer, counted as it comes.
    pub(crate) struct HandledFuture<F> {
        #[pin]
        inner: F,
        method: Option<(&'static str, &'static str, &'static str, &'static str)>,
    }
}

impl<F, E> Future for HandledFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some((_, service, method, kind))) = (&answer, *this.method) {
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            metrics::counter!(
                GRPC_HANDLED,
                "grpc_type" => kind,
                "grpc_service" => service,
                "grpc_method" => method,
                "grpc_code" => code_name(code),
            )
            .increment(1);
        }
        Poll::Ready(answer)
    }
}
