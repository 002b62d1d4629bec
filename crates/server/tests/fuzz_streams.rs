//! Hostile watch and lease streams and random JSON on every gateway path,
//! thrown at one real `keel` member (issue 17). Watch streams: every
//! create is answered once, in order, created or refused with a reason;
//! events only reach live watches, inside their range and filters, in
//! revision order, and none is missed. Lease calls and keep-alive streams
//! get answers or typed gRPC errors that agree with what was granted. The
//! gateway answers every body with an HTTP status and, for an error, its
//! `{"error", "code", "message"}` shape. No call hangs, the member never
//! panics, and every acknowledged write is still there at the end.
//!
//! Deterministic requests: the seed is fixed unless `KEEL_FUZZ_SEED` sets
//! it (and `KEEL_FUZZ_STEPS` the number of steps); a failure prints it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::{b64, send};
use common::Cluster;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::*;
use keel_mvcc::prefix_end;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

/// How long any one call (or an awaited answer) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints how to replay the run when the test fails.
struct SeedGuard(&'static str, u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} failed; replay with KEEL_FUZZ_SEED={}", self.0, self.1);
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn timed<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {CALL_TIMEOUT:?}"))
}

/// Codes a hostile request may be refused with: the client's fault, or a
/// state the request does not fit. Never Unknown or Internal.
fn is_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::PermissionDenied
    )
}

// ---------------------------------------------------------------- watch

/// A watch the model knows the server holds.
#[derive(Debug, Clone)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    /// The first revision it reports.
    from: i64,
    /// The revision of the last event it reported.
    last: i64,
    /// Events seen: (key, revision, is delete).
    seen: Vec<(Vec<u8>, i64, bool)>,
}

impl Watcher {
    fn covers(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key.as_slice()
        } else if self.range_end == [0] {
            key >= self.key.as_slice()
        } else {
            key >= self.key.as_slice() && key < self.range_end.as_slice()
        }
    }

    fn wants(&self, key: &[u8], revision: i64, delete: bool) -> bool {
        revision >= self.from
            && self.covers(key)
            && !(delete && self.no_delete)
            && (delete || !self.no_put)
    }
}

/// One open watch stream and what the model expects of it.
struct WatchStream {
    name: usize,
    requests: mpsc::Sender<WatchRequest>,
    responses: mpsc::UnboundedReceiver<Result<WatchResponse, tonic::Status>>,
    /// Creates sent and not yet answered, in order.
    pending: VecDeque<WatchCreateRequest>,
    live: HashMap<i64, Watcher>,
    /// Ids a cancel was sent for.
    cancel_sent: HashSet<i64>,
    ended: Option<tonic::Status>,
    /// The sentinel's id once created.
    sentinel: Option<i64>,
}

