//! Watches on real members: a watcher on a follower keeps every change
//! while the leader is killed and another takes over, and a watcher whose
//! member restarts resumes from its last revision and misses nothing.
//! Bad input on a stream (a malformed frame, 100,000 watches) gets a clear
//! answer and leaves the member serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{put, Cluster};
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::watch_request::RequestUnion;
use keel_api::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A watch of everything under `prefix` from `start_revision` on member
/// `i`; its responses (the created one first) arrive on the returned
/// channel until the stream ends.
async fn watch_prefix(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    start_revision: i64,
) -> mpsc::UnboundedReceiver<WatchResponse> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let create = WatchCreateRequest {
        key: Bytes::copy_from_slice(prefix.as_bytes()),
        range_end: end.into(),
        start_revision,
        ..Default::default()
    };
    let (mut responses, requests) = open_watch(cluster, i, create, false).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep_open = requests;
        while let Ok(Some(response)) = responses.message().await {
            if tx.send(response).is_err() {
                return;
            }
        }
    });
    rx
}

/// Collects the (revision, key) of every event until `count` keys were
/// seen or 20 s pass; returns them and the last revision seen.
async fn collect(
    responses: &mut mpsc::UnboundedReceiver<WatchResponse>,
    count: usize,
    seen: &mut Vec<(i64, String)>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < count {
        let response = tokio::time::timeout_at(deadline, responses.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", seen.len()));
        let Some(response) = response else {
            return;
        };
        assert!(!response.canceled, "watch canceled: {response:?}");
        for event in response.events {
            let kv = event.kv.unwrap();
            seen.push((
                kv.mod_revision,
                String::from_utf8_lossy(&kv.key).into_owned(),
            ));
        }
    }
}

/// The keys `w/0000`.. in order, each at a revision above the one before.
fn assert_in_order(seen: &[(i64, String)], count: usize) {
    let keys: Vec<String> = seen.iter().map(|(_, k)| k.clone()).collect();
    let wanted: Vec<String> = (0..count).map(|n| format!("w/{n:04}")).collect();
    assert_eq!(keys, wanted, "events missing, repeated or out of order");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions out of order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_keeps_every_change_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let mut responses = watch_prefix(&cluster, follower, "w/", 0).await;
    let created = responses.recv().await.expect("created");
    assert!(created.created);
    for n in 0..50 {
        put(&cluster, follower, &format!("w/{n:04}"), "v")
            .await
            .expect("put");
    }
    cluster.kill(leader);
    for n in 50..100 {
        // Writes go on through the follower once a new leader is elected.
        let key = format!("w/{n:04}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while put(&cluster, follower, &key, "v").await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut seen = Vec::new();
    collect(&mut responses, 100, &mut seen).await;
    assert_in_order(&seen, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_after_its_member_restarts_and_misses_nothing() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let member = (leader + 1) % 3;
    let writer = (leader + 2) % 3;
    let mut responses = watch_prefix(&cluster, member, "w/", 0).await;
    responses.recv().await.expect("created");
    for n in 0..30 {
        put(&cluster, writer, &format!("w/{n:04}"), "v")
            .await
            .expect("put");
    }
    let mut seen = Vec::new();
    collect(&mut responses, 30, &mut seen).await;
    cluster.stop(member);
    for n in 30..60 {
        put(&cluster, writer, &format!("w/{n:04}"), "v")
            .await
            .expect("put");
    }
    cluster.spawn(member);
    let resume_at = seen.last().unwrap().0 + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut responses = loop {
        if cluster.status(member).await.is_some() {
            break watch_prefix(&cluster, member, "w/", resume_at).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member did not restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    responses.recv().await.expect("created");
    for n in 60..80 {
        put(&cluster, writer, &format!("w/{n:04}"), "v")
            .await
            .expect("put");
    }
    collect(&mut responses, 80, &mut seen).await;
    assert_in_order(&seen, 80);
}

/// Opens a watch on member `i`, with etcd's `hasleader` metadata when
/// `require_leader`; returns the response stream and the request sender
/// that keeps it open.
async fn open_watch(
    cluster: &Cluster,
    i: usize,
    create: WatchCreateRequest,
    require_leader: bool,
) -> (tonic::Streaming<WatchResponse>, mpsc::Sender<WatchRequest>) {
    let (requests, request_stream) = mpsc::channel(4);
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        })
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(request_stream));
    if require_leader {
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    let mut client = WatchClient::new(cluster.channel(i).await);
    let responses = client.watch(request).await.expect("watch").into_inner();
    (responses, requests)
}

/// A watch of `key` on member `i`, past its created response.
async fn open_key_watch(
    cluster: &Cluster,
    i: usize,
    key: &str,
    require_leader: bool,
) -> (tonic::Streaming<WatchResponse>, mpsc::Sender<WatchRequest>) {
    let create = WatchCreateRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    let (mut responses, requests) = open_watch(cluster, i, create, require_leader).await;
    let created = responses
        .message()
        .await
        .expect("created")
        .expect("created");
    assert!(created.created);
    (responses, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_requires_a_leader_ends_when_its_member_has_none() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let member = (leader + 1) % 3;
    let (mut requiring, _keep) = open_key_watch(&cluster, member, "k", true).await;
    let (mut plain, _keep_plain) = open_key_watch(&cluster, member, "k", false).await;
    for i in 0..3 {
        if i != member {
            cluster.kill(i);
        }
    }
    // Election timeouts of 500 ms here: the stream ends after about two.
    let ended = tokio::time::timeout(Duration::from_secs(15), requiring.message())
        .await
        .expect("the stream requiring a leader did not end");
    let status = ended.expect_err("the stream ends with an error");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    // A stream that did not ask stays open.
    let still = tokio::time::timeout(Duration::from_millis(500), plain.message()).await;
    assert!(still.is_err(), "the plain stream ended: {still:?}");
}

/// Sends raw bytes as the messages of a watch stream, so a test can send
/// what no well-behaved client would.
struct RawCodec;

struct RawEncoder;

struct WatchResponseDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for WatchResponseDecoder {
    type Item = WatchResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<WatchResponse>, tonic::Status> {
        use prost::Message;
        WatchResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = WatchResponse;
    type Encoder = RawEncoder;
    type Decoder = WatchResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> WatchResponseDecoder {
        WatchResponseDecoder
    }
}

fn create_bytes(key: &str) -> Vec<u8> {
    use prost::Message;
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_ends_its_stream_with_a_clear_error_and_the_member_keeps_serving() {
    let cluster = Cluster::start(1, &[]).await;
    cluster.wait_for_leader().await;
    // A valid create, then bytes that are no protobuf message (a field
    // with wire type 7, which does not exist).
    let frames = vec![create_bytes("m"), vec![0xff, 0xff, 0xff, 0x0f]];
    let (requests, request_stream) = mpsc::channel(4);
    for frame in frames {
        requests.send(frame).await.unwrap();
    }
    let mut grpc = tonic::client::Grpc::new(cluster.channel(0).await);
    grpc.ready().await.expect("ready");
    let mut responses = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(request_stream)),
            http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch"),
            RawCodec,
        )
        .await
        .expect("watch")
        .into_inner();
    let created = responses
        .message()
        .await
        .expect("created")
        .expect("created");
    assert!(created.created);
    let ended = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("the stream did not end");
    let status = ended.expect_err("the stream ends with an error");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(
        status.message().contains("decode"),
        "an unclear error: {status:?}"
    );
    drop(requests);

    // The member still watches and writes.
    let (mut watch, _keep) = open_key_watch(&cluster, 0, "after", false).await;
    put(&cluster, 0, "after", "v").await.expect("put");
    let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("no event")
        .expect("event")
        .expect("event");
    assert_eq!(event.events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_opening_100000_watches_on_one_stream_meets_the_limit_and_the_stream_keeps_working(
) {
    let cluster = Cluster::start(1, &["--max-watches-per-stream", "1000"]).await;
    cluster.wait_for_leader().await;
    let (requests, request_stream) = mpsc::channel(256);
    let mut client = WatchClient::new(cluster.channel(0).await);
    let sender = tokio::spawn(async move {
        for n in 0..100_000 {
            let create = WatchCreateRequest {
                key: Bytes::from(format!("many/{}", n % 10)),
                ..Default::default()
            };
            let request = WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            };
            if requests.send(request).await.is_err() {
                return None;
            }
        }
        Some(requests)
    });
    let mut responses = client
        .watch(ReceiverStream::new(request_stream))
        .await
        .expect("watch")
        .into_inner();
    let (mut created, mut refused) = (0, 0);
    while created + refused < 100_000 {
        let response = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("the stream stalled")
            .expect("the stream failed")
            .expect("the stream ended");
        assert!(response.created, "{response:?}");
        if response.canceled {
            assert_eq!(
                response.cancel_reason,
                "too many watches on this stream (the limit is 1000)"
            );
            refused += 1;
        } else {
            created += 1;
        }
    }
    assert_eq!((created, refused), (1000, 99_000));
    let _requests = sender.await.unwrap().expect("every create was sent");
    // The watches that were created still see changes: one put reaches
    // the 100 watchers of its key.
    put(&cluster, 0, "many/3", "v").await.expect("put");
    for _ in 0..100 {
        let response = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("no event")
            .expect("event")
            .expect("event");
        assert_eq!(response.events.len(), 1, "{response:?}");
        assert_eq!(response.events[0].kv.as_ref().unwrap().key, "many/3");
    }
}
