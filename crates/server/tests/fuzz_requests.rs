//! Random but well-formed etcd requests, raw malformed gRPC frames and a
//! peer speaking nonsense, thrown at one real `keel` member: every request
//! gets an answer or a clear gRPC error, the member keeps serving after each
//! one, never panics, and loses nothing it acknowledged.
//!
//! Deterministic: the seed is fixed unless `KEEL_FUZZ_SEED` sets it (and
//! `KEEL_FUZZ_STEPS` the number of requests); a failure prints the seed.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, MaintenanceClient};
use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::*;
use keel_api::keelpb::forward_client::ForwardClient;
use keel_api::keelpb::{answer, command::Op, Command as CommandPb, Proposals};
use keel_mvcc::prefix_end;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

/// The request size cap the member runs with (small, so that requests on
/// both sides of it are cheap).
const MAX_REQUEST_BYTES: usize = 128 * 1024;
/// The transaction size cap the member runs with.
const MAX_TXN_OPS: usize = 16;
/// How long any one call may take before the member counts as wedged.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Prints how to replay the run when the test fails.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fuzz_requests failed; replay with KEEL_FUZZ_SEED={}",
                self.0
            );
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request of the run.
#[derive(Debug, Clone)]
enum Req {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    Status,
    Hash,
    HashKv(HashKvRequest),
    Alarm(AlarmRequest),
    MoveLeader(MoveLeaderRequest),
    Defragment,
    MemberList(MemberListRequest),
    MemberAdd(MemberAddRequest),
    MemberUpdate(MemberUpdateRequest),
    MemberRemove(MemberRemoveRequest),
    MemberPromote(MemberPromoteRequest),
}

impl Req {
    fn name(&self) -> &'static str {
        match self {
            Req::Range(_) => "Range",
            Req::Put(_) => "Put",
            Req::Delete(_) => "DeleteRange",
            Req::Txn(_) => "Txn",
            Req::Compact(_) => "Compact",
            Req::Status => "Status",
            Req::Hash => "Hash",
            Req::HashKv(_) => "HashKV",
            Req::Alarm(_) => "Alarm",
            Req::MoveLeader(_) => "MoveLeader",
            Req::Defragment => "Defragment",
            Req::MemberList(_) => "MemberList",
            Req::MemberAdd(_) => "MemberAdd",
            Req::MemberUpdate(_) => "MemberUpdate",
            Req::MemberRemove(_) => "MemberRemove",
            Req::MemberPromote(_) => "MemberPromote",
        }
    }

    /// A short description for failure messages (big keys and values cut).
    fn describe(&self) -> String {
        let full = format!("{self:?}");
        if full.len() > 600 {
            format!("{}… ({} chars)", &full[..600], full.len())
        } else {
            full
        }
    }
}

/// Draws random requests; knows the member's ids and addresses so that
/// some requests name real things.
struct Gen {
    rng: StdRng,
    member_id: u64,
    peer_url: String,
    /// The store revision last seen.
    revision: i64,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Mostly below `usual`, sometimes up to `rare` (unknown enum values).
    fn enum_value(&mut self, usual: i32, rare: i32) -> i32 {
        let bound = if self.chance(0.95) { usual } else { rare };
        self.rng.random_range(0..bound)
    }

    fn bytes(&mut self, len: usize) -> Bytes {
        let mut b = vec![0u8; len];
        self.rng.fill(&mut b[..]);
        b.into()
    }

    fn key(&mut self) -> Bytes {
        const SPECIAL: [&[u8]; 8] = [
            b"\0",
            b"\0\0",
            b"\0a",
            b"a\0b",
            b"\xff",
            b"\xff\xff",
            b"a",
            b"ab",
        ];
        match self.rng.random_range(0..100) {
            0..50 => format!("k{}", self.rng.random_range(0..16)).into(),
            50..65 => Bytes::from_static(SPECIAL[self.rng.random_range(0..SPECIAL.len())]),
            65..85 => {
                let len = self.rng.random_range(1..8);
                self.bytes(len)
            }
            85..90 => Bytes::new(),
            90..92 => {
                // Around the store's key limit and the storage engine's.
                let len = [
                    keel_mvcc::MAX_KEY_BYTES,
                    keel_mvcc::MAX_KEY_BYTES + 1,
                    40_000,
                    65_526,
                    65_536,
                    70_000,
                ][self.rng.random_range(0..6)];
                let byte = if self.chance(0.5) { 0 } else { b'z' };
                vec![byte; len].into()
            }
            _ => format!("k{}", self.rng.random_range(0..4)).into(),
        }
    }