impl WatchStream {
    async fn open(channel: Channel, name: usize) -> WatchStream {
        let (tx, rx) = mpsc::channel(256);
        let mut client = WatchClient::new(channel);
        let mut stream = timed("Watch", client.watch(ReceiverStream::new(rx)))
            .await
            .expect("watch stream")
            .into_inner();
        let (got_tx, got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if got_tx.send(Ok(r)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = got_tx.send(Err(status));
                        return;
                    }
                }
            }
        });
        WatchStream {
            name,
            requests: tx,
            responses: got,
            pending: VecDeque::new(),
            live: HashMap::new(),
            cancel_sent: HashSet::new(),
            ended: None,
            sentinel: None,
        }
    }

    async fn send(&mut self, request: WatchRequest) {
        if let Some(watch_request::RequestUnion::CreateRequest(create)) = &request.request_union {
            self.pending.push_back(create.clone());
        }
        if let Some(watch_request::RequestUnion::CancelRequest(cancel)) = &request.request_union {
            // (Maybe live by the time the server reads it.)
            self.cancel_sent.insert(cancel.watch_id);
        }
        timed("sending a watch request", self.requests.send(request))
            .await
            .expect("the watch stream takes requests");
    }

    /// Checks one response against the model.
    fn check(&mut self, r: WatchResponse, current: i64) {
        let name = self.name;
        let header_rev = r.header.as_ref().map_or(0, |h| h.revision);
        if r.created {
            let create = self.pending.pop_front().unwrap_or_else(|| {
                panic!("stream {name}: a created answer nobody asked for: {r:?}")
            });
            let duplicate = create.watch_id != 0 && self.live.contains_key(&create.watch_id);
            if r.canceled {
                assert_eq!(
                    r.watch_id, -1,
                    "stream {name}: a refusal names a watch: {r:?}"
                );
                assert!(
                    !r.cancel_reason.is_empty(),
                    "stream {name}: a refusal without a reason: {r:?} for {create:?}"
                );
                return;
            }
            assert!(
                !duplicate,
                "stream {name}: a duplicate watch id was accepted: {create:?}"
            );
            if create.watch_id != 0 {
                assert_eq!(r.watch_id, create.watch_id, "stream {name}: {create:?}");
            } else {
                assert!(
                    !self.live.contains_key(&r.watch_id),
                    "stream {name}: a chosen id is in use: {r:?}"
                );
            }
            let from = if create.start_revision == 0 {
                header_rev + 1
            } else {
                create.start_revision
            };
            let filter = |f: watch_create_request::FilterType| create.filters.contains(&(f as i32));
            let w = Watcher {
                key: create.key.to_vec(),
                range_end: create.range_end.to_vec(),
                no_put: filter(watch_create_request::FilterType::Noput),
                no_delete: filter(watch_create_request::FilterType::Nodelete),
                from,
                last: 0,
                seen: Vec::new(),
            };
            if create.key.as_ref() == b"sentinel" {
                self.sentinel = Some(r.watch_id);
            }
            self.live.insert(r.watch_id, w);
            return;
        }
        if r.canceled {
            let Some(w) = self.live.remove(&r.watch_id) else {
                panic!("stream {name}: a cancel of a watch that is not live: {r:?}");
            };
            if !self.cancel_sent.remove(&r.watch_id) {
                // Canceled by the server: only for compacted history.
                // (-1 when nothing was compacted, as etcd reports it: a
                // negative start is below any compaction point.)
                assert!(
                    r.compact_revision != 0 && (w.from <= 0 || w.from < r.compact_revision),
                    "stream {name}: watch {} ({w:?}) canceled unasked: {r:?}",
                    r.watch_id
                );
            }
            return;
        }
        if r.events.is_empty() {
            // A progress report.
            assert!(
                header_rev <= current,
                "stream {name}: progress from the future: {r:?}"
            );
            return;
        }
        let Some(w) = self.live.get_mut(&r.watch_id) else {
            panic!("stream {name}: events for a watch that is not live: {r:?}");
        };
        for e in &r.events {
            let kv = e.kv.as_ref().expect("an event's kv");
            let delete = e.r#type == keel_api::mvccpb::event::EventType::Delete as i32;
            assert!(
                w.wants(&kv.key, kv.mod_revision, delete),
                "stream {name}: watch {} ({w:?}) got an event it does not watch: {e:?}",
                r.watch_id
            );
            assert!(
                kv.mod_revision >= w.last,
                "stream {name}: watch {} went back in revisions: {e:?}",
                r.watch_id
            );
            w.last = kv.mod_revision;
            w.seen.push((kv.key.to_vec(), kv.mod_revision, delete));
        }
    }

    /// Checks every response received so far.
    fn drain(&mut self, current: i64) {
        while let Ok(r) = self.responses.try_recv() {
            match r {
                Ok(r) => self.check(r, current),
                Err(status) => {
                    panic!("stream {}: the watch stream ended: {status:?}", self.name)
                }
            }
        }
    }

    /// Waits until `done` holds of the stream, checking what arrives.
    async fn wait_for(&mut self, what: &str, current: i64, done: impl Fn(&WatchStream) -> bool) {
        let deadline = Instant::now() + CALL_TIMEOUT;
        self.drain(current);
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.responses.recv()).await {
                Ok(Some(Ok(r))) => self.check(r, current),
                Ok(Some(Err(status))) => self.ended = Some(status),
                Ok(None) => panic!("stream {}: ended while waiting for {what}", self.name),
                Err(_) => panic!(
                    "stream {}: {what} did not come within {CALL_TIMEOUT:?}; live {:?}, pending {:?}",
                    self.name, self.live, self.pending
                ),
            }
            if let Some(status) = &self.ended {
                panic!(
                    "stream {}: ended while waiting for {what}: {status:?}",
                    self.name
                );
            }
        }
    }
}

/// Draws hostile watch requests and writes.
struct WatchGen {
    rng: StdRng,
    keys: Vec<&'static [u8]>,
}

impl WatchGen {
    fn key(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0 => Vec::new(),
            1 => vec![0],
            2 => {
                let mut k = vec![0u8; self.rng.random_range(1..6)];
                self.rng.fill(&mut k[..]);
                k
            }
            _ => self.keys[self.rng.random_range(0..self.keys.len())].to_vec(),
        }
    }

    fn create(&mut self, stream: &WatchStream, current: i64, compacted: i64) -> WatchRequest {
        let key = self.key();
        let range_end = match self.rng.random_range(0..7) {
            0 | 1 => Vec::new(),
            2 => vec![0],
            3 => prefix_end(&key).to_vec(),
            4 => b"w/c".to_vec(),
            5 => {
                // Below the key: an empty range.
                let mut k = key.clone();
                k.pop();
                k
            }
            _ => self.key(),
        };
        let start_revision = match self.rng.random_range(0..12) {
            0..=3 => 0,
            4 => 1,
            5 => current,
            6 => current + 1,
            7 => -self.rng.random_range(1..1000),
            8 => i64::MAX,
            9 => i64::MIN,
            10 => (compacted - 1).max(1),
            _ => self.rng.random_range(1..current + 3),
        };
        let live: Vec<i64> = stream.live.keys().copied().collect();
        let watch_id = match self.rng.random_range(0..10) {
            0..=4 => 0,
            5 if !live.is_empty() => live[self.rng.random_range(0..live.len())],
            6 => -1,
            7 => i64::MAX,
            8 => -self.rng.random_range(2..i64::MAX),
            _ => self.rng.random_range(1..50),
        };
        let filters = (0..self.rng.random_range(0..3))
            .map(|_| [0, 1, 2, -1, 99][self.rng.random_range(0..5)])
            .collect();
        WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.into(),
                    range_end: range_end.into(),
                    start_revision,
                    progress_notify: self.rng.random_bool(0.2),
                    filters,
                    prev_kv: self.rng.random_bool(0.3),
                    watch_id,
                    fragment: self.rng.random_bool(0.3),
                },
            )),
        }
    }

    fn cancel(&mut self, stream: &WatchStream) -> WatchRequest {
        let live: Vec<i64> = stream.live.keys().copied().collect();
        let watch_id = match self.rng.random_range(0..6) {
            0 | 1 if !live.is_empty() => live[self.rng.random_range(0..live.len())],
            2 => -1,
            3 => i64::MIN,
            4 => 0,
            _ => self.rng.random_range(100..10_000),
        };
        WatchRequest {
            request_union: Some(watch_request::RequestUnion::CancelRequest(
                WatchCancelRequest { watch_id },
            )),
        }
    }
}

