//! A cluster of real `keel serve` processes on loopback, driven through the
//! etcd gRPC API.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel_api::etcdserverpb::*;
use tonic::transport::Channel;

use keel_api::etcdserverpb::kv_client::KvClient;
pub use keel_api::etcdserverpb::maintenance_client::MaintenanceClient;

/// One member process.
pub struct Member {
    pub name: String,
    pub client: String,
    pub peer: String,
    pub dir: PathBuf,
    pub process: Option<Child>,
}

/// Members of one cluster, in a temporary directory.
pub struct Cluster {
    pub members: Vec<Member>,
    initial: String,
    extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound, then released for the member to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Cluster {
    /// Starts `n` members with extra `keel serve` arguments.
    pub async fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            members,
            initial,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_for_leader().await;
        cluster
    }

    /// Starts (or restarts) member `i`.
    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::File::create(format!("{}.log", m.dir.display())).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keel"))
            .arg("serve")
            .args(["--name", &m.name])
            .args(["--data-dir", &m.dir.display().to_string()])
            .args(["--listen-client-urls", &format!("http://{}", m.client)])
            .args(["--listen-peer-url", &format!("http://{}", m.peer)])
            .args(["--initial-cluster", &self.initial])
            .args([
                "--heartbeat-interval-ms",
                "50",
                "--election-timeout-ms",
                "500",
            ])
            .args(["--log-format", "text"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel");
        self.members[i].process = Some(child);
    }

    /// Stops member `i` with SIGTERM and checks it exits cleanly (status 0).
    pub fn stop(&mut self, i: usize) {
        let mut child = self.members[i].process.take().expect("running");
        // SAFETY: kill(2) on a child we spawned.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = wait_timeout(&mut child, Duration::from_secs(15));
        assert_eq!(
            status,
            Some(0),
            "member {i} did not exit cleanly; see {}.log",
            self.members[i].dir.display()
        );
    }

    /// Kills member `i` with SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.members[i].process.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A channel to member `i`'s client port.
    pub async fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(format!("http://{}", self.members[i].client))
            .expect("url")
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// A KV client for member `i`.
    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    /// Member `i`'s status, if it answers.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut m = MaintenanceClient::new(self.channel(i).await);
        m.status(StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The index of the member that leads, waiting up to 20 s for one
    /// every running member agrees on.
    pub async fn wait_for_leader(&self) -> usize {
        for _ in 0..200 {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if m.process.is_none() {
                    continue;
                }
                match self.status(i).await {
                    Some(s) => {
                        leaders.push(s.leader);
                        ids.push((i, s.header.map_or(0, |h| h.member_id)));
                    }
                    None => leaders.push(0),
                }
            }
            if let Some(&leader) = leaders.first() {
                if leader != 0 && leaders.iter().all(|l| *l == leader) {
                    if let Some((i, _)) = ids.iter().find(|(_, id)| *id == leader) {
                        return *i;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no leader agreed on within 20 s");
    }

    /// Waits until member `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) {
        for _ in 0..300 {
            if self
                .status(i)
                .await
                .is_some_and(|s| s.raft_applied_index >= index)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("member {i} did not apply index {index} within 30 s");
    }

    /// Member `i`'s log so far (its stderr).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(format!("{}.log", self.members[i].dir.display()))
            .unwrap_or_default()
    }

    /// Panics if member `i` has exited or its log shows a panic.
    pub fn assert_healthy(&mut self, i: usize) {
        let child = self.members[i].process.as_mut().expect("member started");
        let exited = child.try_wait().expect("try_wait");
        let log = self.log(i);
        let panic = log.lines().find(|l| l.contains("panicked"));
        assert!(
            exited.is_none() && panic.is_none(),
            "member {i} exited ({exited:?}) or panicked ({panic:?}); see {}.log",
            self.members[i].dir.display()
        );
    }

    /// HashKV of member `i` at `revision`.
    pub async fn hash_kv(&self, i: usize, revision: i64) -> u32 {
        let mut m = MaintenanceClient::new(self.channel(i).await);
        m.hash_kv(HashKvRequest { revision })
            .await
            .expect("hash_kv")
            .into_inner()
            .hash
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// Puts `key = value` through member `i`.
pub async fn put(
    cluster: &Cluster,
    i: usize,
    key: &str,
    value: &str,
) -> Result<i64, tonic::Status> {
    let response = cluster
        .kv(i)
        .await
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(response.header.map_or(0, |h| h.revision))
}

/// Every key-value under `prefix` read from member `i`.
pub async fn read_prefix(
    cluster: &Cluster,
    i: usize,
    prefix: &str,
    serializable: bool,
) -> Result<RangeResponse, tonic::Status> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    Ok(cluster
        .kv(i)
        .await
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: end.into(),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner())
}
