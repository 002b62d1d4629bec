//! Side-by-side throughput and latency of keel and etcd through the etcd v3
//! gRPC API.
//!
//! For each target (keel, etcd) the bench starts a fresh three-member cluster
//! of real processes on 127.0.0.1 (free ports, data in a temporary
//! directory), each with its default raft settings (100 ms heartbeat, 1 s
//! election timeout), and then, for each client count N:
//!
//! 1. waits until every member's `Maintenance.Status` names the same leader;
//! 2. runs N concurrent clients for `BENCH_SECS`, each doing sequential
//!    `Put`s (key `bench/<client>/<k>`, `k` pseudo-random in a 100 000-key
//!    space, 256-byte value) against the leader's client URL, as etcd's own
//!    `benchmark` tool does;
//! 3. then the same with linearizable (not serializable) single-key `Range`s
//!    against the leader, over a set of keys written once per cluster before
//!    the first read run (so every read returns a 256-byte value).
//!
//! Clients share one HTTP/2 connection per `BENCH_CLIENTS_PER_CONN` (32)
//! clients. The result is a markdown table of ops/s, p50/p99 latency and the
//! CPU time all members used per operation (over the whole run, set-up
//! included; a run with several rows shares it out over all their
//! operations).
//! Failed requests are not counted as operations; their number is shown.
//!
//! keel is the `keel` binary cargo builds for this bench (the `bench`
//! profile, i.e. `target/release/keel`); etcd is `/usr/bin/etcd` (Debian's
//! `etcd-server`, 3.4), or `BENCH_ETCD=/path/to/etcd`; without it the etcd
//! rows are skipped. Member logs go to the temporary directory; set
//! `BENCH_KEEP_DIR=1` to keep it (its path is printed).
//!
//! Run, preferably on an otherwise idle machine:
//!
//! ```text
//! cargo bench -p keel-server --bench etcd_api
//! BENCH_SECS=2 BENCH_CLIENTS=1,16 BENCH_TARGETS=keel cargo bench -p keel-server --bench etcd_api
//! ```
//!
//! Knobs (environment): `BENCH_SECS` (10, per run), `BENCH_CLIENTS`
//! ("1,16,256"), `BENCH_TARGETS` ("keel,etcd"), `BENCH_OPS` ("put,range";
//! also "watch" and "stall", below), `BENCH_CLIENTS_PER_CONN` (32),
//! `BENCH_VALUE_SIZE` (256), `BENCH_KEYSPACE` (100000), `BENCH_READ_KEYS`
//! (1000), `BENCH_WATCH_WRITERS` (1), `BENCH_STALL_PUTS` (200000).
//!
//! `BENCH_AUTH=1` turns auth on first (root, and a user `bench` allowed to
//! read and write every key, not root, so every request is checked) and
//! the put and range clients send `bench`'s token; one target per run.
//!
//! - "watch": N watchers of one prefix, ten to a stream and ten streams to
//!   a connection, while `BENCH_WATCH_WRITERS` clients put to keys under it
//!   for `BENCH_SECS`: events delivered per second and the latency from
//!   each put's start to each watcher's event.
//! - "stall": N clients put `BENCH_STALL_PUTS` keys (a warm-up, not
//!   reported), then as many with no watcher, then as many again while one
//!   watcher of every key they write never reads its stream, then as many
//!   again with the watcher gone (a control). Each row gives the put rate
//!   and the leader's RSS before and after.
//! - "leases": N clients grant `BENCH_LEASES` (100000) leases of 600 s, each
//!   with a key (leader RSS before and after); then `BENCH_EXPIRING`
//!   (10000) leases of 8 s, each with a key, are granted as fast as the
//!   clients can and expire while N clients put: put latency before and
//!   during the mass expiry.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keel_api::authpb::{permission::Type as PermissionType, Permission};
use keel_api::etcdserverpb::auth_client::AuthClient;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::*;
use keel_mvcc::prefix_end;
use keel_testkit::{Cluster, Flavor};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The same allocator as the server, so the load generator (on the same two
/// cores) costs as little as it can, whichever target it drives.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bench settings, from the environment.
#[derive(Clone, Debug)]
struct Settings {
    secs: f64,
    clients: Vec<usize>,
    targets: Vec<String>,
    ops: Vec<Op>,
    clients_per_conn: usize,
    value_size: usize,
    keyspace: u64,
    read_keys: u64,
    watch_writers: usize,
    stall_puts: usize,
    leases: usize,
    expiring: usize,
    keep_dir: bool,
    /// Auth on, requests of a non-root user (`BENCH_AUTH=1`).
    auth: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        _ => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Settings {
    fn from_env() -> Settings {
        let clients = env_list("BENCH_CLIENTS", "1,16,256")
            .iter()
            .map(|c| match c.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => panic!("BENCH_CLIENTS: {c:?} is not a positive number"),
            })
            .collect();
        let targets = env_list("BENCH_TARGETS", "keel,etcd");
        for t in &targets {
            assert!(
                t == "keel" || t == "etcd",
                "BENCH_TARGETS: unknown target {t:?} (keel, etcd)"
            );
        }
        let ops = env_list("BENCH_OPS", "put,range")
            .iter()
            .map(|o| match o.as_str() {
                "put" => Op::Put,
                "range" => Op::Range,
                "watch" => Op::Watch,
                "stall" => Op::Stall,
                "leases" => Op::Leases,
                _ => {
                    panic!("BENCH_OPS: unknown operation {o:?} (put, range, watch, stall, leases)")
                }
            })
            .collect();
        let secs: f64 = env_or("BENCH_SECS", 10.0);
        assert!(secs > 0.0, "BENCH_SECS must be positive");
        Settings {
            secs,
            clients,
            targets,
            ops,
            clients_per_conn: env_or("BENCH_CLIENTS_PER_CONN", 32usize).max(1),
            value_size: env_or("BENCH_VALUE_SIZE", 256),
            keyspace: env_or("BENCH_KEYSPACE", 100_000u64).max(1),
            read_keys: env_or("BENCH_READ_KEYS", 1000u64).max(1),
            watch_writers: env_or("BENCH_WATCH_WRITERS", 1usize).max(1),
            stall_puts: env_or("BENCH_STALL_PUTS", 200_000usize).max(1),
            leases: env_or("BENCH_LEASES", 100_000usize),
            expiring: env_or("BENCH_EXPIRING", 10_000usize),
            keep_dir: env_or("BENCH_KEEP_DIR", 0u8) != 0,
            auth: env_or("BENCH_AUTH", 0u8) != 0,
        }
    }
}

/// One benchmarked request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Range,
    /// Writers under one prefix; the clients are watchers of it, ten per
    /// stream; the latency is from a put's start to each watcher's event.
    Watch,
    /// Puts with no watcher, then with one watcher that never reads.
    Stall,
    /// Many leases granted, then a mass expiry beside puts.
    Leases,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Range => "range (linearizable)",
            Op::Watch => "watch (events/s, put-to-event latency)",
            Op::Stall => "put beside a stalled watcher",
            Op::Leases => "leases",
        }
    }
}

