//! `keel bench`: load for any etcd v3 endpoints, in the spirit of etcd's
//! `benchmark` tool.
//!
//! C clients (`--clients`) share N HTTP/2 connections (`--conns`), the
//! connections spread round-robin over the endpoints as etcd's tool does,
//! so a write may land on a follower and be forwarded. Each client sends
//! one request at a time; the run stops after `--total` requests between
//! them or after `--duration` seconds, optionally paced to `--rate`
//! requests per second across all clients. The report gives ops/s, the
//! latency percentiles and the errors (their count and the first distinct
//! messages), as text or, with `--json`, one JSON object.
//!
//! Keys are `--key-size` bytes: a letter naming the operation's key set
//! (`k` for put and get, `c` for txn-cas, `r` for range, `w` for watch)
//! and a zero-padded index below `--key-space`, so `get` reads what `put`
//! wrote and the other operations keep to their own keys.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::*;
use keel_mvcc::prefix_end;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// What `keel bench` measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Put a random key of the key space.
    Put,
    /// Get a random key of the key space (what `put` wrote).
    Get,
    /// A transaction: if the key's mod revision is the one this client
    /// last saw, put it (else read it, to learn the current one). Each
    /// client has keys of its own (every `--clients`-th), so a compare
    /// fails only when something else wrote the key.
    TxnCas,
    /// Read `--range-keys` keys under one prefix, all of them each time.
    Range,
    /// Watchers of a prefix while clients put under it: the latency from
    /// each put's start to each watcher's event, and events/s.
    Watch,
    /// Keep-alives of `--leases` leases on one stream per client.
    LeaseKeepalive,
}

impl Op {
    /// The name on the command line.
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::TxnCas => "txn-cas",
            Op::Range => "range",
            Op::Watch => "watch",
            Op::LeaseKeepalive => "lease-keepalive",
        }
    }

    /// The letter its keys start with.
    fn key_set(self) -> u8 {
        match self {
            Op::Put | Op::Get => b'k',
            Op::TxnCas => b'c',
            Op::Range => b'r',
            Op::Watch => b'w',
            Op::LeaseKeepalive => b'l',
        }
    }
}

/// Read consistency of `get` and `range`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Consistency {
    /// Linearizable: the member confirms it is current first.
    #[value(name = "l", alias = "linearizable")]
    Linearizable,
    /// Serializable: the member answers from what it has.
    #[value(name = "s", alias = "serializable")]
    Serializable,
}

/// `keel bench`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// The operation (or --op).
    #[arg(
        value_enum,
        required_unless_present = "op_flag",
        conflicts_with = "op_flag"
    )]
    op: Option<Op>,
    /// The operation.
    #[arg(long = "op", id = "op_flag", value_enum)]
    op_flag: Option<Op>,
    /// Client endpoints (`host:port` or `http://host:port`, comma-separated);
    /// the connections go round-robin over them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        env = "KEEL_ENDPOINTS"
    )]
    endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight (the writers
    /// of `watch`).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Consistency of get and range: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys the requests pick from.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Stop after this many requests (10,000 unless --duration is given).
    #[arg(long, conflicts_with = "duration")]
    total: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// At most this many requests per second across all clients (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keys under the prefix `range` reads (written first if missing).
    #[arg(long, default_value_t = 1000)]
    range_keys: u64,
    /// Watchers of `watch`.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Watch streams the watchers are spread over (round-robin over the
    /// connections).
    #[arg(long, default_value_t = 10)]
    watch_streams: usize,
    /// Leases `lease-keepalive` grants and keeps alive.
    #[arg(long, default_value_t = 100)]
    leases: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// After this many requests between all clients.
    Total(u64),
    /// After this long.
    Duration(Duration),
}

/// A checked run: [`BenchArgs`] with every value known to make sense.
#[derive(Clone, Debug, PartialEq)]
struct Plan {
    op: Op,
    /// `http://host:port` URLs.
    endpoints: Vec<String>,
    clients: usize,
    conns: usize,
    consistency: Consistency,
    key_size: usize,
    val_size: usize,
    key_space: u64,
    stop: Stop,
    /// Requests per second across clients, if limited.
    rate: Option<f64>,
    range_keys: u64,
    watchers: usize,
    watch_streams: usize,
    leases: usize,
    json: bool,
}

