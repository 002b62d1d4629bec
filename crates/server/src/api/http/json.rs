//! The JSON of etcd's gateway: a request body (one message, or for a
//! stream a sequence of them) decoded with the protobuf JSON mapping, a
//! response encoded with it, and a gRPC status as the gateway's error
//! (`{"error", "code", "message"}` and the HTTP status grpc-gateway v1
//! gives the code, as etcd 3.4 answers).

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

/// Messages waiting on either side of a streamed call.
const STREAM_QUEUE: usize = 16;

/// The HTTP status grpc-gateway v1 (etcd 3.4's) gives a gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `value` as a JSON response with `status`.
pub(crate) fn respond<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => error(&Status::internal(format!("encoding the response: {e}"))),
    }
}

/// The gateway's error body, its fields in etcd's order.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) error: &'a str,
    pub(crate) message: &'a str,
    pub(crate) code: i32,
}

/// A gRPC status as the gateway's error response.
pub(crate) fn error(status: &Status) -> Response {
    respond(
        http_status(status.code()),
        &ErrorBody {
            error: status.message(),
            message: status.message(),
            code: status.code() as i32,
        },
    )
}

/// Why a request body was refused.
pub(crate) enum BadRequest {
    /// Over the request limit.
    TooLarge,
    /// Not JSON, or not the request's JSON.
    Malformed(String),
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        match self {
            BadRequest::TooLarge => {
                let status = Status::invalid_argument("etcdserver: request is too large");
                let mut response = error(&status);
                *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                response
            }
            BadRequest::Malformed(why) => error(&Status::invalid_argument(why)),
        }
    }
}

