//! # keel-testkit
//!
//! Clusters of real member processes on loopback: what keel's process
//! tests, its etcd-API benchmark and `keel cluster` start. A member is a
//! `keel serve` (or, for side-by-side benchmarks, an `etcd`) child process
//! with its own ports, data directory and log file.

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_api::etcdserverpb::cluster_client::ClusterClient;
use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;
use keel_api::etcdserverpb::{MemberAddRequest, StatusRequest, StatusResponse};
use tonic::transport::{Channel, ClientTlsConfig};

/// How long [`Cluster::wait_for_leader`] waits for the members to agree.
pub const LEADER_PATIENCE: Duration = Duration::from_secs(30);

/// Which server a member runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `keel serve`.
    Keel,
    /// etcd 3.4, with the same addresses and cluster token.
    Etcd,
}

/// TLS for a cluster: which ports speak it (`https://` URLs) and what
/// [`Cluster::channel`] connects with. The certificate flags themselves
/// are the test's to pass (keel's and etcd's are the same).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// The client ports speak TLS; clients connect with these settings.
    pub client: Option<ClientTlsConfig>,
    /// The peer ports speak TLS.
    pub peer: bool,
}

impl Tls {
    fn client_scheme(&self) -> &'static str {
        scheme(self.client.is_some())
    }

    fn peer_scheme(&self) -> &'static str {
        scheme(self.peer)
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// Where one member listens and keeps its data.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Its name in the initial cluster.
    pub name: String,
    /// Its client address, `host:port`.
    pub client: String,
    /// Its peer address, `host:port`.
    pub peer: String,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl MemberSpec {
    /// The command line arguments that start this member of a new cluster
    /// whose members are `initial` (`name=http://peer,...`).
    pub fn args(&self, flavor: Flavor, initial: &str, token: &str) -> Vec<String> {
        self.args_with_tls(flavor, initial, token, &Tls::default())
    }

    /// [`args`](Self::args) with `https://` URLs on the ports `tls` says.
    pub fn args_with_tls(
        &self,
        flavor: Flavor,
        initial: &str,
        token: &str,
        tls: &Tls,
    ) -> Vec<String> {
        let client_url = format!("{}://{}", tls.client_scheme(), self.client);
        let peer_url = format!("{}://{}", tls.peer_scheme(), self.peer);
        let data = self.data_dir.display().to_string();
        let pairs: Vec<(&str, &str)> = match flavor {
            Flavor::Keel => vec![
                ("--name", &self.name),
                ("--data-dir", &data),
                ("--listen-client-urls", &client_url),
                ("--listen-peer-url", &peer_url),
                ("--initial-cluster", initial),
                ("--initial-cluster-token", token),
                ("--log-format", "text"),
            ],
            Flavor::Etcd => vec![
                ("--name", &self.name),
                ("--data-dir", &data),
                ("--listen-client-urls", &client_url),
                ("--advertise-client-urls", &client_url),
                ("--listen-peer-urls", &peer_url),
                ("--initial-advertise-peer-urls", &peer_url),
                ("--initial-cluster", initial),
                ("--initial-cluster-token", token),
                ("--initial-cluster-state", "new"),
            ],
        };
        let serve = (flavor == Flavor::Keel).then(|| "serve".to_string());
        serve
            .into_iter()
            .chain(
                pairs
                    .into_iter()
                    .flat_map(|(flag, value)| [flag.to_string(), value.to_string()]),
            )
            .collect()
    }
}

/// The `--initial-cluster` list of `members`.
pub fn initial_cluster(members: &[MemberSpec]) -> String {
    initial_cluster_of(members, "http")
}

fn initial_cluster_of(members: &[MemberSpec], peer_scheme: &str) -> String {
    members
        .iter()
        .map(|m| format!("{}={peer_scheme}://{}", m.name, m.peer))
        .collect::<Vec<_>>()
        .join(",")
}

/// A free loopback port (bound, then released for a member to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// One member: its addresses, log file and process (when running).
pub struct Member {
    /// Addresses and data directory.
    pub spec: MemberSpec,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// The process, while running.
    pub process: Option<Child>,
    /// Arguments only this member gets, after the cluster's.
    pub args: Vec<String>,
}