/// The number of decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl BenchArgs {
    /// Checks the arguments; the error says which one is wrong and why.
    fn plan(self) -> anyhow::Result<Plan> {
        let Some(op) = self.op.or(self.op_flag) else {
            bail!("name an operation: put, get, txn-cas, range, watch or lease-keepalive");
        };
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.starts_with("https://") {
                    bail!("--endpoints {e}: keel bench speaks plain http only");
                }
                Ok(if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            bail!("--endpoints: give at least one endpoint");
        }
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.conns == 0 {
            bail!("--conns must be at least 1");
        }
        if self.key_space == 0 {
            bail!("--key-space must be at least 1");
        }
        let keys = if op == Op::Range {
            self.range_keys
        } else {
            self.key_space
        };
        if keys == 0 {
            bail!("--range-keys must be at least 1");
        }
        let needed = 1 + digits(keys - 1);
        if self.key_size < needed {
            bail!(
                "--key-size {} cannot hold {keys} distinct keys: it needs {needed} bytes \
                 (a letter and {} digits)",
                self.key_size,
                needed - 1
            );
        }
        if op == Op::Watch {
            if self.val_size < 8 {
                bail!("--val-size must be at least 8 for watch (the put's start time)");
            }
            if self.watchers == 0 || self.watch_streams == 0 {
                bail!("--watchers and --watch-streams must be at least 1");
            }
        }
        if op == Op::TxnCas && self.clients as u64 > self.key_space {
            bail!("txn-cas: --key-space must be at least --clients (each client has its keys)");
        }
        if op == Op::LeaseKeepalive && self.leases == 0 {
            bail!("--leases must be at least 1");
        }
        let stop = match (self.total, self.duration) {
            (Some(0), _) => bail!("--total must be at least 1"),
            (Some(n), _) => Stop::Total(n),
            (None, Some(secs)) if secs.is_finite() && secs > 0.0 => {
                Stop::Duration(Duration::from_secs_f64(secs))
            }
            (None, Some(secs)) => bail!("--duration {secs}: give a positive number of seconds"),
            (None, None) => Stop::Total(10_000),
        };
        if !self.rate.is_finite() || self.rate < 0.0 {
            bail!(
                "--rate {}: give 0 (no limit) or a positive number",
                self.rate
            );
        }
        Ok(Plan {
            op,
            endpoints,
            clients: self.clients,
            conns: self.conns,
            consistency: self.consistency,
            key_size: self.key_size,
            val_size: self.val_size,
            key_space: self.key_space,
            stop,
            rate: (self.rate > 0.0).then_some(self.rate),
            range_keys: self.range_keys,
            watchers: self.watchers,
            watch_streams: self.watch_streams.min(self.watchers),
            leases: self.leases,
            json: self.json,
        })
    }
}

/// Key `index` of key set `set`: the letter, then the index zero-padded
/// to `size` bytes in all.
fn key(set: u8, index: u64, size: usize) -> Bytes {
    let mut key = Vec::with_capacity(size);
    key.push(set);
    key.extend_from_slice(format!("{index:0>width$}", width = size.saturating_sub(1)).as_bytes());
    Bytes::from(key)
}

/// Client `client`'s (of `clients`) key nearest below `random` (any
/// index below `key_space`): the clients own every `clients`-th key.
fn owned_key(random: u64, client: u64, clients: u64, key_space: u64) -> u64 {
    let index = random - random % clients + client;
    if index < key_space {
        index
    } else {
        index - clients
    }
}

/// The latency at percentile `p` (0 to 1) of `sorted` (ascending), by
/// the nearest-rank method; `None` when there is none.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// At most this many distinct error messages are kept.
const MAX_MESSAGES: usize = 5;

/// What one client (or watch stream) measured.
#[derive(Default, Debug)]
struct Tally {
    /// Latencies of the successful requests, in microseconds.
    latencies_us: Vec<u32>,
    /// Failed requests.
    errors: u64,
    /// The first distinct error messages.
    messages: Vec<String>,
    /// txn-cas transactions whose compare failed.
    cas_failed: u64,
}

impl Tally {
    /// A success that took `took`.
    fn ok(&mut self, took: Duration) {
        self.latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    /// A failure.
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.messages.len() < MAX_MESSAGES && !self.messages.contains(&message) {
            self.messages.push(message);
        }
    }

    /// Adds `other`'s counts to this one's.
    fn merge(&mut self, mut other: Tally) {
        self.latencies_us.append(&mut other.latencies_us);
        self.errors += other.errors;
        self.cas_failed += other.cas_failed;
        for message in other.messages {
            if self.messages.len() < MAX_MESSAGES && !self.messages.contains(&message) {
                self.messages.push(message);
            }
        }
    }
}