    fn range_end(&mut self, key: &Bytes) -> Bytes {
        match self.rng.random_range(0..10) {
            0..3 => Bytes::new(),
            3 | 4 => Bytes::from_static(b"\0"),
            5 => prefix_end(key),
            6 => key.clone(),
            7 => key.slice(..key.len().saturating_sub(1)),
            _ => self.key(),
        }
    }

    fn value(&mut self) -> Bytes {
        match self.rng.random_range(0..100) {
            0..70 => {
                let len = self.rng.random_range(0..32);
                self.bytes(len)
            }
            70..80 => Bytes::new(),
            80..95 => {
                let len = self.rng.random_range(0..4096);
                self.bytes(len)
            }
            _ => {
                // Straddling the request cap.
                let len = MAX_REQUEST_BYTES - 64 + self.rng.random_range(0..128);
                vec![b'v'; len].into()
            }
        }
    }

    fn revision(&mut self) -> i64 {
        let current = self.revision.max(1);
        match self.rng.random_range(0..12) {
            0 => 0,
            1 => -1,
            2 => i64::MIN,
            3 => i64::MAX,
            4 => current,
            5 => current + 1,
            6 => current - 1,
            7 => current + 1_000_000,
            _ => self.rng.random_range(1..=current),
        }
    }

    fn id(&mut self) -> u64 {
        match self.rng.random_range(0..5) {
            0 => 0,
            1 => self.member_id,
            2 => u64::MAX,
            _ => self.rng.random(),
        }
    }

    fn peer_urls(&mut self) -> Vec<String> {
        const GARBAGE: [&str; 12] = [
            "",
            "not a url",
            "http://",
            "http://:",
            "http://host",
            "http://host:99999",
            "https://127.0.0.1:1",
            "unix:///tmp/sock",
            "http://[::1:5",
            "http://ex ample:80",
            "http://\u{1F4A9}:80",
            "http://127.0.0.1:0/",
        ];
        let n = self.rng.random_range(0..3);
        (0..n)
            .map(|_| match self.rng.random_range(0..4) {
                0 => GARBAGE[self.rng.random_range(0..GARBAGE.len())].to_string(),
                1 => format!("http://127.0.0.1:{}", self.rng.random_range(1..65536)),
                // This member's own peer URL, as is and in other spellings.
                2 => [
                    self.peer_url.clone(),
                    format!("{}/", self.peer_url),
                    self.peer_url.replace("127.0.0.1", "localhost"),
                ][self.rng.random_range(0..3)]
                .clone(),
                _ => format!(
                    "http://{}:{}",
                    String::from_utf8_lossy(&self.bytes(4)),
                    self.rng.random::<u16>()
                ),
            })
            .collect()
    }

    fn range(&mut self) -> RangeRequest {
        let key = self.key();
        let range_end = self.range_end(&key);
        let filter = |g: &mut Gen| if g.chance(0.8) { 0 } else { g.revision() };
        RangeRequest {
            range_end,
            key,
            limit: match self.rng.random_range(0..6) {
                0 => -self.rng.random_range(1..5),
                1 => i64::MIN,
                2 => i64::MAX,
                _ => self.rng.random_range(0..5),
            },
            revision: if self.chance(0.5) { 0 } else { self.revision() },
            sort_order: self.enum_value(3, 6),
            sort_target: self.enum_value(5, 9),
            serializable: self.chance(0.3),
            keys_only: self.chance(0.2),
            count_only: self.chance(0.1),
            min_mod_revision: filter(self),
            max_mod_revision: filter(self),
            min_create_revision: filter(self),
            max_create_revision: filter(self),
        }
    }

    fn put(&mut self) -> PutRequest {
        let ignore_value = self.chance(0.15);
        let ignore_lease = self.chance(0.1);
        PutRequest {
            key: self.key(),
            value: if ignore_value && self.chance(0.7) {
                Bytes::new()
            } else {
                self.value()
            },
            lease: if self.chance(0.9) {
                0
            } else {
                self.rng.random()
            },
            prev_kv: self.chance(0.5),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.chance(0.5),
        }
    }