/// The writes of the run: (key, revision, is delete).
type Writes = Vec<(Vec<u8>, i64, bool)>;

async fn put(kv: &mut KvClient<Channel>, key: &[u8], value: Vec<u8>) -> i64 {
    timed(
        "Put",
        kv.put(PutRequest {
            key: Bytes::copy_from_slice(key),
            value: value.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_watch_and_lease_streams_get_typed_answers_and_miss_nothing() {
    let seed = env_u64("KEEL_FUZZ_SEED", 0x5754_5245);
    let steps = env_u64("KEEL_FUZZ_STEPS", 600);
    let _guard = SeedGuard("fuzz_streams (watch, lease)", seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(1, &[]).await;
    let channel = cluster.channel(0).await;
    let mut kv = KvClient::new(channel.clone());
    let mut gen = WatchGen {
        rng: StdRng::seed_from_u64(seed),
        keys: vec![b"w/a", b"w/b", b"w/", b"w/c", b"x", b"sentinel"],
    };
    let mut streams = Vec::new();
    for name in 0..3 {
        streams.push(WatchStream::open(channel.clone(), name).await);
    }
    let mut writes: Writes = Vec::new();
    let mut current = put(&mut kv, b"w/a", b"first".to_vec()).await;
    writes.push((b"w/a".to_vec(), current, false));
    let mut compacted = 0;
    for _ in 0..steps {
        let s = gen.rng.random_range(0..streams.len());
        match gen.rng.random_range(0..20) {
            0..=5 => {
                let request = gen.create(&streams[s], current, compacted);
                streams[s].send(request).await;
            }
            6 | 7 => {
                let request = gen.cancel(&streams[s]);
                streams[s].send(request).await;
            }
            8 => {
                let request = WatchRequest {
                    request_union: Some(watch_request::RequestUnion::ProgressRequest(
                        WatchProgressRequest {},
                    )),
                };
                streams[s].send(request).await;
            }
            9 => streams[s].send(WatchRequest::default()).await,
            10..=15 => {
                let key = gen.keys[gen.rng.random_range(0..gen.keys.len() - 1)];
                // Sometimes large enough to be fragmented.
                let size = if gen.rng.random_bool(0.1) { 200_000 } else { 8 };
                current = put(&mut kv, key, vec![b'v'; size]).await;
                writes.push((key.to_vec(), current, false));
            }
            16 | 17 => {
                let key = gen.keys[gen.rng.random_range(0..gen.keys.len() - 1)];
                let range_end = if gen.rng.random_bool(0.5) {
                    prefix_end(key)
                } else {
                    Bytes::new()
                };
                let deleted = timed(
                    "DeleteRange",
                    kv.delete_range(DeleteRangeRequest {
                        key: Bytes::copy_from_slice(key),
                        range_end,
                        prev_kv: true,
                    }),
                )
                .await
                .expect("delete")
                .into_inner();
                if deleted.deleted > 0 {
                    current = deleted.header.expect("header").revision;
                    for kv in deleted.prev_kvs {
                        writes.push((kv.key.to_vec(), current, true));
                    }
                }
            }
            18 if current > compacted + 2 => {
                let revision = gen.rng.random_range(compacted + 1..current);
                timed(
                    "Compact",
                    kv.compact(CompactionRequest {
                        revision,
                        physical: gen.rng.random_bool(0.5),
                    }),
                )
                .await
                .expect("compact");
                compacted = revision;
            }
            _ => {
                let s2 = gen.rng.random_range(0..streams.len());
                streams[s2].drain(current);
            }
        }
        streams[s].drain(current);
    }
    // Every stream still answers in order: a sentinel watch is created
    // after every request sent, and sees a write made after it.
    for stream in &mut streams {
        stream
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: Bytes::from_static(b"sentinel"),
                        ..Default::default()
                    },
                )),
            })
            .await;
        stream
            .wait_for("the sentinel's creation", current, |s| {
                s.pending.is_empty() && s.sentinel.is_some()
            })
            .await;
    }
    current = put(&mut kv, b"sentinel", b"s".to_vec()).await;
    writes.push((b"sentinel".to_vec(), current, false));
    // Every live watch sees every write it watches, none twice.
    for stream in &mut streams {
        let expected = |s: &WatchStream| -> Vec<(i64, Writes)> {
            s.live
                .iter()
                .map(|(id, w)| {
                    let want = writes
                        .iter()
                        .filter(|(k, r, d)| w.wants(k, *r, *d))
                        .cloned()
                        .collect();
                    (*id, want)
                })
                .collect()
        };
        let caught_up = |s: &WatchStream| {
            expected(s)
                .iter()
                .all(|(id, want)| s.live[id].seen.len() >= want.len())
        };
        stream
            .wait_for("every watched write", current, caught_up)
            .await;
        for (id, want) in expected(stream) {
            assert_eq!(
                stream.live[&id].seen, want,
                "stream {}: watch {id} ({:?})",
                stream.name, stream.live[&id]
            );
        }
    }
    let watch_took = started.elapsed();
    let watches: usize = streams.iter().map(|s| s.live.len()).sum();
    let events: usize = streams
        .iter()
        .flat_map(|s| s.live.values())
        .map(|w| w.seen.len())
        .sum();
    assert!(
        watches > 3 && events > 10,
        "a vacuous run: {watches} watches, {events} events"
    );

    // ---------------------------------------------------------------- leases
    let mut leases = LeaseClient::new(channel.clone());
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4c45_4153);
    // Granted leases with a long TTL: (id → granted TTL).
    let mut live: BTreeMap<i64, i64> = BTreeMap::new();
    let mut gone: HashSet<i64> = HashSet::new();
    let mut short: HashSet<i64> = HashSet::new();
    let (ka_tx, ka_rx) = mpsc::channel::<LeaseKeepAliveRequest>(64);
    let mut keep_alives = timed(
        "LeaseKeepAlive",
        leases.lease_keep_alive(ReceiverStream::new(ka_rx)),
    )
    .await
    .expect("keep-alive stream")
    .into_inner();
    let pick = |rng: &mut StdRng, live: &BTreeMap<i64, i64>| -> i64 {
        let ids: Vec<i64> = live.keys().copied().collect();
        match rng.random_range(0..8) {
            0..=2 if !ids.is_empty() => ids[rng.random_range(0..ids.len())],
            3 => 0,
            4 => -rng.random_range(1..i64::MAX),
            5 => i64::MIN,
            6 => i64::MAX,
            _ => rng.random_range(1..1000),
        }
    };
    for _ in 0..steps / 2 {
        match rng.random_range(0..6) {
            0 | 1 => {
                let ttl = match rng.random_range(0..8) {
                    0 => -rng.random_range(1..1000),
                    1 => 0,
                    2 => 1,
                    3 => i64::MAX,
                    4 => 9_000_000_001,
                    5 => i64::MIN,
                    _ => rng.random_range(60..100_000),
                };
                let id = pick(&mut rng, &live);
                let answer = timed(
                    "LeaseGrant",
                    leases.lease_grant(LeaseGrantRequest { ttl, id }),
                )
                .await;
                match answer {
                    Ok(granted) => {
                        let granted = granted.into_inner();
                        assert!(granted.id > 0, "grant {ttl} {id}: {granted:?}");
                        assert!(granted.ttl > 0, "grant {ttl} {id}: {granted:?}");
                        if id != 0 {
                            assert_eq!(granted.id, id, "grant {ttl} {id}");
                        }
                        assert!(
                            !live.contains_key(&granted.id),
                            "grant {ttl} {id}: the id of a live lease granted again"
                        );
                        assert!(
                            ttl <= 9_000_000_000,
                            "grant {ttl}: a TTL over etcd's maximum"
                        );
                        if granted.ttl >= 60 {
                            live.insert(granted.id, granted.ttl);
                        } else {
                            short.insert(granted.id);
                        }
                        gone.remove(&granted.id);
                    }
                    Err(status) => {
                        assert!(is_refusal(status.code()), "grant {ttl} {id}: {status:?}");
                        assert!(
                            live.contains_key(&id)
                                || short.contains(&id)
                                || id < 0
                                || ttl <= 0
                                || ttl > 9_000_000_000,
                            "grant {ttl} {id} refused: {status:?}"
                        );
                    }
                }
            }
            2 => {
                let id = pick(&mut rng, &live);
                let answer = timed(
                    "LeaseRevoke",
                    leases.lease_revoke(LeaseRevokeRequest { id }),
                )
                .await;
                match answer {
                    Ok(_) => {
                        assert!(
                            live.remove(&id).is_some() || short.remove(&id),
                            "revoked {id}, never granted"
                        );
                        gone.insert(id);
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::NotFound, "revoke {id}: {status:?}");
                        assert!(!live.contains_key(&id), "revoke {id}: {status:?}");
                    }
                }
            }
            3 => {
                let id = pick(&mut rng, &live);
                let keys = rng.random_bool(0.5);
                let answer = timed(
                    "LeaseTimeToLive",
                    leases.lease_time_to_live(LeaseTimeToLiveRequest { id, keys }),
                )
                .await
                .unwrap_or_else(|s| panic!("time to live {id}: {s:?}"))
                .into_inner();
                match live.get(&id) {
                    Some(&granted) => {
                        assert_eq!(answer.granted_ttl, granted, "{answer:?}");
                        assert!(answer.ttl > 0 && answer.ttl <= granted, "{answer:?}");
                    }
                    None if !short.contains(&id) => {
                        assert_eq!(answer.ttl, -1, "time to live of unknown {id}: {answer:?}")
                    }
                    None => {}
                }
            }
            4 => {
                let listed: HashSet<i64> =
                    timed("LeaseLeases", leases.lease_leases(LeaseLeasesRequest {}))
                        .await
                        .expect("leases")
                        .into_inner()
                        .leases
                        .into_iter()
                        .map(|l| l.id)
                        .collect();
                for id in live.keys() {
                    assert!(listed.contains(id), "lease {id} not listed: {listed:?}");
                }
                for id in &listed {
                    assert!(
                        live.contains_key(id) || short.contains(id),
                        "lease {id} listed, never granted or revoked"
                    );
                }
            }
            _ => {
                // A burst of keep-alives on one stream: one answer each.
                let ids: Vec<i64> = (0..rng.random_range(1..6))
                    .map(|_| pick(&mut rng, &live))
                    .collect();
                for &id in &ids {
                    timed(
                        "sending a keep-alive",
                        ka_tx.send(LeaseKeepAliveRequest { id }),
                    )
                    .await
                    .expect("the keep-alive stream takes requests");
                }
                let mut answers = Vec::new();
                for _ in &ids {
                    let answer = timed("a keep-alive answer", keep_alives.message())
                        .await
                        .unwrap_or_else(|s| panic!("keep-alive {ids:?}: the stream failed: {s:?}"))
                        .unwrap_or_else(|| panic!("keep-alive {ids:?}: the stream ended"));
                    answers.push(answer);
                }
                let mut asked = ids.clone();
                asked.sort_unstable();
                let mut answered: Vec<i64> = answers.iter().map(|a| a.id).collect();
                answered.sort_unstable();
                assert_eq!(asked, answered, "keep-alive answers: {answers:?}");
                for a in &answers {
                    if live.contains_key(&a.id) {
                        assert!(a.ttl > 0, "keep-alive of live {}: {a:?}", a.id);
                    } else if !short.contains(&a.id) {
                        assert_eq!(a.ttl, 0, "keep-alive of unknown {}: {a:?}", a.id);
                    }
                }
            }
        }
    }
    drop(ka_tx);
    let lease_took = started.elapsed() - watch_took;

    // The member still serves, and everything written is there.
    let revision = put(&mut kv, b"after", b"kept".to_vec()).await;
    let read = timed(
        "Range",
        kv.range(RangeRequest {
            key: Bytes::from_static(b"after"),
            ..Default::default()
        }),
    )
    .await
    .expect("range")
    .into_inner();
    assert_eq!(read.kvs.len(), 1);
    assert_eq!(
        (read.kvs[0].value.as_ref(), read.kvs[0].mod_revision),
        (&b"kept"[..], revision)
    );
    let mut last: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for (key, _, delete) in &writes {
        last.insert(key.clone(), *delete);
    }
    for (key, deleted) in last {
        let read = timed(
            "Range",
            kv.range(RangeRequest {
                key: key.clone().into(),
                ..Default::default()
            }),
        )
        .await
        .expect("range")
        .into_inner();
        assert_eq!(read.kvs.is_empty(), deleted, "key {key:?}");
    }
    cluster.assert_healthy(0);
    eprintln!(
        "fuzz_streams: {} writes, {watches} live watches saw {events} events; \
         watch {watch_took:?}, leases {lease_took:?}, total {:?}",
        writes.len(),
        started.elapsed()
    );
}

