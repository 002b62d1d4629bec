//! Jepsen-style faults on the whole server: three real `keel serve`
//! processes, each on its own 127.0.0.N, their peer traffic through fault
//! proxies of our own; concurrent clients run a register workload (get,
//! put, compare-and-swap on a few keys, through any member) while a
//! nemesis kills and restarts members (SIGKILL), pauses them
//! (SIGSTOP/SIGCONT), and cuts them off from their peers. Then everything
//! heals, and the history must be linearizable (keel-check) and every
//! member must hold the same data (HashKV at one revision).
//!
//! `cargo test` runs about 20 s of faults; `KEEL_FAULTS_SOAK=600` runs ten
//! minutes. `KEEL_FAULTS_SEED` replays a fault schedule (the seed is
//! printed); the history, the fault timeline and the members' logs are
//! left in a folder whose path a failure prints.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::request_op::Request as RequestKind;
use keel_api::etcdserverpb::*;
use keel_check::{linearizable, Input, Operation, Output};
use keel_testkit::proxy::{Faults, Proxy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const MEMBERS: usize = 3;
const KEYS: [&str; 3] = ["r0", "r1", "r2"];
const CLIENTS: usize = 6;

fn ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, i as u8 + 1])
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One member: where it listens, and its process.
struct Member {
    client: SocketAddr,
    peer: SocketAddr,
    /// Where the others reach its peer port: its proxy.
    advertised: SocketAddr,
    process: Option<Child>,
    paused: bool,
}

struct World {
    dir: PathBuf,
    members: Vec<Member>,
    proxies: Vec<Proxy>,
    initial: String,
    timeline: String,
    started: Instant,
}

impl World {
    async fn new(dir: PathBuf) -> World {
        let mut members = Vec::new();
        let mut proxies = Vec::new();
        for i in 0..MEMBERS {
            let client = SocketAddr::new(ip(i), free_port(ip(i)));
            let peer = SocketAddr::new(ip(i), free_port(ip(i)));
            let proxy = Proxy::start(SocketAddr::new(ip(i), 0), peer)
                .await
                .expect("a proxy");
            members.push(Member {
                client,
                peer,
                advertised: proxy.addr(),
                process: None,
                paused: false,
            });
            proxies.push(proxy);
        }
        let initial = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://{}", m.advertised))
            .collect::<Vec<_>>()
            .join(",");
        let mut world = World {
            dir,
            members,
            proxies,
            initial,
            timeline: String::new(),
            started: Instant::now(),
        };
        for i in 0..MEMBERS {
            world.spawn(i);
        }
        world
    }