/// What one run measured.
struct RunResult {
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// What else the run found (memory, for instance).
    notes: String,
}

/// What one client task measured.
#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    end: Option<Instant>,
}

/// A small xorshift generator: keys need only look random.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn read_key(k: u64) -> Bytes {
    Bytes::from(format!("bench/read/{k:06}"))
}

/// One connection to `addr`.
async fn connect(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// The token every KV client sends (`BENCH_AUTH=1`), set once auth is on.
static TOKEN: std::sync::OnceLock<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
    std::sync::OnceLock::new();

/// Sends [`TOKEN`], once there is one.
#[derive(Clone, Copy)]
struct WithToken;

impl tonic::service::Interceptor for WithToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = TOKEN.get() {
            request.metadata_mut().insert("token", token.clone());
        }
        Ok(request)
    }
}

/// A KV client (with the token, when auth is on).
type Kv = KvClient<InterceptedService<Channel, WithToken>>;

/// `BENCH_AUTH=1`: turns auth on (root, and a user `bench` whose role may
/// read and write every key: not root, so each request is checked against
/// its permissions) and makes the KV clients send `bench`'s token.
async fn enable_auth(addr: &str) {
    let mut auth = AuthClient::new(connect(addr).await);
    let fail = |what: &str, e: tonic::Status| -> ! { panic!("{what}: {e}") };
    for (name, password) in [("root", "root-pw"), ("bench", "bench-pw")] {
        auth.user_add(AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| fail("user add", e));
        auth.role_add(AuthRoleAddRequest { name: name.into() })
            .await
            .unwrap_or_else(|e| fail("role add", e));
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: name.into(),
            role: name.into(),
        })
        .await
        .unwrap_or_else(|e| fail("grant", e));
    }
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "bench".into(),
        perm: Some(Permission {
            perm_type: PermissionType::Readwrite as i32,
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
        }),
    })
    .await
    .unwrap_or_else(|e| fail("permission", e));
    auth.auth_enable(AuthEnableRequest {})
        .await
        .unwrap_or_else(|e| fail("auth enable", e));
    let token = auth
        .authenticate(AuthenticateRequest {
            name: "bench".into(),
            password: "bench-pw".into(),
        })
        .await
        .unwrap_or_else(|e| fail("authenticate", e))
        .into_inner()
        .token;
    // Each target gets its own cluster and token; the first one set stays
    // unless replaced here.
    let value = token.parse().expect("an ASCII token");
    if TOKEN.set(value).is_err() {
        eprintln!("BENCH_AUTH: run one target at a time (BENCH_TARGETS) so each gets its token");
        std::process::exit(2);
    }
}

