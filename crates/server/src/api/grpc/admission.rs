//! What every etcd request passes before its service sees it, as one tower
//! layer around all the services: the auth token it carries (etcd's
//! `token` metadata, or `authorization`) becomes the request's [`Caller`]
//! (checked when the request is); a request that asked (with etcd's
//! `hasleader` metadata) to fail while there is no leader is refused; and a
//! message over `max_request_bytes` is refused with etcd's error as its
//! length prefix arrives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tonic::Status;
use tower::{Layer, Service};

use crate::auth::Caller;
use crate::core::{Core, ServerError};
use crate::tls::ClientCommonName;

/// The gRPC metadata key with which a client asks to fail fast without a
/// leader.
pub(crate) const HAS_LEADER_KEY: &str = "hasleader";

/// The path prefix of etcd's services (keel's own and gRPC health are not
/// admitted here).
const ETCD_SERVICES: &str = "/etcdserverpb.";

/// The path prefixes of etcd's lock and election services, which carry a
/// caller too.
const COORDINATION_SERVICES: [&str; 2] = ["/v3lockpb.", "/v3electionpb."];

/// Puts [`Admission`] around a service.
#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    core: Arc<Core>,
}

impl AdmissionLayer {
    /// Admits requests to `core`.
    pub(crate) fn new(core: Arc<Core>) -> Self {
        AdmissionLayer { core }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            core: self.core.clone(),
        }
    }
}

/// The admission check around `S`.
#[derive(Clone)]
pub(crate) struct Admission<S> {
    inner: S,
    core: Arc<Core>,
}

impl<S> Service<http::Request<Body>> for Admission<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = AdmissionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let etcd = path.starts_with(ETCD_SERVICES);
        if !etcd && !COORDINATION_SERVICES.iter().any(|p| path.starts_with(p)) {
            return AdmissionFuture::Admitted {
                inner: self.inner.call(request),
            };
        }
        let caller = Caller::client(
            request.headers(),
            request.extensions().get::<ClientCommonName>(),
        );
        request.extensions_mut().insert(caller);
        if !etcd {
            return AdmissionFuture::Admitted {
                inner: self.inner.call(request),
            };
        }
        let wants_leader = request
            .headers()
            .get(HAS_LEADER_KEY)
            .is_some_and(|v| v.as_bytes() == b"true");
        if wants_leader && !self.core.has_leader() {
            let refusal = Status::from(ServerError::NoLeader).into_http();
            return AdmissionFuture::Refused {
                response: Some(refusal),
            };
        }
        let limit = self.core.limits.max_request_bytes;
        let request = request.map(|body| Body::new(MessageLimit::new(body, limit)));
        AdmissionFuture::Admitted {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to a request: the service's, or admission's refusal.
    #[project = AdmissionProjection]
    pub(crate) enum AdmissionFuture<F> {
        /// Refused before reaching the service.
        Refused { response: Option<http::Response<Body>> },
        /// Passed to the service.
        Admitted { #[pin] inner: F },
    }
}

impl<F, E> Future for AdmissionFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmissionProjection::Refused { response } => {
                let response = response.take().expect("a refusal is polled once");
                Poll::Ready(Ok(response))
            }
            AdmissionProjection::Admitted { inner } => inner.poll(cx),
        }
    }
}

/// A request body whose gRPC messages may not be longer than `limit`: each
/// message's length prefix is read as it passes, and one over the limit
/// ends the body with etcd's "request is too large" (which the service's
/// decoder returns as the request's status).
struct MessageLimit {
    inner: Body,
    limit: usize,
    /// The part of the current message's 5-byte prefix seen so far.
    prefix: [u8; 5],
    prefix_seen: usize,
    /// Bytes of the current message's payload still to pass.
    payload_left: usize,
}

impl MessageLimit {
    fn new(inner: Body, limit: usize) -> Self {
        MessageLimit {
            inner,
            limit,
            prefix: [0; 5],
            prefix_seen: 0,
            payload_left: 0,
        }
    }

    /// Follows the message framing through `data`.
    fn check(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data.advance(n);
                continue;
            }
            let n = (5 - self.prefix_seen).min(data.len());
            self.prefix[self.prefix_seen..self.prefix_seen + n].copy_from_slice(&data[..n]);
            self.prefix_seen += n;
            data.advance(n);
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                if length > self.limit {
                    return Err(ServerError::TooLarge.into());
                }
                self.payload_left = length;
            }
        }
        Ok(())
    }
}

impl http_body::Body for MessageLimit {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = match http_body::Body::poll_frame(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let data = data.clone();
            self.check(&data)?;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(lengths: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &length in lengths {
            out.push(0);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, length as usize));
        }
        out
    }

    #[test]
    fn messages_are_measured_across_any_split() {
        let stream = framed(&[3, 10, 0, 10]);
        for split in 1..stream.len() {
            let mut limit = MessageLimit::new(Body::empty(), 10);
            for chunk in stream.chunks(split) {
                limit
                    .check(chunk)
                    .expect("every message is within the limit");
            }
            assert_eq!((limit.prefix_seen, limit.payload_left), (0, 0));
        }
        let stream = framed(&[3, 11]);
        for split in 1..stream.len() {
            let mut limit = MessageLimit::new(Body::empty(), 10);
            let refused = stream
                .chunks(split)
                .map(|c| limit.check(c))
                .find(Result::is_err);
            let status = refused
                .expect("the second message is too large")
                .unwrap_err();
            assert_eq!(status.message(), "etcdserver: request is too large");
        }
    }
}