/// A request from its JSON, as the gateway reads it: a field given as
/// `null` has its default value (the generated decoders refuse `null` for
/// numbers and strings).
fn from_json<T: DeserializeOwned>(mut json: serde_json::Value) -> serde_json::Result<T> {
    fn drop_nulls(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(fields) => {
                fields.retain(|_, v| !v.is_null());
                fields.values_mut().for_each(drop_nulls);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    drop_nulls(&mut json);
    serde_json::from_value(json)
}

/// Decodes one request: an empty body is the empty message, as the
/// gateway takes it; a message encoding to more than `max_request_bytes`
/// is refused as etcd refuses it.
fn decode<T>(body: &[u8], max_request_bytes: usize) -> Result<T, BadRequest>
where
    T: DeserializeOwned + Default + prost::Message,
{
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let request: T = serde_json::from_slice(body)
        .and_then(from_json)
        .map_err(|e| BadRequest::Malformed(e.to_string()))?;
    if request.encoded_len() > max_request_bytes {
        return Err(BadRequest::TooLarge);
    }
    Ok(request)
}

/// Reads and decodes a body holding one request.
pub(crate) async fn request<T>(body: Body, max_request_bytes: usize) -> Result<T, BadRequest>
where
    T: DeserializeOwned + Default + prost::Message,
{
    let Ok(body) = axum::body::to_bytes(body, body_limit(max_request_bytes)).await else {
        return Err(BadRequest::TooLarge);
    };
    decode(&body, max_request_bytes)
}

/// The most bytes of JSON a request of `max_request_bytes` can take
/// (base64 and the field names make it larger than its protobuf).
fn body_limit(max_request_bytes: usize) -> usize {
    max_request_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// Serves one unary call: decodes the body, calls `call`, encodes its
/// answer or its error.
pub(crate) async fn unary<Req, Resp, Fut>(
    body: Body,
    max_request_bytes: usize,
    call: impl FnOnce(Req) -> Fut,
) -> Response
where
    Req: DeserializeOwned + Default + prost::Message,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match request::<Req>(body, max_request_bytes).await {
        Ok(request) => request,
        Err(bad) => return bad.into_response(),
    };
    match call(request).await {
        Ok(answer) => respond(StatusCode::OK, answer.get_ref()),
        Err(status) => error(&status),
    }
}

/// Decodes a streamed call's requests as they arrive: JSON messages one
/// after another in the body. A message that does not decode (or grows
/// past the limit) ends the requests with the reason.
pub(crate) fn requests<T>(body: Body, max_request_bytes: usize) -> ReceiverStream<Result<T, Status>>
where
    T: DeserializeOwned + prost::Message + Send + 'static,
{
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                _ = tx.closed() => return,
            };
            let ended = match chunk {
                Some(Ok(bytes)) => {
                    buffer.extend_from_slice(&bytes);
                    false
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(Status::cancelled(e.to_string()))).await;
                    return;
                }
                None => true,
            };
            let mut values =
                serde_json::Deserializer::from_slice(&buffer).into_iter::<serde_json::Value>();
            let mut used = 0;
            let mut failed = None;
            while let Some(value) = values.next() {
                match value.and_then(from_json::<T>) {
                    Ok(request) if request.encoded_len() > max_request_bytes => {
                        failed = Some(Status::invalid_argument("etcdserver: request is too large"));
                        break;
                    }
                    Ok(request) => {
                        if tx.send(Ok(request)).await.is_err() {
                            return;
                        }
                        used = values.byte_offset();
                    }
                    // A message cut off by the chunk's end: wait for more.
                    Err(e) if e.is_eof() && !ended => break,
                    Err(e) => {
                        failed = Some(Status::invalid_argument(e.to_string()));
                        break;
                    }
                }
            }
            if let Some(status) = failed {
                let _ = tx.send(Err(status)).await;
                return;
            }
            buffer.drain(..used);
            if buffer.len() > body_limit(max_request_bytes) {
                let _ = tx
                    .send(Err(Status::invalid_argument(
                        "etcdserver: request is too large",
                    )))
                    .await;
                return;
            }
            if ended {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// One message of a streamed call's answers.
#[derive(Serialize)]
struct Answer<'a, T> {
    result: &'a T,
}

/// A streamed call's answers as the gateway sends them: one
/// `{"result": ...}` line per message, and an error as a last
/// `{"error": ...}` line. The client's reading paces the stream.
pub(crate) fn streamed<T, S>(answers: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_QUEUE);
    tokio::spawn(async move {
        let mut answers = answers;
        loop {
            let answer = tokio::select! {
                answer = answers.next() => answer,
                _ = tx.closed() => return,
            };
            let (line, last) = match answer {
                None => return,
                Some(Ok(message)) => (serde_json::to_vec(&Answer { result: &message }), false),
                Some(Err(status)) => (
                    serde_json::to_vec(&serde_json::json!({ "error": {
                        "grpc_code": status.code() as i32,
                        "http_code": http_status(status.code()).as_u16(),
                        "message": status.message(),
                        "http_status": http_status(status.code()).canonical_reason().unwrap_or(""),
                    }})),
                    true,
                ),
            };
            let Ok(mut line) = line else { return };
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() || last {
                return;
            }
        }
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_api::etcdserverpb::{watch_request::RequestUnion, WatchRequest};

    #[test]
    fn a_null_field_has_its_default_value_as_in_the_gateway() {
        let body = br#"{"key": "YQ==", "limit": null, "range_end": null, "sort_order": null}"#;
        let Ok(request) = decode::<keel_api::etcdserverpb::RangeRequest>(body, 1024) else {
            panic!("a body with null fields is refused");
        };
        assert_eq!(&request.key[..], b"a");
        assert_eq!((request.limit, request.range_end.len()), (0, 0));
        let bad: Result<keel_api::etcdserverpb::RangeRequest, _> =
            decode(br#"{"limit": "x"}"#, 1024);
        assert!(matches!(bad, Err(BadRequest::Malformed(_))));
    }

    /// The requests of a body arriving in `chunks`.
    async fn parse(chunks: Vec<&'static str>, limit: usize) -> Vec<Result<WatchRequest, Status>> {
        let chunks = chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())));
        let body = Body::from_stream(tokio_stream::iter(chunks));
        requests::<WatchRequest>(body, limit).collect().await
    }

    fn key(request: &Result<WatchRequest, Status>) -> Vec<u8> {
        match request {
            Ok(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            }) => create.key.to_vec(),
            other => panic!("not a create request: {other:?}"),
        }
    }

    #[tokio::test]
    async fn stream_requests_are_read_across_chunk_boundaries_and_errors_end_them() {
        // Two messages, the first cut in three, the second in the same
        // chunk as the first's end, whitespace between.
        let got = parse(
            vec![
                r#"{"create_request":{"ke"#,
                r#"y":"YQ=="#,
                r#""}} {"createRequest":{"key":"Yg=="}}"#,
                "\n",
            ],
            1000,
        )
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((key(&got[0]), key(&got[1])), (b"a".to_vec(), b"b".to_vec()));

        // A bad message after a good one: the good one, then the error.
        let got = parse(vec![r#"{"create_request":{"key":"YQ=="}}{"nope":1}"#], 1000).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(key(&got[0]), b"a".to_vec());
        assert_eq!(got[1].as_ref().unwrap_err().code(), Code::InvalidArgument);

        // A body cut off inside a message is an error, not a hang.
        let got = parse(vec![r#"{"create_request":{"key":"#], 1000).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].is_err());

        // A message over the limit.
        let got = parse(
            vec![r#"{"create_request":{"key":"YWFhYWFhYWFhYWFhYWFhYWFhYWFh"}}"#],
            10,
        )
        .await;
        assert_eq!(
            got[0].as_ref().unwrap_err().message(),
            "etcdserver: request is too large"
        );
    }

    #[test]
    fn codes_get_grpc_gateways_http_statuses() {
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