/// `clients` KV clients on the leader, sharing ⌈clients / per_conn⌉ connections.
async fn kv_clients(addr: &str, clients: usize, per_conn: usize) -> Vec<Kv> {
    let conns = clients.div_ceil(per_conn);
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        channels.push(channel);
    }
    (0..clients)
        .map(|c| {
            KvClient::with_interceptor(channels[c % conns].clone(), WithToken)
                .max_decoding_message_size(64 << 20)
        })
        .collect()
}

/// Writes the keys the read runs pick from, 16 clients at a time.
async fn preload(addr: &str, s: &Settings) {
    let value = Bytes::from(vec![b'v'; s.value_size]);
    let clients = kv_clients(addr, 16, s.clients_per_conn).await;
    let mut tasks = Vec::new();
    for (c, mut kv) in clients.into_iter().enumerate() {
        let value = value.clone();
        let keys: Vec<u64> = (c as u64..s.read_keys).step_by(16).collect();
        tasks.push(tokio::spawn(async move {
            for k in keys {
                kv.put(PutRequest {
                    key: read_key(k),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("preloading read keys: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
}

/// Runs `clients` clients doing `op` against `addr` for `s.secs`.
/// (`stall` gives two results: without and with the stalled watcher;
/// `leader_rss` reads the leader's resident memory in bytes.)
async fn run(
    addr: &str,
    op: Op,
    clients: usize,
    s: &Settings,
    leader_rss: impl Fn() -> u64,
) -> Vec<(&'static str, RunResult)> {
    match op {
        Op::Watch => vec![(op.name(), run_watch(addr, clients, s).await)],
        Op::Put | Op::Range => vec![(op.name(), run_requests(addr, op, clients, s).await)],
        Op::Stall => run_stall(addr, clients, s, leader_rss).await,
        Op::Leases => run_leases(addr, clients, s, leader_rss).await,
    }
}

/// `clients` clients each sending puts or ranges, one after another.
async fn run_requests(addr: &str, op: Op, clients: usize, s: &Settings) -> RunResult {
    let kvs = kv_clients(addr, clients, s.clients_per_conn).await;
    let value = Bytes::from(vec![b'v'; s.value_size]);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(s.secs);
    let (keyspace, read_keys) = (s.keyspace, s.read_keys);
    let mut tasks = Vec::with_capacity(clients);
    for (c, mut kv) in kvs.into_iter().enumerate() {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) << 20));
            let mut out = ClientResult {
                latencies: Vec::with_capacity(4096),
                ..Default::default()
            };
            let prefix = format!("bench/{c:04}/");
            while Instant::now() < deadline {
                let k = rng.next();
                let t0 = Instant::now();
                let result = match op {
                    Op::Put => kv
                        .put(PutRequest {
                            key: Bytes::from(format!("{prefix}{:06}", k % keyspace)),
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Op::Range => kv
                        .range(RangeRequest {
                            key: read_key(k % read_keys),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Op::Watch | Op::Stall | Op::Leases => {
                        unreachable!("measured by their own runs")
                    }
                };
                match result {
                    Ok(()) => out.latencies.push(t0.elapsed()),
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!("{:?}: {}", e.code(), e.message()));
                        }
                        // Don't spin on a dead server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out.end = Some(Instant::now());
            out
        }));
    }
    gather(tasks, start).await
}

/// What the client tasks started at `start` measured, together.
async fn gather(tasks: Vec<tokio::task::JoinHandle<ClientResult>>, start: Instant) -> RunResult {
    let mut result = RunResult {
        ops: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        notes: String::new(),
    };
    for t in tasks {
        let r = t.await.expect("client task");
        result.ops += r.latencies.len();
        result.errors += r.errors;
        if result.first_error.is_none() {
            result.first_error = r.first_error;
        }
        if let Some(end) = r.end {
            result.elapsed = result.elapsed.max(end - start);
        }
        result.latencies.extend(r.latencies);
    }
    result.latencies.sort_unstable();
    result
}

/// `watchers` watchers of one prefix, ten to a stream (and ten streams to a
/// connection), while `BENCH_WATCH_WRITERS` clients put to keys under it
/// for `BENCH_SECS`: every event's latency from the start of its put
/// (carried in the value) to its arrival.
async fn run_watch(addr: &str, watchers: usize, s: &Settings) -> RunResult {
    const PER_STREAM: usize = 10;
    const PREFIX: &str = "bench/watched/";
    let origin = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut holders = Vec::new();
    let mut readers = Vec::new();
    let streams = watchers.div_ceil(PER_STREAM);
    let mut channel = None;
    for stream in 0..streams {
        if stream % 10 == 0 {
            channel = Some(connect(addr).await);
        }
        let here = PER_STREAM.min(watchers - stream * PER_STREAM);
        let (requests, request_stream) = tokio::sync::mpsc::channel(here);
        for _ in 0..here {
            let create = WatchCreateRequest {
                key: Bytes::from_static(PREFIX.as_bytes()),
                range_end: prefix_end(PREFIX.as_bytes()),
                ..Default::default()
            };
            requests
                .send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
                })
                .await
                .expect("queueing a watch");
        }
        let mut client = WatchClient::new(channel.clone().expect("a channel"));
        let mut responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(request_stream))
            .await
            .expect("opening a watch stream")
            .into_inner();
        holders.push(requests);
        let created = created.clone();
        let mut stopped = stopped.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let response = tokio::select! {
                    response = responses.message() => response,
                    _ = stopped.wait_for(|stop| *stop) => break,
                };
                let Ok(Some(response)) = response else {
                    break;
                };
                if response.created {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                let now = origin.elapsed();
                for event in response.events {
                    let sent = event
                        .kv
                        .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        latencies.push(now.saturating_sub(Duration::from_nanos(sent)));
                    }
                }
            }
            latencies
        }));
    }
    let patience = Instant::now() + Duration::from_secs(30);
    while created.load(Ordering::Relaxed) < watchers {
        assert!(
            Instant::now() < patience,
            "only {} of {watchers} watches were created",
            created.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(s.secs);
    let mut writers = Vec::new();
    for (w, mut kv) in kv_clients(addr, s.watch_writers, s.clients_per_conn)
        .await
        .into_iter()
        .enumerate()
    {
        writers.push(tokio::spawn(async move {
            let key = Bytes::from(format!("{PREFIX}{w:04}"));
            let (mut errors, mut first_error) = (0, None);
            while Instant::now() < deadline {
                let sent = origin.elapsed().as_nanos().to_string();
                let put = PutRequest {
                    key: key.clone(),
                    value: Bytes::from(sent),
                    ..Default::default()
                };
                if let Err(e) = kv.put(put).await {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                }
            }
            (errors, first_error)
        }));
    }
    let (mut errors, mut first_error) = (0, None);
    for writer in writers {
        let (e, first) = writer.await.expect("writer task");
        errors += e;
        first_error = first_error.or(first);
    }
    let elapsed = start.elapsed();
    // Let the last events arrive, then stop reading.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(true);
    drop(holders);
    let mut latencies = Vec::new();
    for reader in readers {
        if let Ok(Ok(mut l)) = tokio::time::timeout(Duration::from_secs(10), reader).await {
            latencies.append(&mut l);
        }
    }
    latencies.sort_unstable();
    RunResult {
        ops: latencies.len(),
        errors,
        first_error,
        elapsed,
        latencies,
        notes: String::new(),
    }
}

/// `clients` clients put `total` keys under `prefix` between them, as fast
/// as they can.
async fn put_count(
    addr: &str,
    clients: usize,
    total: usize,
    prefix: &str,
    s: &Settings,
) -> RunResult {
    let kvs = kv_clients(addr, clients, s.clients_per_conn).await;
    let value = Bytes::from(vec![b'v'; s.value_size]);
    let left = Arc::new(AtomicUsize::new(total));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut kv) in kvs.into_iter().enumerate() {
        let (value, left, keyspace) = (value.clone(), left.clone(), s.keyspace);
        let prefix = format!("{prefix}{c:04}/");
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) << 20));
            let mut out = ClientResult::default();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let put = PutRequest {
                    key: Bytes::from(format!("{prefix}{:06}", rng.next() % keyspace)),
                    value: value.clone(),
                    ..Default::default()
                };
                let t0 = Instant::now();
                match kv.put(put).await {
                    Ok(_) => out.latencies.push(t0.elapsed()),
                    Err(e) => {
                        out.errors += 1;
                        out.first_error
                            .get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                    }
                }
            }
            out.end = Some(Instant::now());
            out
        }));
    }
    gather(tasks, start).await
}