    fn note(&mut self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.timeline, "{at:8.3}s {what}");
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("m{i}.log")))
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["serve", "--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-url", &format!("http://{}", m.peer)])
            .args(["--advertise-peer-url", &format!("http://{}", m.advertised)])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "faults"])
            .args([
                "--heartbeat-interval-ms",
                "50",
                "--election-timeout-ms",
                "500",
            ])
            .args(["--log-format", "text"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("keel starts");
        self.members[i].process = Some(child);
        self.members[i].paused = false;
    }

    fn signal(&self, i: usize, signal: i32) {
        if let Some(child) = &self.members[i].process {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.note(format!("kill -9 m{i}"));
    }

    fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].paused = true;
        self.note(format!("SIGSTOP m{i}"));
    }

    /// Cuts member `i` off from every peer, both ways.
    fn isolate(&mut self, i: usize) {
        for j in 0..MEMBERS {
            if j != i {
                self.proxies[j].set_from(ip(i), Faults::cut());
                self.proxies[i].set_from(ip(j), Faults::cut());
            }
        }
        self.note(format!("isolate m{i}"));
    }

    /// Ends every fault: links healed, paused members resumed, killed ones
    /// restarted.
    fn heal(&mut self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
        for i in 0..MEMBERS {
            if self.members[i].paused {
                self.signal(i, libc::SIGCONT);
                self.members[i].paused = false;
            }
            if self.members[i].process.is_none() {
                self.spawn(i);
            }
        }
        self.note("heal".into());
    }

    fn stop_all(&mut self) {
        for i in 0..MEMBERS {
            self.signal(i, libc::SIGCONT);
            if let Some(mut child) = self.members[i].process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn channel(addr: SocketAddr) -> Option<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// The history the clients record, with times in nanoseconds since `zero`.
#[derive(Default)]
struct Recorder {
    ops: Vec<Operation>,
}

fn since(zero: Instant) -> u64 {
    zero.elapsed().as_nanos() as u64
}

/// One client: random operations on random keys through random members
/// until `until`.
async fn client(
    id: usize,
    addrs: Vec<SocketAddr>,
    seed: u64,
    zero: Instant,
    until: Instant,
    history: Arc<Mutex<Recorder>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9));
    let mut channels: HashMap<usize, Channel> = HashMap::new();
    let mut n = 0u64;
    while Instant::now() < until {
        let member = rng.random_range(0..addrs.len());
        let channel = match channels.get(&member) {
            Some(c) => c.clone(),
            None => match channel(addrs[member]).await {
                Some(c) => {
                    channels.insert(member, c.clone());
                    c
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut kv = KvClient::new(channel);
        let key = KEYS[rng.random_range(0..KEYS.len())];
        n += 1;
        let value = format!("c{id}-{n}");
        let input = match rng.random_range(0..3) {
            0 => Input::Get,
            1 => Input::Put(value.clone()),
            _ => Input::Cas {
                expect: Some(format!(
                    "c{}-{}",
                    rng.random_range(0..CLIENTS),
                    rng.random_range(1..=n)
                )),
                new: Some(value.clone()),
            },
        };
        let call = since(zero);
        let answer: Result<Output, tonic::Status> = match &input {
            Input::Get => kv
                .range(RangeRequest {
                    key: Bytes::from(key),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    let kvs = r.into_inner().kvs;
                    Output::Value(
                        kvs.first()
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                    )
                }),
            Input::Put(v) => kv
                .put(PutRequest {
                    key: Bytes::from(key),
                    value: Bytes::from(v.clone()),
                    ..Default::default()
                })
                .await
                .map(|_| Output::Done),
            Input::Cas { expect, new } => kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        key: Bytes::from(key),
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        target_union: Some(TargetUnion::Value(Bytes::from(
                            expect.clone().unwrap_or_default(),
                        ))),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(RequestKind::RequestPut(PutRequest {
                            key: Bytes::from(key),
                            value: Bytes::from(new.clone().unwrap_or_default()),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await
                .map(|r| Output::Swapped(r.into_inner().succeeded)),
            Input::Delete => unreachable!("not generated"),
        };
        let ret = since(zero);
        let op = match answer {
            Ok(output) => Some(Operation {
                client: id,
                key: key.into(),
                input,
                output,
                call,
                ret: Some(ret),
            }),
            // A failed read changed nothing: it is left out.
            Err(_) if input == Input::Get => None,
            // A failed write may still have been applied.
            Err(_) => Some(Operation {
                client: id,
                key: key.into(),
                input,
                output: Output::Unknown,
                call,
                ret: None,
            }),
        };
        if let Some(op) = op {
            history.lock().unwrap().ops.push(op);
        }
        if rng.random_bool(0.2) {
            channels.remove(&member);
        }
    }
}

/// Random faults until `until`, one at a time, each healed before the
/// next.
async fn nemesis(world: &mut World, seed: u64, until: Instant) {
    let mut rng = StdRng::seed_from_u64(seed);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let victim = rng.random_range(0..MEMBERS);
        match rng.random_range(0..3) {
            0 => world.kill(victim),
            1 => world.pause(victim),
            _ => world.isolate(victim),
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        world.heal();
    }
}

/// Waits until every member answers and they agree on one HashKV at one
/// revision; panics after a while.
async fn hashes_agree(world: &World) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut revisions = Vec::new();
        let mut clients = Vec::new();
        for m in &world.members {
            let Some(channel) = channel(m.client).await else {
                break;
            };
            let mut maintenance = MaintenanceClient::new(channel);
            match maintenance.status(StatusRequest {}).await {
                Ok(s) => revisions.push(s.into_inner().header.map_or(0, |h| h.revision)),
                Err(_) => break,
            }
            clients.push(maintenance);
        }
        if revisions.len() < MEMBERS || revisions.iter().any(|r| *r != revisions[0]) {
            last = format!("revisions {revisions:?}");
            continue;
        }
        let mut hashes = Vec::new();
        for c in &mut clients {
            match c
                .hash_kv(HashKvRequest {
                    revision: revisions[0],
                })
                .await
            {
                Ok(h) => hashes.push(Ok(h.into_inner().hash)),
                Err(e) => hashes.push(Err(e.message().to_string())),
            }
        }
        if hashes.iter().all(|h| h.is_ok() && *h == hashes[0]) {
            return Ok(());
        }
        last = format!("hashes {hashes:?} at revision {}", revisions[0]);
    }
    Err(format!("members never agreed: {last}"))
}

fn write(dir: &Path, name: &str, text: &str) {
    let _ = std::fs::write(dir.join(name), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_workload_under_kills_pauses_and_partitions_stays_linearizable() {
    let secs: u64 = std::env::var("KEEL_FAULTS_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("KEEL_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let dir = tempfile::Builder::new()
        .prefix("keel-faults-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let replay = format!(
        "KEEL_FAULTS_SEED={seed} KEEL_FAULTS_SOAK={secs} cargo test -p keel-server --test faults"
    );
    eprintln!(
        "faults: seed {seed}, {secs} s; the run is kept in {}",
        dir.display()
    );
    let mut world = World::new(dir.clone()).await;
    // A leader first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let zero = Instant::now();
    let until = zero + Duration::from_secs(secs);
    let history = Arc::new(Mutex::new(Recorder::default()));
    let addrs: Vec<SocketAddr> = world.members.iter().map(|m| m.client).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                addrs.clone(),
                seed,
                zero,
                until,
                history.clone(),
            ))
        })
        .collect();
    nemesis(&mut world, seed, until).await;
    world.heal();
    for c in clients {
        c.await.expect("a client");
    }
    let ops = std::mem::take(&mut history.lock().unwrap().ops);
    let agreed = hashes_agree(&world).await;
    let history_text: String = ops.iter().map(|op| format!("{op}\n")).collect();
    write(&dir, "history.txt", &history_text);
    write(&dir, "timeline.txt", &world.timeline);
    let unknown = ops.iter().filter(|op| op.is_unknown()).count();
    eprintln!(
        "faults: {} operations ({unknown} with unknown outcome), faults:\n{}",
        ops.len(),
        world.timeline
    );
    assert!(
        ops.iter().filter(|op| !op.is_unknown()).count() > 50,
        "too few operations completed to check anything; see {}",
        dir.display()
    );
    if let Err(violation) = linearizable(&ops) {
        panic!(
            "not linearizable (seed {seed}; replay: {replay}; run in {}):\n{violation}",
            dir.display()
        );
    }
    if let Err(why) = agreed {
        panic!(
            "{why} (seed {seed}; replay: {replay}; run in {})",
            dir.display()
        );
    }
    world.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
}