/// Members of one cluster, with their data in a temporary directory that
/// is removed when the cluster is dropped (after the members are killed).
pub struct Cluster {
    /// The members, in the order of the initial cluster.
    pub members: Vec<Member>,
    flavor: Flavor,
    exe: PathBuf,
    extra_args: Vec<String>,
    tls: Tls,
    dir: Option<tempfile::TempDir>,
    keep_dir: bool,
}

impl Cluster {
    /// Starts `n` members of `flavor` running `exe`, each also given
    /// `extra_args`. Does not wait for a leader.
    pub fn start(flavor: Flavor, exe: &Path, n: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::prepare(flavor, exe, n, extra_args, Tls::default());
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    /// The members of [`start`](Self::start), with `tls`, not started yet:
    /// set members' own [`Member::args`], then [`spawn`](Self::spawn) each.
    pub fn prepare(flavor: Flavor, exe: &Path, n: usize, extra_args: &[&str], tls: Tls) -> Cluster {
        let prefix = match flavor {
            Flavor::Keel => "k",
            Flavor::Etcd => "e",
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("keel-testkit-{prefix}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let members: Vec<Member> = (1..=n)
            .map(|i| {
                let name = format!("{prefix}{i}");
                Member {
                    log: dir.path().join(format!("{name}.log")),
                    spec: MemberSpec {
                        client: format!("127.0.0.1:{}", free_port()),
                        peer: format!("127.0.0.1:{}", free_port()),
                        data_dir: dir.path().join(&name),
                        name,
                    },
                    process: None,
                    args: Vec::new(),
                }
            })
            .collect();
        Cluster {
            members,
            flavor,
            exe: exe.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls,
            dir: Some(dir),
            keep_dir: false,
        }
    }

    /// Keeps the data directory when the cluster is dropped (and says where).
    pub fn keep_dir(&mut self, keep: bool) {
        self.keep_dir = keep;
    }

    /// Adds a member through member `via` (etcd's `MemberAdd`, as a
    /// learner if `learner`), then starts it to join the running cluster
    /// (`--initial-cluster-state existing`). Returns its index in
    /// [`members`](Self::members) and its member id.
    pub async fn add_member(
        &mut self,
        via: usize,
        learner: bool,
    ) -> Result<(usize, u64), tonic::Status> {
        let i = self.members.len();
        let dir = self.dir.as_ref().expect("the cluster's directory").path();
        let name = format!(
            "{}{}",
            self.members[0].spec.name.trim_end_matches(char::is_numeric),
            i + 1
        );
        let spec = MemberSpec {
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            data_dir: dir.join(&name),
            name,
        };
        let added = ClusterClient::new(self.channel(via))
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![format!("{}://{}", self.tls.peer_scheme(), spec.peer)],
                is_learner: learner,
            })
            .await?
            .into_inner();
        let id = added.member.map_or(0, |m| m.id);
        self.members.push(Member {
            log: dir.join(format!("{}.log", spec.name)),
            spec,
            process: None,
            args: vec!["--initial-cluster-state".into(), "existing".into()],
        });
        self.spawn(i);
        Ok((i, id))
    }

    /// Starts (or restarts) member `i`. Its log is appended to.
    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("opening the member's log");
        let specs: Vec<MemberSpec> = self.members.iter().map(|m| m.spec.clone()).collect();
        let initial = initial_cluster_of(&specs, self.tls.peer_scheme());
        let mut command = Command::new(&self.exe);
        command
            .args(
                m.spec
                    .args_with_tls(self.flavor, &initial, "testkit", &self.tls),
            )
            .args(&self.extra_args)
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl(2) is async-signal-safe; it only asks the kernel to
        // SIGTERM the member if the thread that started it dies (a test that
        // panicked, a Ctrl-C), so no member outlives its cluster.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({}): {e}", m.spec.name, self.exe.display()));
        self.members[i].process = Some(child);
    }