/// Puts without a watcher, then beside one watcher (of every key the puts
/// write, with previous versions) whose client never reads: the put rate
/// and the leader's memory of each.
async fn run_stall(
    addr: &str,
    clients: usize,
    s: &Settings,
    leader_rss: impl Fn() -> u64,
) -> Vec<(&'static str, RunResult)> {
    const PREFIX: &str = "bench/stall/";
    let mb = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let measured = |before: u64, after: u64, mut result: RunResult| {
        result.notes = format!(
            "leader RSS {:.0} → {:.0} MB ({:+.1} MB)",
            mb(before),
            mb(after),
            mb(after) - mb(before)
        );
        result
    };
    // A first round brings the member's caches and logs to their working
    // size, so the next two rounds' growth is what each round itself adds.
    put_count(addr, clients, s.stall_puts, PREFIX, s).await;
    let before = leader_rss();
    let alone = put_count(addr, clients, s.stall_puts, PREFIX, s).await;
    let alone = measured(before, leader_rss(), alone);

    // The stalled watcher: its stream is opened and never polled, so once
    // the connection's flow-control window is full the member can send it
    // nothing more.
    let channel = connect(addr).await;
    let (requests, request_stream) = tokio::sync::mpsc::channel(1);
    requests
        .send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: Bytes::from_static(PREFIX.as_bytes()),
                    range_end: prefix_end(PREFIX.as_bytes()),
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("queueing the watch");
    let stalled = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(request_stream))
        .await
        .expect("opening the stalled watch");
    let before = leader_rss();
    let beside = put_count(addr, clients, s.stall_puts, PREFIX, s).await;
    let held = leader_rss();
    let mut beside = measured(before, held, beside);
    drop((stalled, requests));
    // What the member frees when the stalled watcher goes: what it held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let released = mb(held) - mb(leader_rss());
    beside.notes += &format!("; {released:+.1} MB freed when the watcher closed");

    // A control: the same round again without the watcher, on a store as
    // large as the stalled round's, so what the store itself adds per
    // round can be told from what the watcher holds.
    let before = leader_rss();
    let after = put_count(addr, clients, s.stall_puts, PREFIX, s).await;
    let after = measured(before, leader_rss(), after);
    vec![
        ("put, no watcher", alone),
        ("put, one stalled watcher", beside),
        ("put, no watcher (after)", after),
    ]
}