// -------------------------------------------------------------- gateway

/// Every path of the gateway, and whether it streams (and then whether
/// the stream ends by itself once the body does).
const PATHS: &[(&str, Stream)] = &[
    ("kv/range", Stream::No),
    ("kv/put", Stream::No),
    ("kv/deleterange", Stream::No),
    ("kv/txn", Stream::No),
    ("kv/compaction", Stream::No),
    ("lease/grant", Stream::No),
    ("lease/revoke", Stream::No),
    ("kv/lease/revoke", Stream::No),
    ("lease/timetolive", Stream::No),
    ("kv/lease/timetolive", Stream::No),
    ("lease/leases", Stream::No),
    ("kv/lease/leases", Stream::No),
    ("lease/keepalive", Stream::Ends),
    ("cluster/member/list", Stream::No),
    ("cluster/member/add", Stream::No),
    ("cluster/member/remove", Stream::No),
    ("cluster/member/update", Stream::No),
    ("cluster/member/promote", Stream::No),
    ("maintenance/status", Stream::No),
    ("maintenance/alarm", Stream::No),
    ("maintenance/defragment", Stream::No),
    ("maintenance/hash", Stream::No),
    ("maintenance/snapshot", Stream::Ends),
    ("maintenance/transfer-leadership", Stream::No),
    ("watch", Stream::Open),
    ("auth/status", Stream::No),
    ("auth/enable", Stream::No),
    ("auth/authenticate", Stream::No),
    ("auth/user/add", Stream::No),
    ("auth/user/get", Stream::No),
    ("auth/user/list", Stream::No),
    ("auth/user/delete", Stream::No),
    ("auth/user/changepw", Stream::No),
    ("auth/user/grant", Stream::No),
    ("auth/user/revoke", Stream::No),
    ("auth/role/add", Stream::No),
    ("auth/role/get", Stream::No),
    ("auth/role/list", Stream::No),
    ("auth/role/delete", Stream::No),
    ("auth/role/grant", Stream::No),
    ("auth/role/revoke", Stream::No),
    ("auth/disable", Stream::No),
    ("lock/unlock", Stream::No),
    ("election/proclaim", Stream::No),
    ("election/leader", Stream::No),
    ("election/resign", Stream::No),
    ("election/observe", Stream::Open),
    ("nothing/here", Stream::No),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stream {
    No,
    /// Answers end after the body's requests are answered.
    Ends,
    /// Stays open (a watch, an observation).
    Open,
}

/// Field names the request messages use, in either spelling.
const FIELDS: &[&str] = &[
    "key",
    "range_end",
    "rangeEnd",
    "value",
    "lease",
    "prev_kv",
    "limit",
    "revision",
    "sort_order",
    "sortOrder",
    "sort_target",
    "serializable",
    "keys_only",
    "count_only",
    "min_mod_revision",
    "max_create_revision",
    "ignore_value",
    "ignore_lease",
    "compare",
    "success",
    "failure",
    "physical",
    "ID",
    "id",
    "TTL",
    "ttl",
    "keys",
    "peerURLs",
    "peer_ur_ls",
    "isLearner",
    "is_learner",
    "action",
    "memberID",
    "member_id",
    "alarm",
    "targetID",
    "name",
    "password",
    "options",
    "user",
    "role",
    "perm",
    "perm_type",
    "create_request",
    "cancel_request",
    "progress_request",
    "start_revision",
    "filters",
    "watch_id",
    "fragment",
    "progress_notify",
    "result",
    "target",
    "request_put",
    "requestRange",
    "leader",
    "request_txn",
];

/// The fields of each path's request and their JSON types: `b` bytes
/// (base64), `i` a 64-bit integer, `n` a 32-bit one, `t` a bool, `s` a
/// string, `e` an enum, `l` a list of strings, `o` a nested message.
const TYPED: &[(&str, &[(&str, char)])] = &[
    (
        "kv/range",
        &[
            ("key", 'b'),
            ("range_end", 'b'),
            ("limit", 'i'),
            ("revision", 'i'),
            ("sort_order", 'e'),
            ("sort_target", 'e'),
            ("serializable", 't'),
            ("keys_only", 't'),
            ("count_only", 't'),
            ("min_mod_revision", 'i'),
            ("max_mod_revision", 'i'),
            ("min_create_revision", 'i'),
            ("max_create_revision", 'i'),
        ],
    ),
    (
        "kv/put",
        &[
            ("key", 'b'),
            ("value", 'b'),
            ("lease", 'i'),
            ("prev_kv", 't'),
            ("ignore_value", 't'),
            ("ignore_lease", 't'),
        ],
    ),
    (
        "kv/deleterange",
        &[("key", 'b'), ("range_end", 'b'), ("prev_kv", 't')],
    ),
    (
        "kv/txn",
        &[("compare", 'o'), ("success", 'o'), ("failure", 'o')],
    ),
    ("kv/compaction", &[("revision", 'i'), ("physical", 't')]),
    ("lease/grant", &[("TTL", 'i'), ("ID", 'i')]),
    ("lease/revoke", &[("ID", 'i')]),
    ("lease/timetolive", &[("ID", 'i'), ("keys", 't')]),
    ("lease/keepalive", &[("ID", 'i')]),
    (
        "cluster/member/add",
        &[("peerURLs", 'l'), ("isLearner", 't')],
    ),
    ("cluster/member/remove", &[("ID", 'i')]),
    ("cluster/member/update", &[("ID", 'i'), ("peerURLs", 'l')]),
    ("cluster/member/promote", &[("ID", 'i')]),
    (
        "maintenance/alarm",
        &[("action", 'e'), ("memberID", 'i'), ("alarm", 'e')],
    ),
    ("maintenance/transfer-leadership", &[("targetID", 'i')]),
    (
        "watch",
        &[
            ("create_request", 'o'),
            ("cancel_request", 'o'),
            ("progress_request", 'o'),
        ],
    ),
    ("auth/authenticate", &[("name", 's'), ("password", 's')]),
    (
        "auth/user/add",
        &[("name", 's'), ("password", 's'), ("options", 'o')],
    ),
    ("auth/user/grant", &[("user", 's'), ("role", 's')]),
    ("auth/role/grant", &[("name", 's'), ("perm", 'o')]),
    (
        "auth/role/revoke",
        &[("role", 's'), ("key", 'b'), ("range_end", 'b')],
    ),
    ("election/proclaim", &[("leader", 'o'), ("value", 'b')]),
    ("election/resign", &[("leader", 'o')]),
    ("election/leader", &[("name", 'b')]),
    ("election/observe", &[("name", 'b')]),
    ("lock/unlock", &[("key", 'b')]),
];

/// Draws hostile JSON bodies.
struct JsonGen {
    rng: StdRng,
}

impl JsonGen {
    /// A value of JSON type `kind`, hostile within the type.
    fn typed(&mut self, kind: char) -> Value {
        let r = self.rng.random_range(0..8);
        match kind {
            'b' => match r {
                0 => json!(""),
                1 => json!("AA=="),
                2 => json!(b64(&"k".repeat(self.rng.random_range(1..2000)))),
                3 => json!("!!"),
                _ => json!(b64(&format!("w/{}", self.rng.random_range(0..20)))),
            },
            'i' => match r {
                0 => json!("9223372036854775807"),
                1 => json!(i64::MIN.to_string()),
                2 => json!(-1),
                3 => json!(0),
                4 => json!("99999999999"),
                _ => json!(self.rng.random_range(1i64..60).to_string()),
            },
            't' => json!(r % 2 == 0),
            's' => match r {
                0 => json!(""),
                1 => json!("a\u{0}b"),
                2 => json!("x".repeat(self.rng.random_range(1..500))),
                _ => json!(format!("u{}", self.rng.random_range(0..5))),
            },
            'e' => match r {
                0 => json!(-1),
                1 => json!(99),
                2 => json!("NONE"),
                3 => json!("DESCEND"),
                4 => json!("GET"),
                5 => json!("ACTIVATE"),
                _ => json!(self.rng.random_range(0..4)),
            },
            'l' => match r {
                0 => json!([]),
                1 => json!(["http://127.0.0.1:9"]),
                2 => json!(["not a url", ""]),
                _ => json!([format!(
                    "http://10.0.0.{}:2380",
                    self.rng.random_range(0..255)
                )]),
            },
            _ => self.object(2),
        }
    }

    /// A body of the right shape for `path`, with hostile values.
    fn typed_body(&mut self, path: &str) -> Vec<u8> {
        let Some((_, fields)) = TYPED.iter().find(|(p, _)| *p == path) else {
            return self.object(0).to_string().into_bytes();
        };
        let mut map = serde_json::Map::new();
        for (name, kind) in fields.iter() {
            if self.rng.random_bool(0.4) {
                let v = self.typed(*kind);
                map.insert(name.to_string(), v);
            }
        }
        Value::Object(map).to_string().into_bytes()
    }

    fn scalar(&mut self) -> Value {
        match self.rng.random_range(0..16) {
            0 => json!(null),
            1 => json!(true),
            2 => json!(-1),
            3 => json!(0),
            4 => json!(i64::MAX),
            5 => json!(u64::MAX),
            6 => json!("18446744073709551616"),
            7 => json!("-9223372036854775809"),
            8 => json!(1.5e300),
            9 => json!("!!not base64!!"),
            10 => json!(b64("w/k")),
            11 => json!(""),
            12 => json!("AA=="),
            13 => json!("PUT"),
            14 => json!("BOGUS_ENUM"),
            _ => json!(self.rng.random_range(-5i64..100)),
        }
    }

    fn value(&mut self, depth: usize) -> Value {
        match self.rng.random_range(0..10) {
            0..=5 => self.scalar(),
            6 | 7 if depth < 4 => self.object(depth + 1),
            8 if depth < 4 => {
                let n = self.rng.random_range(0..4);
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ => self.scalar(),
        }
    }

    fn object(&mut self, depth: usize) -> Value {
        let mut map = serde_json::Map::new();
        for _ in 0..self.rng.random_range(0..5) {
            let name = if self.rng.random_bool(0.9) {
                FIELDS[self.rng.random_range(0..FIELDS.len())].to_string()
            } else {
                "bogus_field".to_string()
            };
            let v = self.value(depth);
            map.insert(name, v);
        }
        Value::Object(map)
    }

    /// Bytes of a body: JSON of the right shape or wrong, or not JSON.
    fn body(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => Vec::new(),
            1 => b"  \n ".to_vec(),
            2 => {
                let mut b = vec![0u8; self.rng.random_range(1..64)];
                self.rng.fill(&mut b[..]);
                b
            }
            3 => {
                let mut s = self.object(0).to_string();
                s.truncate(self.rng.random_range(0..s.len().max(1)));
                s.into_bytes()
            }
            4 => {
                // Nested deeper than decoders recurse.
                let depth = self.rng.random_range(100..300);
                let mut s = "[".repeat(depth);
                s.push_str(&"]".repeat(depth));
                format!("{{\"key\":{s}}}").into_bytes()
            }
            5 => self.scalar().to_string().into_bytes(),
            6 => {
                // Two messages (a stream's way), the second bad.
                format!("{} {}", self.object(0), self.value(0)).into_bytes()
            }
            7 => b"{\"key\":\"dw==\",\"key\":\"eA==\"}".to_vec(),
            8 => format!(
                "{{\"key\":\"{}\"}}",
                "A".repeat(self.rng.random_range(1..3000))
            )
            .into_bytes(),
            _ => self.object(0).to_string().into_bytes(),
        }
    }
}

/// Checks the gateway's error shape.
fn error_shape(path: &str, status: u16, text: &str) -> i64 {
    let answer: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{path}: a {status} that is not JSON ({e}): {text:?}"));
    assert!(answer["error"].is_string(), "{path} {status}: {answer}");
    assert!(answer["message"].is_string(), "{path} {status}: {answer}");
    assert_eq!(answer["error"], answer["message"], "{path} {status}");
    let code = answer["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("{path} {status}: no code: {answer}"));
    assert!((1..=16).contains(&code), "{path} {status}: {answer}");
    code
}

/// POSTs `body` to `path` and checks the answer's form; returns the status
/// and, for a unary call, the body.
async fn gateway_call(addr: &str, path: &str, kind: Stream, body: &[u8]) -> (u16, String) {
    let what = format!(
        "{path} {:?}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    let (status, mut reader) = timed(&what, send(addr, "POST", path, body)).await;
    // etcd's election service returns plain errors (gRPC Unknown, HTTP
    // 500 through the gateway) for a missing leader key or no leader, and
    // keel gives the same: the only 500s allowed, checked below.
    let election = path.contains("/election/");
    let allowed = [
        200, 400, 401, 403, 404, 405, 408, 409, 412, 413, 429, 501, 503,
    ];
    assert!(
        allowed.contains(&status) || (election && status == 500),
        "{what}: HTTP {status}"
    );
    if status != 200 || kind == Stream::No {
        let mut text = String::new();
        timed(&what, reader.read_to_string(&mut text))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if status == 200 {
            let answer: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: 200 but not JSON ({e}): {text:?}"));
            assert!(answer.is_object(), "{what}: {answer}");
        } else if status != 405 {
            let code = error_shape(&what, status, &text);
            assert!(status != 500 || code == 2, "{what}: {text}");
        }
        return (status, text);
    }
    // A stream: each line a result or a last error.
    let idle = match kind {
        Stream::Ends => CALL_TIMEOUT,
        _ => Duration::from_millis(150),
    };
    loop {
        let mut line = String::new();
        match tokio::time::timeout(idle, reader.read_line(&mut line)).await {
            Err(_) if kind == Stream::Open => break,
            Err(_) => panic!("{what}: the stream did not end within {idle:?}"),
            Ok(Err(e)) => panic!("{what}: {e}"),
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{what}: a line that is not JSON ({e}): {line:?}"));
                if v.get("error").is_some() {
                    let e = &v["error"];
                    assert!(e["grpc_code"].is_number(), "{what}: {v}");
                    assert!(e["http_code"].is_number(), "{what}: {v}");
                    assert!(e["message"].is_string(), "{what}: {v}");
                    if !election {
                        assert_ne!(e["grpc_code"], 2, "{what}: Unknown: {v}");
                    }
                    assert_ne!(e["grpc_code"], 13, "{what}: Internal: {v}");
                } else {
                    assert!(v["result"].is_object(), "{what}: {v}");
                }
            }
        }
    }
    (status, String::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_answers_hostile_json_on_every_path_in_its_shape() {
    let seed = env_u64("KEEL_FUZZ_SEED", 0x4a53_4f4e);
    let steps = env_u64("KEEL_FUZZ_STEPS", 600);
    let _guard = SeedGuard("fuzz_streams (gateway)", seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(1, &["--max-request-bytes", "65536"]).await;
    let addr = cluster.members[0].spec.client.clone();
    let mut gen = JsonGen {
        rng: StdRng::seed_from_u64(seed),
    };
    // Acknowledged puts: (key, value, revision).
    let mut acked = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    // Every path once with an empty body and with JSON that is not an
    // object, then random bodies on random paths.
    let mut calls: Vec<(usize, Vec<u8>)> = Vec::new();
    for i in 0..PATHS.len() {
        calls.push((i, Vec::new()));
        calls.push((i, b"[1,2]".to_vec()));
        calls.push((i, b"{\"key\":".to_vec()));
    }
    for _ in 0..steps {
        let i = gen.rng.random_range(0..PATHS.len());
        let body = if gen.rng.random_bool(0.5) {
            gen.typed_body(PATHS[i].0)
        } else {
            gen.body()
        };
        calls.push((i, body));
    }
    for (n, (i, mut body)) in calls.into_iter().enumerate() {
        let (path, kind) = PATHS[i];
        // A compaction of history would leave acknowledged revisions
        // unreadable: only hostile revisions (or the first ones) here.
        if path == "kv/compaction" {
            if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&body) {
                let revision = map.get("revision").and_then(|r| match r {
                    Value::String(s) => s.parse::<i64>().ok(),
                    r => r.as_i64(),
                });
                if let Some(r) = revision {
                    // (Past any revision this run reaches: refused.)
                    if r > 2 && r < 1_000_000 {
                        map.insert("revision".into(), json!(2));
                        body = Value::Object(map).to_string().into_bytes();
                    }
                }
            }
        }
        // Streams take fewer calls: an open one is read for a while.
        if kind == Stream::Open && n % 4 != 0 && n > 3 * PATHS.len() {
            continue;
        }
        let prefix = if n % 5 == 0 { "/v3beta/" } else { "/v3/" };
        let (status, _) = gateway_call(&addr, &format!("{prefix}{path}"), kind, &body).await;
        *statuses.entry(status).or_default() += 1;
        if n % 10 == 0 {
            let key = format!("ack/{n}");
            let value = format!("v{n}");
            let put = json!({"key": b64(&key), "value": b64(&value)}).to_string();
            let (status, text) =
                gateway_call(&addr, "/v3/kv/put", Stream::No, put.as_bytes()).await;
            if status == 200 {
                let answer: Value = serde_json::from_str(&text).unwrap();
                let revision: i64 = answer["header"]["revision"]
                    .as_str()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_else(|| panic!("put {key}: {answer}"));
                acked.push((key, value, revision));
            }
        }
    }
    // Clear any alarm the fuzz raised, then check the member.
    let (_, text) = gateway_call(&addr, "/v3/maintenance/alarm", Stream::No, b"{}").await;
    let alarms: Value = serde_json::from_str(&text).unwrap();
    for alarm in alarms["alarms"].as_array().cloned().unwrap_or_default() {
        // (A zero member id is left out of the answer; and the gateway,
        // with pbjson, takes no `null` for a number.)
        let member = alarm.get("memberID").cloned().unwrap_or(json!("0"));
        let off = json!({"action": "DEACTIVATE", "memberID": member, "alarm": alarm["alarm"]});
        let (status, text) = gateway_call(
            &addr,
            "/v3/maintenance/alarm",
            Stream::No,
            off.to_string().as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "disarming {alarm}: {text}");
    }
    let put = json!({"key": b64("after"), "value": b64("kept")}).to_string();
    let (status, text) = gateway_call(&addr, "/v3/kv/put", Stream::No, put.as_bytes()).await;
    assert_eq!(status, 200, "a put after the fuzz: {text}");
    let get = json!({"key": b64("after")}).to_string();
    let (status, text) = gateway_call(&addr, "/v3/kv/range", Stream::No, get.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["kvs"][0]["value"], b64("kept"), "{answer}");
    assert!(
        acked.len() > steps as usize / 20,
        "too few puts acknowledged: {}",
        acked.len()
    );
    for (key, value, revision) in &acked {
        let get = json!({"key": b64(key), "revision": revision}).to_string();
        let (status, text) = gateway_call(&addr, "/v3/kv/range", Stream::No, get.as_bytes()).await;
        assert_eq!(status, 200, "{key} at {revision}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            answer["kvs"][0]["value"],
            b64(value),
            "{key} at {revision}: {answer}"
        );
    }
    cluster.assert_healthy(0);
    eprintln!(
        "fuzz_streams gateway: {} acknowledged puts, statuses {statuses:?}, took {:?}",
        acked.len(),
        started.elapsed()
    );
}
