//! The cluster under test: `keel serve` processes, each on its own
//! 127.0.0.N, their peer ports behind fault proxies, and the faults the
//! nemesis injects into them.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::*;
pub(crate) use keel_testkit::proxy::Faults;
use keel_testkit::proxy::Proxy;
use tonic::transport::Channel;

/// libfaketime, where Debian's `faketime` package puts it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Member `i`'s address.
pub(crate) fn ip(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, i as u8 + 1])
}

/// A free port on `ip`.
fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A channel to a client address, if it connects soon.
pub(crate) async fn channel(addr: SocketAddr) -> Option<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()
}

/// One member: where it listens, and its process.
pub(crate) struct Member {
    pub(crate) client: SocketAddr,
    peer: SocketAddr,
    /// Where the others reach its peer port: its proxy.
    advertised: SocketAddr,
    process: Option<Child>,
    paused: bool,
    /// Its member id, once known.
    pub(crate) id: u64,
    /// Out of the cluster (removed, not yet added back).
    pub(crate) removed: bool,
    /// Added back as a learner and not promoted yet.
    pub(crate) learner: bool,
    /// Its data directory's generation: a member added back starts empty.
    generation: u32,
    /// Starts by joining a running cluster (after being added back).
    joining: bool,
    /// Its libfaketime clock, if its clock can be faked.
    clock: Option<FakeClock>,
}

/// A member's clock under libfaketime: `offset` seconds off true time at
/// the start of its process, running at `rate` since (libfaketime counts
/// the rate from the process start). Every change keeps it continuous: a
/// clock never steps back, as no monotonic clock does (one that did would
/// stall every timer of the process until true time caught up: not a fault
/// a real machine has).
struct FakeClock {
    file: PathBuf,
    /// When its process started.
    started: Instant,
    offset: f64,
    rate: f64,
}

impl FakeClock {
    fn new(file: PathBuf) -> FakeClock {
        let clock = FakeClock {
            file,
            started: Instant::now(),
            offset: 0.0,
            rate: 1.0,
        };
        clock.write();
        clock
    }

    /// How far ahead of true time (negative: behind) the clock is now.
    fn ahead(&self) -> f64 {
        self.offset + (self.rate - 1.0) * self.started.elapsed().as_secs_f64()
    }

    /// Moves the clock `jump` seconds ahead and runs it at `rate` from
    /// now on.
    fn set(&mut self, jump: f64, rate: f64) {
        let ahead = self.ahead() + jump;
        self.offset = ahead - (rate - 1.0) * self.started.elapsed().as_secs_f64();
        self.rate = rate;
        self.write();
    }

    /// A new process starts now, where the clock is, at the normal rate.
    fn restart(&mut self) {
        self.offset = self.ahead();
        self.rate = 1.0;
        self.started = Instant::now();
        self.write();
    }

    /// What libfaketime reads.
    fn spec(&self) -> String {
        format!("{:+.3} x{}", self.offset, self.rate)
    }

    fn write(&self) {
        std::fs::write(&self.file, format!("{}\n", self.spec())).expect("writing a clock file");
    }
}

/// The cluster, the proxies on its peer links, and the fault timeline.
pub(crate) struct World {
    pub(crate) dir: PathBuf,
    pub(crate) members: Vec<Member>,
    proxies: Vec<Proxy>,
    initial: String,
    pub(crate) timeline: String,
    pub(crate) faults: usize,
    started: Instant,
}