/// `clients` clients grant `count` leases of `ttl` seconds between them,
/// each with a key under `prefix`; the time it took.
async fn grant_leases(
    addr: &str,
    clients: usize,
    count: usize,
    ttl: i64,
    prefix: &str,
    s: &Settings,
) -> Duration {
    let channels = kv_clients(addr, clients, s.clients_per_conn).await;
    let left = Arc::new(AtomicUsize::new(count));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut kv) in channels.into_iter().enumerate() {
        let left = left.clone();
        let mut leases =
            keel_api::etcdserverpb::lease_client::LeaseClient::new(connect(addr).await);
        let prefix = format!("{prefix}{c:04}/");
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let Ok(granted) = leases.lease_grant(LeaseGrantRequest { ttl, id: 0 }).await else {
                    continue;
                };
                let _ = kv
                    .put(PutRequest {
                        key: Bytes::from(format!("{prefix}{n:06}")),
                        value: Bytes::from_static(b"v"),
                        lease: granted.into_inner().id,
                        ..Default::default()
                    })
                    .await;
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("grant task");
    }
    start.elapsed()
}

/// Many leases, then a mass expiry beside puts (see the module doc).
async fn run_leases(
    addr: &str,
    clients: usize,
    s: &Settings,
    leader_rss: impl Fn() -> u64,
) -> Vec<(&'static str, RunResult)> {
    let mb = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let before = leader_rss();
    let took = grant_leases(addr, clients, s.leases, 600, "bench/leased/", s).await;
    let after = leader_rss();
    let live = RunResult {
        ops: s.leases,
        errors: 0,
        first_error: None,
        elapsed: took,
        latencies: Vec::new(),
        notes: format!(
            "{} leases with a key each: leader RSS {:.0} → {:.0} MB ({:+.1} MB)",
            s.leases,
            mb(before),
            mb(after),
            mb(after) - mb(before)
        ),
    };
    let calm = run_requests(addr, Op::Put, clients, s).await;
    // Leases of 8 s granted as fast as the clients can: they run out within
    // the next run of puts, about as fast as they were granted.
    let granting = grant_leases(addr, clients, s.expiring, 8, "bench/expiring/", s).await;
    let window = Duration::from_secs(8).saturating_sub(granting) + Duration::from_secs(6);
    let during = run_requests(
        addr,
        Op::Put,
        clients,
        &Settings {
            secs: window.as_secs_f64(),
            ..s.clone()
        },
    )
    .await;
    vec![
        ("lease grant + put (leases/s)", live),
        ("put, no expiry", calm),
        ("put, during a mass lease expiry", during),
    ]
}