/// A gRPC error as the report shows it.
fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Latency percentiles in milliseconds (`null` in JSON when nothing
/// succeeded).
#[derive(Serialize, Debug, PartialEq)]
struct Latency {
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
    #[serde(rename = "p99.9")]
    p999: Option<f64>,
    max: Option<f64>,
}

impl Latency {
    /// The percentiles of `latencies_us`, which this sorts.
    fn of(latencies_us: &mut [u32]) -> Latency {
        latencies_us.sort_unstable();
        let ms = |p: f64| percentile(latencies_us, p).map(|us| f64::from(us) / 1000.0);
        Latency {
            p50: ms(0.50),
            p90: ms(0.90),
            p99: ms(0.99),
            p999: ms(0.999),
            max: ms(1.0),
        }
    }
}

/// The result of a run, as `--json` prints it.
#[derive(Serialize, Debug)]
struct Report {
    op: &'static str,
    endpoints: Vec<String>,
    clients: usize,
    conns: usize,
    /// `l` or `s` for get and range.
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<&'static str>,
    key_size: usize,
    val_size: usize,
    key_space: u64,
    /// Successful requests (watch: events delivered).
    ops: u64,
    /// Failed requests.
    errors: u64,
    /// The first distinct error messages.
    error_messages: Vec<String>,
    /// From the first request to the last answer.
    seconds: f64,
    ops_per_sec: f64,
    latency_ms: Latency,
    /// txn-cas: transactions whose compare failed (counted in `ops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cas_failed: Option<u64>,
    /// watch: watchers, puts made and events expected (puts × watchers).
    #[serde(skip_serializing_if = "Option::is_none")]
    watchers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    puts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events_expected: Option<u64>,
}

impl Report {
    /// The report of `plan`'s run that measured `tally` over `elapsed`.
    fn new(plan: &Plan, mut tally: Tally, elapsed: Duration) -> Report {
        let ops = tally.latencies_us.len() as u64;
        let seconds = elapsed.as_secs_f64();
        Report {
            op: plan.op.name(),
            endpoints: plan.endpoints.clone(),
            clients: plan.clients,
            conns: plan.conns,
            consistency: matches!(plan.op, Op::Get | Op::Range).then_some(match plan.consistency {
                Consistency::Linearizable => "l",
                Consistency::Serializable => "s",
            }),
            key_size: plan.key_size,
            val_size: plan.val_size,
            key_space: plan.key_space,
            ops,
            errors: tally.errors,
            error_messages: tally.messages,
            seconds,
            ops_per_sec: if seconds > 0.0 {
                ops as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&mut tally.latencies_us),
            cas_failed: (plan.op == Op::TxnCas).then_some(tally.cas_failed),
            watchers: None,
            puts: None,
            events_expected: None,
        }
    }

    /// The report as text.
    fn text(&self) -> String {
        let (unit, clients) = if self.op == "watch" {
            ("events", "writers")
        } else {
            ("ops", "clients")
        };
        let mut out = format!(
            "{}{}: {} {unit} in {:.2} s, {:.0} {unit}/s ({} {clients} on {} connections to {} endpoints)\n",
            self.op,
            self.consistency.map_or(String::new(), |c| format!(" ({c})")),
            self.ops,
            self.seconds,
            self.ops_per_sec,
            self.clients,
            self.conns,
            self.endpoints.len()
        );
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let l = &self.latency_ms;
        out += &format!(
            "latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        if let Some(failed) = self.cas_failed {
            out += &format!("compare failed: {failed}\n");
        }
        if let (Some(watchers), Some(puts), Some(expected)) =
            (self.watchers, self.puts, self.events_expected)
        {
            out += &format!("{watchers} watchers, {puts} puts, {expected} events expected\n");
        }
        out += &format!("errors: {}\n", self.errors);
        for message in &self.error_messages {
            out += &format!("  {message}\n");
        }
        out
    }
}

/// Spaces requests `1/rate` apart across all clients.
struct Pacer {
    start: Instant,
    interval: Duration,
    next: AtomicU64,
}

impl Pacer {
    /// A pacer of `rate` requests per second from `start`.
    fn new(rate: f64, start: Instant) -> Pacer {
        Pacer {
            start,
            interval: Duration::from_secs_f64(1.0 / rate),
            next: AtomicU64::new(0),
        }
    }

    /// When request `n` (from 0) may start.
    fn slot(&self, n: u64) -> Instant {
        self.start + self.interval.mul_f64(n as f64)
    }

    /// Waits for the next free slot.
    async fn wait(&self) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(self.slot(n).into()).await;
    }
}

/// The requests left to a run.
enum Budget {
    /// This many between all clients.
    Left(AtomicU64),
    /// Until then.
    Until(Instant),
}