impl World {
    /// Starts `n` members; with `fake_clocks` (and libfaketime installed)
    /// each runs under libfaketime, its clock offset in a file. The peer
    /// links' proxies relay gRPC message by message; `seed` drives which
    /// messages a lossy link loses or duplicates.
    pub(crate) async fn new(dir: PathBuf, n: usize, fake_clocks: bool, seed: u64) -> World {
        let fake_clocks = fake_clocks && Path::new(LIBFAKETIME).exists();
        let mut members = Vec::new();
        let mut proxies = Vec::new();
        for i in 0..n {
            let client = SocketAddr::new(ip(i), free_port(ip(i)));
            let peer = SocketAddr::new(ip(i), free_port(ip(i)));
            let proxy = Proxy::start_grpc(SocketAddr::new(ip(i), 0), peer, seed ^ i as u64)
                .await
                .expect("a proxy");
            let clock = fake_clocks.then(|| FakeClock::new(dir.join(format!("m{i}.clock"))));
            members.push(Member {
                client,
                peer,
                advertised: proxy.addr(),
                process: None,
                paused: false,
                id: 0,
                removed: false,
                learner: false,
                generation: 0,
                joining: false,
                clock,
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
            faults: 0,
            started: Instant::now(),
        };
        for i in 0..n {
            world.spawn(i);
        }
        world
    }

    /// Whether the members' clocks can be moved.
    pub(crate) fn clocks_faked(&self) -> bool {
        self.members.iter().all(|m| m.clock.is_some())
    }

    /// Adds a line to the fault timeline.
    pub(crate) fn note(&mut self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.timeline, "{at:8.3}s {what}");
    }

    fn spawn(&mut self, i: usize) {
        if let Some(clock) = &mut self.members[i].clock {
            clock.restart();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("m{i}.log")))
            .expect("a log file");
        let m = &self.members[i];
        let initial = if m.joining {
            // Joining: the members as they are now, itself included.
            self.members
                .iter()
                .enumerate()
                .filter(|(j, other)| *j == i || !other.removed)
                .map(|(j, other)| format!("m{j}=http://{}", other.advertised))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.initial.clone()
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["serve", "--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{i}.{}", m.generation)))
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-url", &format!("http://{}", m.peer)])
            .args(["--advertise-peer-url", &format!("http://{}", m.advertised)])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", "faults"])
            .args([
                "--heartbeat-interval-ms",
                "50",
                "--election-timeout-ms",
                "500",
            ])
            .args(["--log-format", "text"])
            .stdout(Stdio::null())
            .stderr(log);
        if m.joining {
            command.args(["--initial-cluster-state", "existing"]);
        }
        if let Some(clock) = &m.clock {
            command
                .env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", &clock.file)
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = command.spawn().expect("keel starts");
        self.members[i].process = Some(child);
        self.members[i].paused = false;
    }

    fn signal(&self, i: usize, signal: i32) {
        if let Some(child) = &self.members[i].process {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// The members in the cluster (not removed).
    pub(crate) fn in_cluster(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| !self.members[i].removed)
            .collect()
    }

    /// Kills member `i` with SIGKILL.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.faults += 1;
        self.note(format!("kill -9 m{i}"));
    }