/// The CPU time (user and system) processes `pids` have used so far, in
/// seconds, from /proc (clock ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_secs(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces): state
            // is the first, utime and stime the 12th and 13th.
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .sum()
}

/// The resident memory of process `pid` in bytes (0 if unknown).
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    format!("{:.2}", sorted[i].as_secs_f64() * 1000.0)
}

/// Finds an executable: `var` if set, else `default` if it exists, else on PATH.
fn find_etcd() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("BENCH_ETCD") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let default = PathBuf::from("/usr/bin/etcd");
    if default.exists() {
        return Some(default);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.exists())
    })
}

fn version(exe: &Path, arg: &str) -> String {
    Command::new(exe)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let s = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let keel = PathBuf::from(env!("CARGO_BIN_EXE_keel"));
    let etcd = find_etcd();
    eprintln!(
        "settings: {} s per run, clients {:?}, targets {:?}, {} clients per connection, \
         {}-byte values, {} keys per client, {} read keys",
        s.secs, s.clients, s.targets, s.clients_per_conn, s.value_size, s.keyspace, s.read_keys
    );
    eprintln!("keel: {}", keel.display());

    let mut table = String::new();
    writeln!(
        table,
        "| target | operation | clients | ops/s | p50 ms | p99 ms | errors | server CPU µs/op | notes |"
    )
    .expect("write");
    writeln!(table, "|---|---|---:|---:|---:|---:|---:|---:|---|").expect("write");

    for target in &s.targets {
        let exe = match target.as_str() {
            "keel" => {
                if !keel.exists() {
                    eprintln!(
                        "keel: {} is missing; build it with `cargo build --release -p keel-server`",
                        keel.display()
                    );
                    continue;
                }
                keel.clone()
            }
            _ => match &etcd {
                Some(e) => {
                    eprintln!("etcd: {} ({})", e.display(), version(e, "--version"));
                    e.clone()
                }
                None => {
                    eprintln!(
                        "etcd: not found (install Debian's etcd-server or set BENCH_ETCD); skipping"
                    );
                    continue;
                }
            },
        };
        let flavor = match target.as_str() {
            "keel" => Flavor::Keel,
            _ => Flavor::Etcd,
        };
        let mut cluster = Cluster::start(flavor, &exe, 3, &[]);
        cluster.keep_dir(s.keep_dir);
        let mut preloaded = false;
        runtime.block_on(async {
            if s.auth {
                let leader = cluster.wait_for_leader().await;
                enable_auth(&cluster.members[leader].spec.client).await;
            }
            for &clients in &s.clients {
                for &op in &s.ops {
                    let leader = cluster.wait_for_leader().await;
                    let addr = cluster.members[leader].spec.client.clone();
                    if op == Op::Range && !preloaded {
                        preload(&addr, &s).await;
                        preloaded = true;
                    }
                    eprintln!(
                        "{target}: {} × {clients} clients on leader {} ({addr}) for {} s",
                        op.name(),
                        cluster.members[leader].spec.name,
                        s.secs
                    );
                    let pid = cluster.members[leader]
                        .process
                        .as_ref()
                        .map_or(0, |p| p.id());
                    let members: Vec<u32> = cluster
                        .members
                        .iter()
                        .filter_map(|m| m.process.as_ref().map(|p| p.id()))
                        .collect();
                    let cpu_before = cpu_secs(&members);
                    let results = run(&addr, op, clients, &s, || rss_of(pid)).await;
                    let cpu = cpu_secs(&members) - cpu_before;
                    cluster.assert_running();
                    let all_ops: usize = results.iter().map(|(_, r)| r.ops).sum();
                    for (name, r) in results {
                        if let Some(e) = &r.first_error {
                            eprintln!("{target}: {} errors; first: {e}", r.errors);
                        }
                        let secs = r.elapsed.as_secs_f64().max(1e-9);
                        let line = format!(
                            "| {target} | {name} | {clients} | {:.0} | {} | {} | {} | {:.1} | {} |",
                            r.ops as f64 / secs,
                            percentile_ms(&r.latencies, 0.50),
                            percentile_ms(&r.latencies, 0.99),
                            r.errors,
                            cpu * 1e6 / all_ops.max(1) as f64,
                            r.notes
                        );
                        eprintln!("{line}");
                        writeln!(table, "{line}").expect("write");
                    }
                }
            }
        });
        drop(cluster);
    }
    println!("\n{table}");
}