impl Budget {
    /// The budget of `stop` for a run starting at `start`.
    fn new(stop: Stop, start: Instant) -> Budget {
        match stop {
            Stop::Total(n) => Budget::Left(AtomicU64::new(n)),
            Stop::Duration(d) => Budget::Until(start + d),
        }
    }

    /// Whether one more request may be sent (and counts it).
    fn take(&self) -> bool {
        match self {
            Budget::Left(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            Budget::Until(deadline) => Instant::now() < *deadline,
        }
    }
}

/// Counters the progress line shows while a run goes on.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    errors: AtomicU64,
}

/// What every client of a run shares.
struct Shared {
    start: Instant,
    budget: Budget,
    pacer: Option<Pacer>,
    progress: Progress,
}

impl Shared {
    /// The shared state of `plan`'s run, starting now.
    fn new(plan: &Plan) -> Arc<Shared> {
        let start = Instant::now();
        Arc::new(Shared {
            start,
            budget: Budget::new(plan.stop, start),
            pacer: plan.rate.map(|rate| Pacer::new(rate, start)),
            progress: Progress::default(),
        })
    }
}

/// Prints a self-updating progress line on stderr while the run goes on,
/// if stderr is a terminal; stopped (and the line cleared) when dropped.
struct ProgressLine(Option<tokio::task::JoinHandle<()>>);

impl ProgressLine {
    fn start(plan: &Plan, shared: Arc<Shared>) -> ProgressLine {
        if !std::io::stderr().is_terminal() {
            return ProgressLine(None);
        }
        let (op, stop) = (plan.op.name(), plan.stop);
        ProgressLine(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let elapsed = shared.start.elapsed();
                let done = shared.progress.done.load(Ordering::Relaxed);
                let fraction = match stop {
                    Stop::Total(n) => done as f64 / n as f64,
                    Stop::Duration(d) => elapsed.as_secs_f64() / d.as_secs_f64(),
                }
                .clamp(0.0, 1.0);
                let filled = (fraction * 30.0) as usize;
                eprint!(
                    "\r\x1b[K{op} [{}{}] {done} requests, {:.0}/s, {} errors, {:.1} s",
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    done as f64 / elapsed.as_secs_f64().max(1e-3),
                    shared.progress.errors.load(Ordering::Relaxed),
                    elapsed.as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        })))
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            eprint!("\r\x1b[K");
        }
    }
}

/// How a request that got an answer went.
enum Outcome {
    Done,
    /// A txn-cas whose compare failed.
    CasFailed,
}

/// One client's request loop and its state.
enum Worker {
    Put {
        kv: KvClient<Channel>,
        rng: SmallRng,
        value: Bytes,
    },
    Get {
        kv: KvClient<Channel>,
        rng: SmallRng,
        serializable: bool,
    },
    TxnCas {
        kv: KvClient<Channel>,
        /// Which client: its keys are those of this index modulo the clients.
        client: u64,
        rng: SmallRng,
        value: Bytes,
        /// The mod revision this client last saw of each key (0: none).
        seen: HashMap<u64, i64>,
    },
    Range {
        kv: KvClient<Channel>,
        request: RangeRequest,
    },
    /// A writer of `watch`: puts whose value starts with the time since
    /// `origin`, in nanoseconds (little-endian).
    WatchedPut {
        kv: KvClient<Channel>,
        rng: SmallRng,
        origin: Instant,
        padding: Bytes,
    },
    /// Keep-alives of `leases` in turn on one stream, opened with the
    /// first request (etcd answers the stream's opening only then).
    KeepAlive {
        lease: LeaseClient<Channel>,
        stream: Option<KeepAliveStream>,
        leases: Vec<i64>,
        next: usize,
    },
}

/// An open keep-alive stream: where requests go, where answers come from.
type KeepAliveStream = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    tonic::Streaming<LeaseKeepAliveResponse>,
);