    /// Stops member `i` with SIGSTOP (until healed).
    pub(crate) fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].paused = true;
        self.faults += 1;
        self.note(format!("SIGSTOP m{i}"));
    }

    /// Cuts the members of `side` off from the rest, both ways.
    pub(crate) fn partition(&mut self, side: &[usize]) {
        for &i in side {
            for j in 0..self.members.len() {
                if !side.contains(&j) {
                    self.proxies[j].set_from(ip(i), Faults::cut());
                    self.proxies[i].set_from(ip(j), Faults::cut());
                }
            }
        }
        self.faults += 1;
        let side: Vec<String> = side.iter().map(|i| format!("m{i}")).collect();
        self.note(format!("partition {{{}}} from the rest", side.join(", ")));
    }

    /// A bridge: `bridge` hears both halves, which do not hear each other.
    pub(crate) fn bridge(&mut self, left: &[usize], bridge: usize, right: &[usize]) {
        for &l in left {
            for &r in right {
                self.proxies[r].set_from(ip(l), Faults::cut());
                self.proxies[l].set_from(ip(r), Faults::cut());
            }
        }
        self.faults += 1;
        self.note(format!(
            "bridge: {left:?} | m{bridge} | {right:?} (indices), halves cut from each other"
        ));
    }

    /// Cuts what `from` sends to `to` (messages and the replies to them on
    /// `from`'s connections), one way.
    pub(crate) fn cut_one_way(&mut self, from: usize, to: usize) {
        self.proxies[to].set_from(ip(from), Faults::cut());
        self.faults += 1;
        self.note(format!("one-way cut m{from} -> m{to}"));
    }

    /// Sets the link between members `a` and `b`, both ways, to `faults`
    /// (not a fault of the nemesis: a step of a scripted scenario).
    pub(crate) fn set_link(&mut self, a: usize, b: usize, faults: Faults) {
        self.proxies[b].set_from(ip(a), faults);
        self.proxies[a].set_from(ip(b), faults);
    }

    /// Delays every chunk on member `i`'s links (both ways) by `delay`.
    pub(crate) fn slow(&mut self, i: usize, delay: Duration) {
        let slow = Faults {
            delay,
            ..Faults::default()
        };
        self.set_links_of(i, slow);
        self.faults += 1;
        self.note(format!("slow links of m{i}: +{delay:?} a chunk"));
    }

    /// Makes every peer link lose and duplicate the given percentages of
    /// the messages of streaming calls (raft's messages).
    pub(crate) fn lossy(&mut self, lose_percent: u8, duplicate_percent: u8) {
        let lossy = Faults {
            lose_percent,
            duplicate_percent,
            ..Faults::default()
        };
        for proxy in &self.proxies {
            proxy.set(lossy);
        }
        self.faults += 1;
        self.note(format!(
            "lossy links: {lose_percent}% of raft messages lost, {duplicate_percent}% duplicated"
        ));
    }

    /// Raft messages the lossy links lost and duplicated, all proxies'
    /// counts together.
    pub(crate) fn messages_lost_and_duplicated(&self) -> (u64, u64) {
        self.proxies
            .iter()
            .map(Proxy::messages_lost_and_duplicated)
            .fold((0, 0), |(l, d), (pl, pd)| (l + pl, d + pd))
    }

    /// Sets every link of member `i` with the others, both ways, to
    /// `faults`.
    fn set_links_of(&mut self, i: usize, faults: Faults) {
        for j in 0..self.members.len() {
            if j != i {
                self.proxies[j].set_from(ip(i), faults);
                self.proxies[i].set_from(ip(j), faults);
            }
        }
    }

    /// Resets every peer connection of member `i` and refuses new ones for
    /// the fault's duration (the transport reconnects and resends).
    pub(crate) fn reset(&mut self, i: usize) {
        let reset = Faults {
            reset: true,
            ..Faults::default()
        };
        self.set_links_of(i, reset);
        self.faults += 1;
        self.note(format!("reset the peer connections of m{i}"));
    }

    /// Moves member `i`'s clock (wall and monotonic) `jump_secs` ahead and
    /// runs it at `rate` (see [`FakeClock`]).
    pub(crate) fn set_clock(&mut self, i: usize, jump_secs: i64, rate: f64) {
        let Some(clock) = &mut self.members[i].clock else {
            return;
        };
        clock.set(jump_secs as f64, rate);
        let spec = clock.spec();
        self.faults += 1;
        self.note(format!(
            "clock of m{i}: {jump_secs:+} s, x{rate} (libfaketime {spec})"
        ));
    }

    /// The index of a member that every reachable member in the cluster
    /// agrees leads, if one does.
    pub(crate) async fn leader(&self) -> Option<usize> {
        let mut agreed = None;
        for i in self.in_cluster() {
            let status = status(self.members[i].client).await?;
            match agreed {
                None => agreed = Some(status.leader),
                Some(l) if l != status.leader => return None,
                Some(_) => {}
            }
        }
        let leader = agreed.filter(|&l| l != 0)?;
        self.members.iter().position(|m| m.id == leader)
    }

    /// Learns every member's id (once they answer).
    pub(crate) async fn learn_ids(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for i in 0..self.members.len() {
                if self.members[i].id == 0 {
                    if let Some(s) = status(self.members[i].client).await {
                        self.members[i].id = s.header.map_or(0, |h| h.member_id);
                    }
                }
            }
            if self.members.iter().all(|m| m.id != 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the members never all answered with their ids");
    }

    /// Moves leadership from the current leader to member `to`.
    pub(crate) async fn transfer_leader(&mut self, to: usize) {
        let Some(leader) = self.leader().await else {
            self.note("transfer: no leader agreed on, skipped".into());
            return;
        };
        let Some(c) = channel(self.members[leader].client).await else {
            return;
        };
        let answer = MaintenanceClient::new(c)
            .move_leader(MoveLeaderRequest {
                target_id: self.members[to].id,
            })
            .await;
        self.faults += 1;
        self.note(format!(
            "move leader m{leader} -> m{to}: {}",
            answer.map_or_else(|e| e.message().to_string(), |_| "ok".into())
        ));
    }

    /// Makes a membership change through any member in the cluster but
    /// `skip`, trying them in turn for up to 20 s, until it is seen to have
    /// happened: by its answer or, when the answer is lost (the change may
    /// still have gone through), by the member list. Returns the member
    /// list after it, or the distinct errors seen.
    async fn change_membership<F, Fut>(
        &self,
        skip: Option<usize>,
        call: F,
        happened: impl Fn(&[keel_api::etcdserverpb::Member]) -> bool,
    ) -> Result<Vec<keel_api::etcdserverpb::Member>, Vec<String>>
    where
        F: Fn(ClusterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut errors: Vec<String> = Vec::new();
        while Instant::now() < deadline {
            for j in self.in_cluster() {
                if Some(j) == skip {
                    continue;
                }
                let Some(c) = channel(self.members[j].client).await else {
                    continue;
                };
                let mut cluster = ClusterClient::new(c);
                let answer = call(cluster.clone()).await;
                let members = cluster
                    .member_list(MemberListRequest { linearizable: true })
                    .await
                    .map(|m| m.into_inner().members);
                match (answer, members) {
                    (_, Ok(members)) if happened(&members) => return Ok(members),
                    (Err(e), _) if !errors.iter().any(|seen| seen == e.message()) => {
                        errors.push(e.message().to_string())
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(errors)
    }

    /// Removes member `i` from the cluster (through another member), then
    /// stops it and throws its data away.
    pub(crate) async fn remove(&mut self, i: usize) -> bool {
        let id = self.members[i].id;
        let removed = self
            .change_membership(
                Some(i),
                |mut c| async move { c.member_remove(MemberRemoveRequest { id }).await.map(drop) },
                |members| members.iter().all(|m| m.id != id),
            )
            .await;
        self.note(format!(
            "remove m{i} ({id:x}): {:?}",
            removed.as_ref().map(|_| "ok")
        ));
        if removed.is_err() {
            return false;
        }
        self.faults += 1;
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].removed = true;
        true
    }

    /// Adds member `i` back (as a learner if `learner`) with an empty data
    /// directory, and starts it.
    pub(crate) async fn add_back(&mut self, i: usize, learner: bool) -> bool {
        let url = format!("http://{}", self.members[i].advertised);
        let request = MemberAddRequest {
            peer_ur_ls: vec![url.clone()],
            is_learner: learner,
        };
        let added = self
            .change_membership(
                None,
                |mut c| {
                    let request = request.clone();
                    async move { c.member_add(request).await.map(drop) }
                },
                |members| members.iter().any(|m| m.peer_ur_ls.contains(&url)),
            )
            .await;
        let what = if learner {
            "as a learner"
        } else {
            "as a voter"
        };
        let id = added
            .as_ref()
            .ok()
            .and_then(|members| members.iter().find(|m| m.peer_ur_ls.contains(&url)))
            .map(|m| m.id);
        self.note(format!(
            "add m{i} back {what}: {:?}",
            added.as_ref().map(|_| "ok")
        ));
        let Some(id) = id else {
            return false;
        };
        self.faults += 1;
        let m = &mut self.members[i];
        m.id = id;
        m.removed = false;
        m.learner = learner;
        m.joining = true;
        m.generation += 1;
        self.spawn(i);
        true
    }

    /// Promotes learner `i`, retrying while it catches up.
    pub(crate) async fn promote(&mut self, i: usize) -> bool {
        let id = self.members[i].id;
        let promoted = self
            .change_membership(
                Some(i),
                |mut c| async move {
                    c.member_promote(MemberPromoteRequest { id })
                        .await
                        .map(drop)
                },
                |members| members.iter().any(|m| m.id == id && !m.is_learner),
            )
            .await;
        self.note(format!(
            "promote m{i}: {:?}",
            promoted.as_ref().map(|_| "ok")
        ));
        self.members[i].learner &= promoted.is_err();
        promoted.is_ok()
    }

    /// After the faults: takes the cluster's word for who is a member. A
    /// removal or an addition whose answer was lost may still have gone
    /// through: a member the list no longer has is stopped, one it has
    /// again is started (empty, joining). Returns false if no member
    /// answered with the list within 30 s.
    pub(crate) async fn reconcile(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let listed = loop {
            let mut listed = None;
            for i in self.in_cluster() {
                let Some(c) = channel(self.members[i].client).await else {
                    continue;
                };
                let list = ClusterClient::new(c)
                    .member_list(MemberListRequest { linearizable: true })
                    .await;
                if let Ok(list) = list {
                    listed = Some(list.into_inner().members);
                    break;
                }
            }
            match listed {
                Some(members) => break members,
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                None => return false,
            }
        };
        for i in 0..self.members.len() {
            let url = format!("http://{}", self.members[i].advertised);
            let entry = listed.iter().find(|m| m.peer_ur_ls.contains(&url));
            match (entry, self.members[i].removed) {
                (None, false) => {
                    if let Some(mut child) = self.members[i].process.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    self.members[i].removed = true;
                    self.note(format!(
                        "m{i} is no longer listed: its removal went through"
                    ));
                }
                (Some(entry), true) => {
                    let m = &mut self.members[i];
                    m.id = entry.id;
                    m.removed = false;
                    m.learner = entry.is_learner;
                    m.joining = true;
                    m.generation += 1;
                    self.spawn(i);
                    self.note(format!("m{i} is listed again: its addition went through"));
                }
                (Some(entry), false) => self.members[i].learner = entry.is_learner,
                (None, true) => {}
            }
        }
        true
    }

    /// Ends every fault: links healed, clocks at the normal rate, paused members
    /// resumed, killed ones restarted.
    pub(crate) fn heal(&mut self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
        for i in 0..self.members.len() {
            // At the normal rate again; where it is stays (see FakeClock).
            if let Some(clock) = &mut self.members[i].clock {
                clock.set(0.0, 1.0);
            }
            if self.members[i].paused {
                self.signal(i, libc::SIGCONT);
                self.members[i].paused = false;
            }
            if self.members[i].process.is_none() && !self.members[i].removed {
                self.spawn(i);
            }
        }
        self.note("heal".into());
    }

    /// Kills every member.
    pub(crate) fn stop_all(&mut self) {
        for i in 0..self.members.len() {
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

/// Member status from a client address, if it answers.
pub(crate) async fn status(addr: SocketAddr) -> Option<StatusResponse> {
    let c = channel(addr).await?;
    MaintenanceClient::new(c)
        .status(StatusRequest {})
        .await
        .ok()
        .map(|s| s.into_inner())
}

/// Waits until every member in the cluster answers and they agree on one
/// HashKV at one revision.
pub(crate) async fn hashes_agree(world: &World) -> Result<i64, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let members = world.in_cluster();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut revisions = Vec::new();
        let mut clients = Vec::new();
        for &i in &members {
            let Some(channel) = channel(world.members[i].client).await else {
                break;
            };
            let mut maintenance = MaintenanceClient::new(channel);
            match maintenance.status(StatusRequest {}).await {
                Ok(s) => revisions.push(s.into_inner().header.map_or(0, |h| h.revision)),
                Err(_) => break,
            }
            clients.push(maintenance);
        }
        if revisions.len() < members.len() || revisions.iter().any(|r| *r != revisions[0]) {
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
            return Ok(revisions[0]);
        }
        last = format!("hashes {hashes:?} at revision {}", revisions[0]);
    }
    Err(format!("members never agreed: {last}"))
}

/// A client's connections to the members, made on first use; each
/// operation goes through a member chosen at random.
pub(crate) struct Connections {
    addrs: Vec<SocketAddr>,
    channels: std::collections::HashMap<usize, Channel>,
}

impl Connections {
    /// Connections to the members at `addrs`.
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Connections {
        Connections {
            addrs,
            channels: Default::default(),
        }
    }

    /// A random member's index and channel; `None` (after a short wait)
    /// if it does not connect.
    pub(crate) async fn any(&mut self, rng: &mut impl rand::Rng) -> Option<(usize, Channel)> {
        let member = rng.random_range(0..self.addrs.len());
        if let Some(c) = self.channels.get(&member) {
            return Some((member, c.clone()));
        }
        match channel(self.addrs[member]).await {
            Some(c) => {
                self.channels.insert(member, c.clone());
                Some((member, c))
            }
            None => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    }

    /// Drops the connection to `member` (the next use reconnects).
    pub(crate) fn forget(&mut self, member: usize) {
        self.channels.remove(&member);
    }
}

/// What each workload client is given: who it is, the members' client
/// addresses, the run's seed, the clock of the histories and when to stop.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) id: usize,
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) seed: u64,
    pub(crate) zero: Instant,
    pub(crate) until: Instant,
}

impl Client {
    /// This client, numbered `id`.
    pub(crate) fn numbered(&self, id: usize) -> Client {
        Client { id, ..self.clone() }
    }

    /// Its random choices in workload `salt`, from the run's seed.
    pub(crate) fn rng(&self, salt: u64) -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(
            self.seed ^ salt ^ (self.id as u64).wrapping_mul(0x9e37_79b9),
        )
    }

    /// Its connections to the members.
    pub(crate) fn connections(&self) -> Connections {
        Connections::new(self.addrs.clone())
    }

    /// Whether its time is up.
    pub(crate) fn done(&self) -> bool {
        Instant::now() >= self.until
    }
}