    fn compare(&mut self) -> Compare {
        use compare::TargetUnion as U;
        let key = self.key();
        let n = self.rng.random_range(-3..4);
        Compare {
            result: self.enum_value(4, 7),
            target: self.enum_value(5, 8),
            range_end: if self.chance(0.6) {
                Bytes::new()
            } else {
                self.range_end(&key)
            },
            key,
            // Often a union that does not match the target.
            target_union: match self.rng.random_range(0..6) {
                0 => None,
                1 => Some(U::Version(n)),
                2 => Some(U::CreateRevision(self.revision())),
                3 => Some(U::ModRevision(self.revision())),
                4 => Some(U::Lease(n)),
                _ => Some(U::Value(self.value())),
            },
        }
    }

    fn ops(&mut self, depth: u32) -> Vec<RequestOp> {
        use request_op::Request as R;
        let n = if self.chance(0.03) {
            MAX_TXN_OPS + 1
        } else {
            self.rng.random_range(0..4)
        };
        (0..n)
            .map(|_| RequestOp {
                request: match self.rng.random_range(0..if depth > 0 { 5 } else { 4 }) {
                    0 => Some(R::RequestRange(self.range())),
                    1 => Some(R::RequestPut(self.put())),
                    2 => Some(R::RequestDeleteRange(self.delete())),
                    3 if self.chance(0.05) => None,
                    3 => Some(R::RequestPut(self.put())),
                    _ => Some(R::RequestTxn(self.txn(depth - 1))),
                },
            })
            .collect()
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        let n = self.rng.random_range(0..4);
        TxnRequest {
            compare: (0..n).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }

    fn request(&mut self) -> Req {
        match self.rng.random_range(0..100) {
            0..20 => Req::Range(self.range()),
            20..40 => Req::Put(self.put()),
            40..48 => Req::Delete(self.delete()),
            48..68 => {
                let depth = self.rng.random_range(0..4);
                Req::Txn(self.txn(depth))
            }
            68..71 => Req::Compact(CompactionRequest {
                revision: self.revision(),
                physical: self.chance(0.5),
            }),
            71..73 => Req::Status,
            73..74 => Req::Hash,
            74..78 => Req::HashKv(HashKvRequest {
                revision: self.revision(),
            }),
            78..83 => Req::Alarm(AlarmRequest {
                action: self.enum_value(3, 9),
                member_id: self.id(),
                alarm: match self.rng.random_range(0..6) {
                    0..3 => 0,
                    3 => 1,
                    4 => 2,
                    _ => self.rng.random(),
                },
            }),
            83..85 => Req::MoveLeader(MoveLeaderRequest {
                target_id: self.id(),
            }),
            85..86 => Req::Defragment,
            86..88 => Req::MemberList(MemberListRequest {
                linearizable: self.chance(0.5),
            }),
            88..92 => Req::MemberAdd(MemberAddRequest {
                peer_ur_ls: self.peer_urls(),
                is_learner: self.chance(0.5),
            }),
            92..95 => Req::MemberUpdate(MemberUpdateRequest {
                id: self.id(),
                peer_ur_ls: self.peer_urls(),
            }),
            95..98 => Req::MemberRemove(MemberRemoveRequest { id: self.id() }),
            _ => Req::MemberPromote(MemberPromoteRequest { id: self.id() }),
        }
    }
}

/// The clients of one member.
struct Clients {
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
}

impl Clients {
    async fn new(cluster: &Cluster) -> Clients {
        let channel = cluster.channel(0).await;
        Clients {
            kv: KvClient::new(channel.clone())
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX),
            maintenance: MaintenanceClient::new(channel.clone()),
            cluster: ClusterClient::new(channel),
        }
    }

    /// Sends `request`; the answer (summarised) or the error status.
    async fn send(&mut self, request: Req) -> Result<String, tonic::Status> {
        fn ok<T: std::fmt::Debug>(r: tonic::Response<T>) -> String {
            let s = format!("{:?}", r.into_inner());
            s.chars().take(200).collect()
        }
        Ok(match request {
            Req::Range(r) => ok(self.kv.range(r).await?),
            Req::Put(r) => ok(self.kv.put(r).await?),
            Req::Delete(r) => ok(self.kv.delete_range(r).await?),
            Req::Txn(r) => ok(self.kv.txn(r).await?),
            Req::Compact(r) => ok(self.kv.compact(r).await?),
            Req::Status => ok(self.maintenance.status(StatusRequest {}).await?),
            Req::Hash => ok(self.maintenance.hash(HashRequest {}).await?),
            Req::HashKv(r) => ok(self.maintenance.hash_kv(r).await?),
            Req::Alarm(r) => ok(self.maintenance.alarm(r).await?),
            Req::MoveLeader(r) => ok(self.maintenance.move_leader(r).await?),
            Req::Defragment => ok(self.maintenance.defragment(DefragmentRequest {}).await?),
            Req::MemberList(r) => ok(self.cluster.member_list(r).await?),
            Req::MemberAdd(r) => ok(self.cluster.member_add(r).await?),
            Req::MemberUpdate(r) => ok(self.cluster.member_update(r).await?),
            Req::MemberRemove(r) => ok(self.cluster.member_remove(r).await?),
            Req::MemberPromote(r) => ok(self.cluster.member_promote(r).await?),
        })
    }