impl Worker {
    /// Sends one request and waits for its answer.
    async fn step(&mut self, plan: &Plan) -> Result<Outcome, String> {
        let pick = |rng: &mut SmallRng| {
            key(
                plan.op.key_set(),
                rng.random_range(0..plan.key_space),
                plan.key_size,
            )
        };
        match self {
            Worker::Put { kv, rng, value } => {
                let put = PutRequest {
                    key: pick(rng),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(put).await.map_err(|e| describe(&e))?;
            }
            Worker::Get {
                kv,
                rng,
                serializable,
            } => {
                let get = RangeRequest {
                    key: pick(rng),
                    serializable: *serializable,
                    ..Default::default()
                };
                kv.range(get).await.map_err(|e| describe(&e))?;
            }
            Worker::TxnCas {
                kv,
                client,
                rng,
                value,
                seen,
            } => {
                let (clients, space) = (plan.clients as u64, plan.key_space);
                let index = owned_key(rng.random_range(0..space), *client, clients, space);
                let key = key(plan.op.key_set(), index, plan.key_size);
                let expected = seen.get(&index).copied().unwrap_or(0);
                let txn = cas(key, expected, value.clone());
                let answer = kv.txn(txn).await.map_err(|e| describe(&e))?.into_inner();
                if answer.succeeded {
                    let revision = answer.header.map_or(0, |h| h.revision);
                    seen.insert(index, revision);
                } else {
                    let current = answer
                        .responses
                        .into_iter()
                        .find_map(|r| match r.response {
                            Some(response_op::Response::ResponseRange(range)) => {
                                Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
                            }
                            _ => None,
                        })
                        .unwrap_or(0);
                    seen.insert(index, current);
                    return Ok(Outcome::CasFailed);
                }
            }
            Worker::Range { kv, request } => {
                kv.range(request.clone()).await.map_err(|e| describe(&e))?;
            }
            Worker::WatchedPut {
                kv,
                rng,
                origin,
                padding,
            } => {
                let sent = origin.elapsed().as_nanos() as u64;
                let mut value = Vec::with_capacity(8 + padding.len());
                value.extend_from_slice(&sent.to_le_bytes());
                value.extend_from_slice(padding);
                let put = PutRequest {
                    key: pick(rng),
                    value: value.into(),
                    ..Default::default()
                };
                kv.put(put).await.map_err(|e| describe(&e))?;
            }
            Worker::KeepAlive {
                lease,
                stream,
                leases,
                next,
            } => {
                let id = leases[*next % leases.len()];
                *next += 1;
                let request = LeaseKeepAliveRequest { id };
                let responses = match stream {
                    Some((requests, responses)) => {
                        requests
                            .send(request)
                            .await
                            .map_err(|_| "keep-alive stream closed".to_string())?;
                        responses
                    }
                    None => {
                        let (requests, queued) = mpsc::channel(1);
                        let _ = requests.send(request).await;
                        let responses = lease
                            .lease_keep_alive(ReceiverStream::new(queued))
                            .await
                            .map_err(|e| describe(&e))?
                            .into_inner();
                        &mut stream.insert((requests, responses)).1
                    }
                };
                match responses.message().await {
                    Ok(Some(answer)) if answer.ttl > 0 => {}
                    Ok(Some(_)) => return Err(format!("lease {id:x} not found")),
                    Ok(None) => return Err("keep-alive stream ended".into()),
                    Err(e) => return Err(describe(&e)),
                }
            }
        }
        Ok(Outcome::Done)
    }
}

/// A transaction: if `key`'s mod revision is `expected` (0: it does not
/// exist), put `value`; else read the key.
fn cas(key: Bytes, expected: i64, value: Bytes) -> TxnRequest {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            range_end: Bytes::new(),
            target_union: Some(TargetUnion::ModRevision(expected)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// Runs `worker` until the budget is spent.
async fn drive(mut worker: Worker, plan: Arc<Plan>, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    while shared.budget.take() {
        if let Some(pacer) = &shared.pacer {
            pacer.wait().await;
        }
        let started = Instant::now();
        match worker.step(&plan).await {
            Ok(outcome) => {
                tally.ok(started.elapsed());
                if let Outcome::CasFailed = outcome {
                    tally.cas_failed += 1;
                }
            }
            Err(message) => {
                tally.error(message);
                shared.progress.errors.fetch_add(1, Ordering::Relaxed);
                // Don't spin on a member that is down.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        shared.progress.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Runs the workers to the end of the budget: what they measured and how
/// long it took.
async fn run_workers(plan: &Arc<Plan>, workers: Vec<Worker>) -> anyhow::Result<(Tally, Duration)> {
    let shared = Shared::new(plan);
    let progress = ProgressLine::start(plan, shared.clone());
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(drive(worker, plan.clone(), shared.clone())))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a client task failed")?);
    }
    let elapsed = shared.start.elapsed();
    drop(progress);
    Ok((tally, elapsed))
}

/// `plan.conns` connections, round-robin over the endpoints.
async fn connect(plan: &Plan) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(plan.conns);
    for i in 0..plan.conns {
        let url = &plan.endpoints[i % plan.endpoints.len()];
        let channel = Channel::from_shared(url.clone())
            .with_context(|| format!("endpoint {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// A KV client on connection `i` (of `channels`, round-robin).
fn kv(channels: &[Channel], i: usize) -> KvClient<Channel> {
    KvClient::new(channels[i % channels.len()].clone()).max_decoding_message_size(256 << 20)
}

/// A per-client random generator, different for every client and run.
fn rng(client: usize) -> SmallRng {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    SmallRng::seed_from_u64(seed ^ ((client as u64 + 1) << 32))
}

/// Runs `plan` against its endpoints.
async fn execute(plan: Plan) -> anyhow::Result<Report> {
    let plan = Arc::new(plan);
    let channels = connect(&plan).await?;
    let value = Bytes::from(vec![b'v'; plan.val_size]);
    let serializable = plan.consistency == Consistency::Serializable;
    let workers: Vec<Worker> = match plan.op {
        Op::Watch => return watch(&plan, &channels).await,
        Op::Put => (0..plan.clients)
            .map(|c| Worker::Put {
                kv: kv(&channels, c),
                rng: rng(c),
                value: value.clone(),
            })
            .collect(),
        Op::Get => (0..plan.clients)
            .map(|c| Worker::Get {
                kv: kv(&channels, c),
                rng: rng(c),
                serializable,
            })
            .collect(),
        Op::TxnCas => (0..plan.clients)
            .map(|c| Worker::TxnCas {
                kv: kv(&channels, c),
                client: c as u64,
                rng: rng(c),
                value: value.clone(),
                seen: HashMap::new(),
            })
            .collect(),
        Op::Range => {
            fill_range(&plan, &channels, &value).await?;
            let prefix = [plan.op.key_set()];
            let request = RangeRequest {
                key: Bytes::copy_from_slice(&prefix),
                range_end: prefix_end(&prefix),
                serializable,
                ..Default::default()
            };
            (0..plan.clients)
                .map(|c| Worker::Range {
                    kv: kv(&channels, c),
                    request: request.clone(),
                })
                .collect()
        }
        Op::LeaseKeepalive => {
            let leases = grant_leases(&plan, &channels).await?;
            let mut workers = Vec::with_capacity(plan.clients);
            for c in 0..plan.clients {
                // Client c keeps alive every clients-th lease from c (all
                // of them when there are more clients than leases).
                let mine: Vec<i64> = leases
                    .iter()
                    .copied()
                    .skip(c % leases.len())
                    .step_by(plan.clients)
                    .collect();
                workers.push(Worker::KeepAlive {
                    lease: LeaseClient::new(channels[c % channels.len()].clone()),
                    stream: None,
                    leases: mine,
                    next: 0,
                });
            }
            let measured = run_workers(&plan, workers).await?;
            revoke_leases(&channels, &leases).await;
            return Ok(Report::new(&plan, measured.0, measured.1));
        }
    };
    let (tally, elapsed) = run_workers(&plan, workers).await?;
    Ok(Report::new(&plan, tally, elapsed))
}

/// Writes the keys `range` reads unless they are all there already.
async fn fill_range(plan: &Plan, channels: &[Channel], value: &Bytes) -> anyhow::Result<()> {
    let prefix = [plan.op.key_set()];
    let count = kv(channels, 0)
        .range(RangeRequest {
            key: Bytes::copy_from_slice(&prefix),
            range_end: prefix_end(&prefix),
            count_only: true,
            ..Default::default()
        })
        .await
        .context("counting the range's keys")?
        .into_inner()
        .count;
    if count >= plan.range_keys as i64 {
        return Ok(());
    }
    const WRITERS: u64 = 16;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut kv = kv(channels, w as usize);
        let (value, size, keys) = (value.clone(), plan.key_size, plan.range_keys);
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(WRITERS as usize) {
                let put = PutRequest {
                    key: key(b'r', i, size),
                    value: value.clone(),
                    ..Default::default()
                };
                kv.put(put).await.map_err(|e| describe(&e))?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await?
            .map_err(|e| anyhow::anyhow!("writing the range's keys: {e}"))?;
    }
    Ok(())
}

/// Grants `plan.leases` leases of a minute, a few at a time.
async fn grant_leases(plan: &Plan, channels: &[Channel]) -> anyhow::Result<Vec<i64>> {
    let granters = plan.clients.clamp(1, 16);
    let mut tasks = Vec::new();
    for g in 0..granters {
        let mut lease = LeaseClient::new(channels[g % channels.len()].clone());
        let count = (g..plan.leases).step_by(granters).count();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                let granted = lease
                    .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
                    .await
                    .map_err(|e| describe(&e))?;
                ids.push(granted.into_inner().id);
            }
            Ok::<_, String>(ids)
        }));
    }
    let mut leases = Vec::with_capacity(plan.leases);
    for task in tasks {
        leases.extend(
            task.await?
                .map_err(|e| anyhow::anyhow!("granting leases: {e}"))?,
        );
    }
    Ok(leases)
}

/// Revokes the leases of a run (best effort: they expire anyway).
async fn revoke_leases(channels: &[Channel], leases: &[i64]) {
    let mut lease = LeaseClient::new(channels[0].clone());
    for &id in leases {
        let _ = lease.lease_revoke(LeaseRevokeRequest { id }).await;
    }
}

/// `watch`: `plan.watchers` watchers of the watch key set's prefix on
/// `plan.watch_streams` streams, while `plan.clients` writers put under
/// it; every event's latency from its put's start.
async fn watch(plan: &Arc<Plan>, channels: &[Channel]) -> anyhow::Result<Report> {
    let origin = Instant::now();
    let prefix = [plan.op.key_set()];
    let created = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for s in 0..plan.watch_streams {
        let here = plan.watchers / plan.watch_streams
            + usize::from(s < plan.watchers % plan.watch_streams);
        let (requests, stream) = mpsc::channel(here.max(1));
        for _ in 0..here {
            let create = WatchCreateRequest {
                key: Bytes::copy_from_slice(&prefix),
                range_end: prefix_end(&prefix),
                ..Default::default()
            };
            requests
                .send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
                })
                .await
                .context("queueing a watch")?;
        }
        let mut responses = WatchClient::new(channels[s % channels.len()].clone())
            .watch(ReceiverStream::new(stream))
            .await
            .context("opening a watch stream")?
            .into_inner();
        senders.push(requests);
        let (created, delivered, mut stopped) =
            (created.clone(), delivered.clone(), stopped.clone());
        readers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let response = tokio::select! {
                    response = responses.message() => response,
                    _ = stopped.wait_for(|stop| *stop) => break,
                };
                let response = match response {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        tally.error("watch stream ended".into());
                        break;
                    }
                    Err(e) => {
                        tally.error(describe(&e));
                        break;
                    }
                };
                if response.created {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                if response.canceled {
                    tally.error(format!("watch cancelled: {}", response.cancel_reason));
                }
                let now = origin.elapsed();
                for event in &response.events {
                    let sent = event
                        .kv
                        .as_ref()
                        .and_then(|kv| kv.value.get(..8))
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes);
                    match sent {
                        Some(sent) => tally.ok(now.saturating_sub(Duration::from_nanos(sent))),
                        None => tally.error("an event without a start time".into()),
                    }
                }
                delivered.fetch_add(response.events.len() as u64, Ordering::Relaxed);
            }
            tally
        }));
    }
    let patience = Instant::now() + Duration::from_secs(60);
    while created.load(Ordering::Relaxed) < plan.watchers as u64 {
        if Instant::now() > patience {
            bail!(
                "only {} of {} watches were created in 60 s",
                created.load(Ordering::Relaxed),
                plan.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let padding = Bytes::from(vec![b'v'; plan.val_size - 8]);
    let writers = (0..plan.clients)
        .map(|c| Worker::WatchedPut {
            kv: kv(channels, c),
            rng: rng(c),
            origin,
            padding: padding.clone(),
        })
        .collect();
    let (puts, elapsed) = run_workers(plan, writers).await?;
    let put_count = puts.latencies_us.len() as u64;
    let expected = put_count * plan.watchers as u64;
    // Let the last events arrive: until all have, or none came for a second.
    let (mut last, mut quiet_since) = (0, Instant::now());
    loop {
        let now = delivered.load(Ordering::Relaxed);
        if now >= expected || quiet_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    drop(senders);
    let mut events = Tally {
        errors: puts.errors,
        messages: puts.messages,
        ..Tally::default()
    };
    for reader in readers {
        events.merge(reader.await.context("a watch reader failed")?);
    }
    let mut report = Report::new(plan, events, elapsed);
    report.watchers = Some(plan.watchers);
    report.puts = Some(put_count);
    report.events_expected = Some(expected);
    Ok(report)
}

/// `keel bench`.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let json = plan.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(execute(plan))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The bench's arguments on a command line of their own.
    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan(line: &str) -> anyhow::Result<Plan> {
        let words = std::iter::once("bench").chain(line.split_whitespace());
        Line::try_parse_from(words)?.args.plan()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), Some(50));
        assert_eq!(percentile(&sorted, 0.90), Some(90));
        assert_eq!(percentile(&sorted, 0.99), Some(99));
        assert_eq!(percentile(&sorted, 0.999), Some(100));
        assert_eq!(percentile(&sorted, 1.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        let mut ten: Vec<u32> = (1..=10).rev().map(|ms| ms * 1000).collect();
        let latency = Latency::of(&mut ten);
        assert_eq!(latency.p50, Some(5.0));
        assert_eq!(latency.p90, Some(9.0));
        assert_eq!(latency.p99, Some(10.0));
        assert_eq!(latency.max, Some(10.0));
        assert_eq!(Latency::of(&mut []).p50, None);
    }

    #[test]
    fn keys_are_a_letter_and_a_padded_index() {
        assert_eq!(key(b'k', 42, 8), Bytes::from_static(b"k0000042"));
        assert_eq!(key(b'k', 99_999, 6), Bytes::from_static(b"k99999"));
        assert_eq!(key(b'r', 0, 2), Bytes::from_static(b"r0"));
        for size in [2, 8, 32] {
            assert_eq!(key(b'c', 7, size).len(), size);
        }
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(99_999), 5);
        assert_eq!(digits(100_000), 6);
    }

    #[test]
    fn options_are_checked() {
        let p = plan("put").unwrap();
        assert_eq!(p.op, Op::Put);
        assert_eq!(p.stop, Stop::Total(10_000));
        assert_eq!(p.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!((p.key_size, p.val_size, p.key_space), (8, 256, 100_000));
        assert_eq!(p.rate, None);

        let p =
            plan("--op get --consistency s --endpoints a:1,http://b:2 --duration 1.5 --rate 100")
                .unwrap();
        assert_eq!(p.op, Op::Get);
        assert_eq!(p.consistency, Consistency::Serializable);
        assert_eq!(p.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!(p.stop, Stop::Duration(Duration::from_millis(1500)));
        assert_eq!(p.rate, Some(100.0));
        assert_eq!(plan("txn-cas").unwrap().op, Op::TxnCas);
        assert_eq!(plan("lease-keepalive").unwrap().op, Op::LeaseKeepalive);
        assert_eq!(plan("watch --watchers 3").unwrap().watch_streams, 3);

        let refused = |line: &str, why: &str| {
            let error = format!("{:#}", plan(line).expect_err(line));
            assert!(error.contains(why), "{line}: {error}");
        };
        refused("", "");
        refused("put --op get", "cannot be used with");
        refused("put --total 5 --duration 1", "cannot be used with");
        refused("put --clients 0", "--clients");
        refused("put --conns 0", "--conns");
        refused("put --total 0", "--total");
        refused("put --duration 0", "--duration");
        refused("put --duration=-1", "--duration");
        refused("put --rate=-1", "--rate");
        refused("put --key-size 5", "needs 6 bytes");
        refused("put --key-space 0", "--key-space");
        refused("range --range-keys 1000 --key-size 3", "needs 4 bytes");
        refused("watch --val-size 4", "--val-size");
        refused("watch --watchers 0", "--watchers");
        refused("lease-keepalive --leases 0", "--leases");
        refused("txn-cas --clients 10 --key-space 5", "--key-space");
        refused("put --endpoints https://a:1", "plain http");
        refused("frobnicate", "invalid value");
        assert!(plan("put --key-size 6").is_ok());
    }

    #[test]
    fn txn_cas_clients_own_their_keys() {
        for random in 0..103 {
            for client in 0..10 {
                let index = owned_key(random, client, 10, 103);
                assert!(index < 103);
                assert_eq!(index % 10, client);
                assert!(random.abs_diff(index) < 10);
            }
        }
        assert_eq!(owned_key(7, 0, 1, 8), 7);
    }

    #[test]
    fn budgets_end_runs() {
        let start = Instant::now();
        let budget = Budget::new(Stop::Total(3), start);
        assert!(budget.take() && budget.take() && budget.take());
        assert!(!budget.take());
        assert!(!Budget::new(Stop::Duration(Duration::ZERO), start).take());
        assert!(Budget::new(Stop::Duration(Duration::from_secs(60)), start).take());
    }

    #[test]
    fn the_pacer_spaces_requests() {
        let start = Instant::now();
        let pacer = Pacer::new(100.0, start);
        assert_eq!(pacer.slot(0), start);
        assert_eq!(pacer.slot(100) - start, Duration::from_secs(1));
    }

    #[test]
    fn tallies_keep_the_first_distinct_messages() {
        let mut a = Tally::default();
        a.ok(Duration::from_millis(2));
        a.error("x".into());
        a.error("x".into());
        let mut b = Tally::default();
        for i in 0..10 {
            b.error(format!("e{i}"));
        }
        a.merge(b);
        assert_eq!(a.errors, 12);
        assert_eq!(a.messages, vec!["x", "e0", "e1", "e2", "e3"]);
        assert_eq!(a.latencies_us, vec![2000]);
    }
}