    /// Stops member `i` with SIGTERM and returns its exit code (`None` if it
    /// did not exit within 15 s and was killed).
    pub fn stop(&mut self, i: usize) -> Option<i32> {
        let child = self.members[i].process.take()?;
        sigterm(&child);
        wait_exit(child, Instant::now() + Duration::from_secs(15))
    }

    /// Kills member `i` with SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A channel to member `i`'s client port (connected on first use),
    /// through TLS if the cluster's clients use it.
    pub fn channel(&self, i: usize) -> Channel {
        let url = format!(
            "{}://{}",
            self.tls.client_scheme(),
            self.members[i].spec.client
        );
        let mut endpoint = Channel::from_shared(url).expect("a member's client URL");
        if let Some(tls) = &self.tls.client {
            endpoint = endpoint
                .tls_config(tls.clone())
                .expect("the cluster's TLS settings");
        }
        endpoint
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// Member `i`'s status, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut maintenance = MaintenanceClient::new(self.channel(i));
        maintenance
            .status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The index of the member that every running member agrees leads,
    /// waiting up to [`LEADER_PATIENCE`]; panics with the members' logs if
    /// none does.
    pub async fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_PATIENCE;
        while Instant::now() < deadline {
            let mut agreed = None;
            let mut disagree = false;
            let mut ids = Vec::new();
            for i in 0..self.members.len() {
                if self.members[i].process.is_none() {
                    continue;
                }
                let (leader, id) = match self.status(i).await {
                    Some(s) => (s.leader, s.header.map_or(0, |h| h.member_id)),
                    None => (0, 0),
                };
                ids.push((i, id));
                disagree |= leader == 0 || agreed.is_some_and(|l| l != leader);
                agreed = Some(leader);
            }
            if let (false, Some(leader)) = (disagree, agreed) {
                if let Some(&(i, _)) = ids.iter().find(|(_, id)| *id == leader) {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.dump_logs();
        panic!("no leader agreed on within {LEADER_PATIENCE:?}");
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// Panics (after printing the logs) if a started member has exited or
    /// its log shows a panic.
    pub fn assert_running(&mut self) {
        let mut trouble = Vec::new();
        for i in 0..self.members.len() {
            let Some(child) = self.members[i].process.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                trouble.push(format!("{} exited ({status})", self.members[i].spec.name));
            }
            if let Some(line) = self.log(i).lines().find(|l| l.contains("panicked")) {
                trouble.push(format!("{} panicked: {line}", self.members[i].spec.name));
            }
        }
        if !trouble.is_empty() {
            self.dump_logs();
            panic!("{}", trouble.join("; "));
        }
    }

    /// Prints the last lines of each member's log to stderr.
    pub fn dump_logs(&self) {
        for i in 0..self.members.len() {
            let text = self.log(i);
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {} ---", self.members[i].log.display());
            for line in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    /// Kills every member (whatever a test wanted of a clean stop it asked
    /// for with [`Cluster::stop`]), then removes the data unless kept.
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if let Some(dir) = self.dir.take() {
            if self.keep_dir {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

/// Asks a member to shut down cleanly.
fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
}

/// Waits until `deadline` for the exit code; kills the process after that.
fn wait_exit(mut child: Child, deadline: Instant) -> Option<i32> {
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_started_with_their_addresses() {
        let spec = MemberSpec {
            name: "k1".into(),
            client: "127.0.0.1:1".into(),
            peer: "127.0.0.1:2".into(),
            data_dir: PathBuf::from("/d"),
        };
        let initial = initial_cluster(std::slice::from_ref(&spec));
        assert_eq!(initial, "k1=http://127.0.0.1:2");
        let keel = spec.args(Flavor::Keel, &initial, "t").join(" ");
        assert_eq!(
            keel,
            "serve --name k1 --data-dir /d --listen-client-urls http://127.0.0.1:1 \
             --listen-peer-url http://127.0.0.1:2 --initial-cluster k1=http://127.0.0.1:2 \
             --initial-cluster-token t --log-format text"
        );
        let etcd = spec.args(Flavor::Etcd, &initial, "t");
        assert_eq!(etcd[0], "--name");
        assert!(etcd.contains(&"--initial-advertise-peer-urls".to_string()));
    }
}