    /// Reads every key (keys only) and checks what a healthy store must
    /// hold; returns the store revision.
    async fn probe(&mut self) -> Result<i64, String> {
        let call = self.kv.range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            keys_only: true,
            ..Default::default()
        });
        let response = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Err(_) => return Err("the probe range did not answer within 5 s".into()),
            Ok(Err(status)) => return Err(format!("the probe range failed: {status:?}")),
            Ok(Ok(r)) => r.into_inner(),
        };
        let revision = response.header.map_or(0, |h| h.revision);
        if response.count != response.kvs.len() as i64 || response.more {
            return Err(format!(
                "count {} but {} keys (more: {})",
                response.count,
                response.kvs.len(),
                response.more
            ));
        }
        for pair in response.kvs.windows(2) {
            if pair[0].key >= pair[1].key {
                return Err(format!("keys out of order: {:?}", pair));
            }
        }
        for kv in &response.kvs {
            if kv.key.is_empty()
                || kv.version < 1
                || kv.create_revision < 1
                || kv.create_revision > kv.mod_revision
                || kv.mod_revision > revision
            {
                return Err(format!(
                    "impossible key-value at revision {revision}: {kv:?}"
                ));
            }
        }
        Ok(revision)
    }
}

/// Whether an error is one a client can act on: anything but the codes
/// that mean the server broke (or the connection did).
fn acceptable(request: &Req, status: &tonic::Status) -> bool {
    match status.code() {
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::ResourceExhausted => true,
        // Membership changes can be refused while another is in flight.
        Code::Unavailable => {
            status.message().starts_with("etcdserver: ")
                && status.message() != "etcdserver: request timed out"
                && matches!(
                    request,
                    Req::MemberAdd(_) | Req::MemberRemove(_) | Req::MemberPromote(_)
                )
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_get_answers_or_clear_errors_and_lose_nothing() {
    let seed = env_u64("KEEL_FUZZ_SEED", 0x6b65_656c);
    let steps = env_u64("KEEL_FUZZ_STEPS", 1500);
    let _guard = SeedGuard(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(
        1,
        &[
            "--max-request-bytes",
            &MAX_REQUEST_BYTES.to_string(),
            "--max-txn-ops",
            &MAX_TXN_OPS.to_string(),
            "--request-timeout-ms",
            "3000",
        ],
    )
    .await;
    let mut clients = Clients::new(&cluster).await;
    let status = cluster.status(0).await.expect("status");
    let member_id = status.header.expect("header").member_id;
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(seed),
        member_id,
        peer_url: format!("http://{}", cluster.members[0].spec.peer),
        revision: 1,
    };
    let mut outcomes = std::collections::BTreeMap::<(&str, String), usize>::new();
    for step in 0..steps {
        let request = gen.request();
        let name = request.name();
        let description = request.describe();
        let result = tokio::time::timeout(CALL_TIMEOUT, clients.send(request.clone())).await;
        macro_rules! fail {
            ($($what:tt)*) => {
                panic!(
                    "seed {seed}, step {step}: {description}\n{}\nthe member's log ends:\n{}",
                    format!($($what)*),
                    log_tail(&cluster.log(0), 40)
                )
            };
        }
        let outcome = match result {
            Err(_) => fail!("no answer within 5 s"),
            Ok(Ok(_)) => "OK".to_string(),
            Ok(Err(status)) if acceptable(&request, &status) => format!("{:?}", status.code()),
            Ok(Err(status)) => fail!("unexpected error {status:?}"),
        };
        *outcomes.entry((name, outcome)).or_default() += 1;
        if step % 50 == 49 {
            disarm(&mut clients).await;
        }
        match clients.probe().await {
            Ok(revision) => gen.revision = revision,
            Err(e) => fail!("after it: {e}"),
        }
    }
    cluster.assert_healthy(0);
    eprintln!("{steps} requests in {:?}: {outcomes:#?}", started.elapsed());

    // Undo what blocks writes or keeps unreachable members around.
    disarm(&mut clients).await;
    remove_others(&mut clients, member_id).await;

    // Everything acknowledged reads back, and survives a restart unchanged.
    common::put(&cluster, 0, "fuzz/after", "kept")
        .await
        .expect("put after");
    let before = everything(&mut clients).await;
    assert!(
        before
            .kvs
            .iter()
            .any(|kv| kv.key == "fuzz/after" && kv.value == "kept"),
        "seed {seed}: the last put is lost"
    );
    let hash = cluster.hash_kv(0, 0).await;
    cluster.assert_healthy(0);
    cluster.stop(0);
    cluster.spawn(0);
    cluster.wait_for_leader().await;
    let mut clients = Clients::new(&cluster).await;
    let after = everything(&mut clients).await;
    assert_eq!(
        before.kvs, after.kvs,
        "seed {seed}: the restart changed data"
    );
    assert_eq!(
        before.header.map(|h| h.revision),
        after.header.map(|h| h.revision),
        "seed {seed}: the restart changed the revision"
    );
    assert_eq!(
        hash,
        cluster.hash_kv(0, 0).await,
        "seed {seed}: hash changed"
    );
    cluster.assert_healthy(0);
    eprintln!("fuzz_requests took {:?}", started.elapsed());
}

/// The last `n` lines of `log` before any backtrace, and any panic message.
fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .take_while(|l| !l.starts_with("stack backtrace:"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every key-value of the store.
async fn everything(clients: &mut Clients) -> RangeResponse {
    clients
        .kv
        .range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        })
        .await
        .expect("range everything")
        .into_inner()
}

/// Clears every alarm (a random NOSPACE alarm would refuse most puts).
async fn disarm(clients: &mut Clients) {
    let alarms = clients
        .maintenance
        .alarm(AlarmRequest::default())
        .await
        .expect("alarm list")
        .into_inner()
        .alarms;
    for alarm in alarms {
        clients
            .maintenance
            .alarm(AlarmRequest {
                action: alarm_request::AlarmAction::Deactivate as i32,
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            })
            .await
            .expect("disarm");
    }
}

/// Removes every member but `me`, checking that each removal works.
async fn remove_others(clients: &mut Clients, me: u64) {
    let members = clients
        .cluster
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner()
        .members;
    for member in members.iter().filter(|m| m.id != me) {
        let removed = tokio::time::timeout(
            CALL_TIMEOUT,
            clients
                .cluster
                .member_remove(MemberRemoveRequest { id: member.id }),
        )
        .await;
        assert!(
            matches!(removed, Ok(Ok(_))),
            "removing {member:?}: {removed:?}"
        );
    }
}

/// What a raw gRPC call got back: the HTTP status and the `grpc-status`
/// (from the headers of a trailers-only answer, or from the trailers).
#[derive(Debug)]
struct RawAnswer {
    http: u16,
    grpc_status: Option<i32>,
    message: Option<String>,
}

/// Sends `body` as is (the gRPC length prefix included, or not) to `path`
/// over a fresh HTTP/2 connection.
async fn raw_call(address: &str, path: &str, content_type: &str, body: Vec<u8>) -> RawAnswer {
    let call = async {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let (client, connection) = h2::client::handshake(tcp).await?;
        tokio::spawn(connection);
        let mut client = client.ready().await?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}{path}"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut send) = client.send_request(request, false)?;
        send.send_data(Bytes::from(body), true)?;
        let response = response.await?;
        let http = response.status().as_u16();
        let header = |map: &http::HeaderMap, name: &str| {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (parts, mut body) = response.into_parts();
        let mut grpc_status = header(&parts.headers, "grpc-status");
        let mut message = header(&parts.headers, "grpc-message");
        if grpc_status.is_none() {
            while let Some(chunk) = body.data().await {
                let chunk = chunk?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            if let Some(trailers) = body.trailers().await? {
                grpc_status = header(&trailers, "grpc-status");
                message = header(&trailers, "grpc-message");
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(RawAnswer {
            http,
            grpc_status: grpc_status.and_then(|s| s.parse().ok()),
            message,
        })
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => panic!("{path}: no gRPC answer, the connection failed: {e}"),
        Err(_) => panic!("{path}: no answer within 5 s"),
    }
}

/// A gRPC message frame: the compression flag, the length, the bytes.
fn frame(compressed: u8, length: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![compressed];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_and_nonsense_from_a_peer_get_errors_and_change_nothing() {
    let seed = env_u64("KEEL_FUZZ_SEED", 0x6b65_656c);
    let _guard = SeedGuard(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(1, &["--max-txn-ops", &MAX_TXN_OPS.to_string()]).await;
    let mut clients = Clients::new(&cluster).await;
    common::put(&cluster, 0, "known", "value")
        .await
        .expect("put");
    let client = cluster.members[0].spec.client.clone();
    let peer = cluster.members[0].spec.peer.clone();
    let grpc = "application/grpc";
    let range = RangeRequest {
        key: Bytes::from_static(b"known"),
        ..Default::default()
    }
    .encode_to_vec();
    // A txn nested deeper than protobuf decoders recurse.
    let mut deep = TxnRequest::default();
    for _ in 0..150 {
        deep = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(deep)),
            }],
            ..Default::default()
        };
    }
    let deep = deep.encode_to_vec();
    // (path, body, whether an error is required)
    let mut cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // A length-delimited field claiming 2^35 bytes.
        (
            "/etcdserverpb.KV/Range",
            frame(0, 6, &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            true,
        ),
        // The prefix claims more than is sent.
        ("/etcdserverpb.KV/Range", frame(0, 1000, &range), true),
        // A truncated prefix, an empty body.
        ("/etcdserverpb.KV/Range", vec![0, 0, 0], true),
        ("/etcdserverpb.KV/Range", Vec::new(), true),
        // Compressed, though no encoding was negotiated.
        (
            "/etcdserverpb.KV/Range",
            frame(1, range.len() as u32, &range),
            true,
        ),
        // Larger than any message accepted.
        ("/etcdserverpb.KV/Put", frame(0, u32::MAX, &range), true),
        // Two messages for a unary call.
        (
            "/etcdserverpb.KV/Range",
            [frame(0, range.len() as u32, &range), frame(0, 2, &[8, 1])].concat(),
            false,
        ),
        (
            "/etcdserverpb.KV/Txn",
            frame(0, deep.len() as u32, &deep),
            true,
        ),
        (
            "/etcdserverpb.KV/NoSuchMethod",
            frame(0, range.len() as u32, &range),
            true,
        ),
        (
            "/etcdserverpb.Maintenance/Status",
            frame(0, 3, &[0x0a, 0x05, 0x01]),
            true,
        ),
        (
            "/etcdserverpb.Cluster/MemberAdd",
            frame(0, 2, &[0x0a, 0x7f]),
            true,
        ),
    ];
    for path in [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Put",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Cluster/MemberUpdate",
    ] {
        for _ in 0..8 {
            let mut garbage = vec![0u8; rng.random_range(1..64)];
            rng.fill(&mut garbage[..]);
            cases.push((path, frame(0, garbage.len() as u32, &garbage), false));
        }
    }
    for (path, body, must_fail) in cases {
        let answer = raw_call(&client, path, grpc, body.clone()).await;
        let Some(code) = answer.grpc_status else {
            panic!("{path} {body:?}: no grpc-status: {answer:?}");
        };
        assert!(
            !must_fail || code != 0,
            "{path} {body:?} was accepted: {:?}",
            answer.message
        );
        clients
            .probe()
            .await
            .unwrap_or_else(|e| panic!("after {path} {body:?}: {e}"));
    }
    // Not gRPC at all: any HTTP answer, as long as the member keeps serving.
    let answer = raw_call(
        &client,
        "/etcdserverpb.KV/Range",
        "text/plain",
        range.clone(),
    )
    .await;
    assert!(
        answer.http != 200 || answer.grpc_status.is_some_and(|c| c != 0),
        "{answer:?}"
    );
    for (path, body) in [
        (
            "/keel.raft.v1.RaftTransport/Stream",
            frame(0, 4, &[0xde, 0xad, 0xbe, 0xef]),
        ),
        ("/keelpb.Forward/Propose", frame(0, 3, &[0x0a, 0xff, 0x01])),
    ] {
        let answer = raw_call(&peer, path, grpc, body).await;
        assert!(
            answer.grpc_status.is_some_and(|c| c != 0),
            "{path}: {answer:?}"
        );
    }

    // A peer forwarding writes no client could send: refused, nothing changes.
    let before = everything(&mut clients).await;
    let hash = cluster.hash_kv(0, 0).await;
    let channel = Channel::from_shared(format!("http://{peer}"))
        .expect("url")
        .connect_lazy();
    let mut forward = ForwardClient::new(channel);
    let put = |key: &[u8]| PutRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::from_static(b"nonsense"),
        ..Default::default()
    };
    let put_op = |key: &[u8]| RequestOp {
        request: Some(request_op::Request::RequestPut(put(key))),
    };
    let nonsense = [
        None,
        Some(Op::Put(put(b""))),
        Some(Op::Put(put(&vec![b'k'; 40_000]))),
        Some(Op::DeleteRange(DeleteRangeRequest::default())),
        Some(Op::Txn(TxnRequest {
            success: vec![put_op(b"known"), put_op(b"known")],
            ..Default::default()
        })),
        Some(Op::Txn(TxnRequest {
            success: (0..=MAX_TXN_OPS)
                .map(|i| put_op(format!("t{i}").as_bytes()))
                .collect(),
            ..Default::default()
        })),
        Some(Op::Txn(TxnRequest {
            compare: vec![Compare {
                key: Bytes::from_static(b"known"),
                result: 9,
                ..Default::default()
            }],
            success: vec![put_op(b"known")],
            failure: vec![put_op(b"known")],
        })),
    ];
    let batch = |ops: Vec<Option<Op>>| Proposals {
        commands: ops
            .into_iter()
            .map(|op| CommandPb { op, auth: None })
            .collect(),
    };
    // Each alone, then all in one batch: every one refused on its own.
    let mut batches: Vec<_> = nonsense.iter().map(|op| vec![op.clone()]).collect();
    batches.push(nonsense.to_vec());
    for ops in batches {
        let description = format!("{ops:?}").chars().take(300).collect::<String>();
        let count = ops.len();
        let result = tokio::time::timeout(CALL_TIMEOUT, forward.propose(batch(ops))).await;
        let answers = match result {
            Ok(Ok(answers)) => answers.into_inner().answers,
            other => panic!(
                "forwarded {description}: {other:?}\nthe member's log ends:\n{}",
                log_tail(&cluster.log(0), 30)
            ),
        };
        assert_eq!(answers.len(), count, "{description}");
        for answer in answers {
            match answer.result {
                Some(answer::Result::Refusal(r)) if r.code == Code::InvalidArgument as i32 => {}
                other => panic!("forwarded {description}: answered {other:?}"),
            }
        }
    }
    // More writes than a batch may hold: the call is refused whole.
    let oversized = batch(vec![Some(Op::Put(put(b"many"))); 513]);
    match tokio::time::timeout(CALL_TIMEOUT, forward.propose(oversized)).await {
        Ok(Err(status)) if status.code() == Code::InvalidArgument => {}
        other => panic!("a batch of 513 writes: {other:?}"),
    }
    let after = everything(&mut clients).await;
    assert_eq!(before.kvs, after.kvs, "nonsense from a peer changed data");
    assert_eq!(
        before.header.map(|h| h.revision),
        after.header.map(|h| h.revision)
    );
    assert_eq!(hash, cluster.hash_kv(0, 0).await);

    // Adding a voter at an address where nothing answers: keel adds it as a
    // learner and never promotes it, so the single member keeps its quorum,
    // and removing it again works.
    let added = clients
        .cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:9".into()],
            is_learner: false,
        })
        .await
        .expect("member add")
        .into_inner();
    // The leader retries promotions every 200 ms: give it a few chances.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let members = clients
        .cluster
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner()
        .members;
    let new = added.member.expect("added member").id;
    assert!(
        members.iter().any(|m| m.id == new && m.is_learner),
        "{members:?}"
    );
    let write =
        tokio::time::timeout(CALL_TIMEOUT, common::put(&cluster, 0, "after-add", "ok")).await;
    assert!(
        matches!(write, Ok(Ok(_))),
        "a write after the add: {write:?}"
    );
    let me = cluster
        .status(0)
        .await
        .expect("status")
        .header
        .expect("header")
        .member_id;
    remove_others(&mut clients, me).await;
    common::put(&cluster, 0, "known", "still")
        .await
        .expect("put at the end");
    cluster.assert_healthy(0);
}
