//! A cluster of real nodes (tokio tasks, WALs on disk) for integration
//! tests, over either the in-process transport or gRPC on loopback, and the
//! scenarios both transports must pass.

#![allow(dead_code)] // Each test binary uses its own share of the harness.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use keel_node::{
    serve, GrpcTransport, LocalNetwork, NodeConfig, ProposeError, RaftNode, RaftService, Role,
    StateMachine,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A counter map: each command adds to a key and returns the new value.
#[derive(Default)]
pub(crate) struct Counters(pub BTreeMap<String, u64>);

/// Adds `.1` to key `.0`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Add(pub String, pub u64);

impl StateMachine for Counters {
    type Command = Add;
    type Response = u64;
    type Snapshot = BTreeMap<String, u64>;

    fn apply(&mut self, _index: u64, Add(key, n): Add) -> u64 {
        let v = self.0.entry(key).or_default();
        *v += n;
        *v
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.0.clone()
    }

    fn write_snapshot(view: Self::Snapshot, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        keel_node::write_serde_snapshot(&view, out)
    }

    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        self.0 = keel_node::read_serde_snapshot(snapshot)?;
        Ok(())
    }
}

/// Which transport the cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Net {
    /// In-process channels.
    Local,
    /// gRPC on 127.0.0.1.
    Grpc,
}

const CLUSTER_ID: u64 = 42;

/// A running gRPC server and how to stop it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub(crate) struct Cluster {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    net: Net,
    /// The in-process network (unused with gRPC).
    pub local: LocalNetwork,
    servers: BTreeMap<u64, Server>,
    pub nodes: BTreeMap<u64, RaftNode<Counters>>,
    /// Every node that may ever run (including spares), with its address.
    pub addresses: BTreeMap<u64, String>,
    /// The voters the cluster starts with.
    bootstrap: BTreeMap<u64, String>,
    snapshot_threshold: u64,
}

impl Cluster {
    /// Starts `size` voters; `spares` more ids get addresses for later.
    pub(crate) async fn new(net: Net, size: u64, spares: u64, snapshot_threshold: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut addresses = BTreeMap::new();
        for id in 1..=size + spares {
            let address = match net {
                Net::Local => format!("node-{id}"),
                Net::Grpc => {
                    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    l.local_addr().unwrap().to_string()
                }
            };
            addresses.insert(id, address);
        }
        let bootstrap = addresses
            .iter()
            .filter(|(id, _)| **id <= size)
            .map(|(i, a)| (*i, a.clone()))
            .collect();
        let mut c = Cluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            net,
            local: LocalNetwork::new(),
            servers: BTreeMap::new(),
            nodes: BTreeMap::new(),
            addresses,
            bootstrap,
            snapshot_threshold,
        };
        for id in 1..=size {
            c.start(id, true).await;
        }
        c
    }

    fn config(&self, id: u64, bootstrap: bool) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.root.join(id.to_string()));
        if bootstrap {
            config.initial_members = self.bootstrap.clone();
        }
        config.tick_interval = Duration::from_millis(10);
        config.snapshot_threshold = self.snapshot_threshold;
        config
    }

    /// Starts node `id` (as a member of the initial cluster, or as a new node).
    pub(crate) async fn start(&mut self, id: u64, bootstrap: bool) {
        let config = self.config(id, bootstrap);
        let node = match self.net {
            Net::Local => {
                let node = RaftNode::start(config, Counters::default(), self.local.transport(id))
                    .expect("starts");
                self.local.register(id, node.inbox());
                node
            }
            Net::Grpc => {
                let transport = GrpcTransport::new(CLUSTER_ID, self.addresses.clone());
                let node = RaftNode::start(config, Counters::default(), transport).expect("starts");
                let mut listener = None;
                for _ in 0..100 {
                    match tokio::net::TcpListener::bind(&self.addresses[&id]).await {
                        Ok(l) => {
                            listener = Some(l);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                let listener = listener.expect("the node's port frees up");
                let (stop, stopped) = oneshot::channel::<()>();
                let service = RaftService::new(CLUSTER_ID, node.inbox());
                let task = tokio::spawn(async move {
                    let _ = serve(listener, service, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
                self.servers.insert(id, Server { stop, task });
                node
            }
        };
        self.nodes.insert(id, node);
    }

    /// Kills node `id`'s task (and its server); its disk stays.
    pub(crate) async fn stop(&mut self, id: u64) {
        self.local.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.stop().await;
        }
        if let Some(server) = self.servers.remove(&id) {
            let _ = server.stop.send(());
            let _ = server.task.await;
        }
    }

    /// Waits for a leader that every member among the running nodes follows.
    pub(crate) async fn leader(&self) -> RaftNode<Counters> {
        for _ in 0..1000 {
            let leaders: Vec<_> = self
                .nodes
                .values()
                .filter(|n| n.status().role == Role::Leader)
                .collect();
            if let [only] = leaders[..] {
                let status = only.status();
                let cs = &status.conf_state;
                let member = |id: &u64| cs.voters.contains(id) || cs.learners.contains(id);
                let agreed = self
                    .nodes
                    .iter()
                    .filter(|(id, _)| member(id))
                    .all(|(_, n)| n.status().leader == Some(status.id));
                if agreed {
                    return only.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no stable leader: {:?}",
            self.nodes.values().map(|n| n.status()).collect::<Vec<_>>()
        );
    }

    /// Proposes through whoever leads, retrying across leader changes.
    pub(crate) async fn add(&self, key: &str, n: u64) -> u64 {
        for _ in 0..100 {
            let leader = self.leader().await;
            match leader.propose(Add(key.to_string(), n)).await {
                Ok(v) => return v,
                Err(
                    ProposeError::NotLeader { .. } | ProposeError::Lost | ProposeError::Stopped,
                ) => {}
                Err(e) => panic!("unexpected refusal: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("could not commit");
    }

    /// A linearizable read of `key` on node `id`.
    pub(crate) async fn read(&self, id: u64, key: &str) -> Option<u64> {
        let key = key.to_string();
        for _ in 0..100 {
            let key = key.clone();
            if let Ok(v) = self.nodes[&id].read(move |c| c.0.get(&key).copied()).await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("node {id} could not read");
    }

    pub(crate) async fn wait_applied(&self, id: u64, index: u64) {
        for _ in 0..1000 {
            if self.nodes[&id].status().applied >= index {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node {id} stuck at {:?}", self.nodes[&id].status());
    }
}

// ----- scenarios ----------------------------------------------------------

/// Declares one `#[tokio::test]` per scenario, run over `Net::$net`.
#[macro_export]
macro_rules! scenario_tests {
    ($net:ident: $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                common::$scenario(common::Net::$net).await;
            }
        )+
    };
}

/// Declares every scenario's test over `Net::$net`.
#[macro_export]
macro_rules! all_scenarios {
    ($net:ident) => {
        scenario_tests!($net:
            elects_commits_and_reads_linearizably_from_followers,
            fails_over_when_the_leader_stops_and_loses_no_acknowledged_write,
            a_restarted_cluster_recovers_everything_from_its_wal,
            a_lagging_node_catches_up_by_snapshot,
            a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed,
        );
    };
}

pub(crate) async fn elects_commits_and_reads_linearizably_from_followers(net: Net) {
    let c = Cluster::new(net, 3, 1, 10_000).await;
    assert_eq!(c.add("a", 2).await, 2);
    assert_eq!(c.add("a", 3).await, 5);
    let leader = c.leader().await.status().id;
    for id in [1, 2, 3] {
        assert_eq!(
            c.read(id, "a").await,
            Some(5),
            "node {id} (leader {leader})"
        );
    }
    // A follower passes its proposal on to the leader and answers with its
    // own state machine's response.
    let follower = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    let total = c.nodes[&follower].propose(Add("a".into(), 1)).await;
    assert_eq!(total, Ok(6), "proposed on follower {follower}");
    for id in [1, 2, 3] {
        assert_eq!(c.read(id, "a").await, Some(6), "node {id}");
    }
}

pub(crate) async fn fails_over_when_the_leader_stops_and_loses_no_acknowledged_write(net: Net) {
    let mut c = Cluster::new(net, 3, 1, 10_000).await;
    let mut total = 0;
    for _ in 0..20 {
        total = c.add("k", 1).await;
    }
    let old = c.leader().await.status().id;
    c.stop(old).await;
    let new = c.leader().await.status().id;
    assert_ne!(new, old);
    for _ in 0..20 {
        total = c.add("k", 1).await;
    }
    assert_eq!(total, 40);
    c.start(old, true).await;
    let leader = c.leader().await;
    c.wait_applied(old, leader.status().commit).await;
    assert_eq!(c.read(old, "k").await, Some(40));
}

pub(crate) async fn a_restarted_cluster_recovers_everything_from_its_wal(net: Net) {
    // Snapshots every 7 entries: restarts go through a snapshot file and the
    // WAL's tail after it.
    let mut c = Cluster::new(net, 3, 1, 7).await;
    for i in 0..30 {
        c.add(&format!("k{}", i % 3), 1).await;
    }
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
    for id in [1, 2, 3] {
        let files: Vec<_> = std::fs::read_dir(c.root.join(id.to_string()))
            .unwrap()
            .collect();
        assert!(
            files.iter().any(|f| f
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snap-")),
            "node {id} took a snapshot"
        );
        c.start(id, true).await;
    }
    for id in [1, 2, 3] {
        for k in 0..3 {
            assert_eq!(c.read(id, &format!("k{k}")).await, Some(10), "node {id}");
        }
    }
    assert_eq!(c.add("k0", 1).await, 11);
}

pub(crate) async fn a_lagging_node_catches_up_by_snapshot(net: Net) {
    let mut c = Cluster::new(net, 3, 1, 20).await;
    c.add("x", 1).await;
    let leader = c.leader().await.status().id;
    let lagging = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    c.stop(lagging).await;
    for _ in 0..100 {
        c.add("x", 1).await;
    }
    // The leader has compacted its log past what the stopped node holds.
    c.start(lagging, true).await;
    let commit = c.leader().await.status().commit;
    c.wait_applied(lagging, commit).await;
    assert_eq!(c.read(lagging, "x").await, Some(101));
    assert!(std::fs::read_dir(c.root.join(lagging.to_string()))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("snap-")));
}

pub(crate) async fn a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed(
    net: Net,
) {
    // No snapshots: the new node learns the membership from the log itself.
    let mut c = Cluster::new(net, 3, 1, 10_000).await;
    for _ in 0..60 {
        c.add("w", 1).await;
    }
    c.start(4, false).await;
    // A client writes all along: adding, promoting and removing members
    // must not lose an acknowledged write.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(write_until(
        c.nodes.values().cloned().collect(),
        stop.clone(),
    ));
    let leader = c.leader().await;
    leader
        .add_learner(4, c.addresses[&4].clone())
        .await
        .expect("learner added");
    // Promotion waits for the learner to catch up.
    let mut promoted = false;
    for _ in 0..100 {
        let leader = c.leader().await;
        match leader.promote(4).await {
            Ok(cs) => {
                assert!(cs.voters.contains(&4));
                promoted = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(promoted, "the learner was never promoted");
    let old = c.leader().await;
    let old_id = old.status().id;
    let cs = old.remove(old_id).await.expect("leader removed");
    assert!(!cs.voters.contains(&old_id));
    c.stop(old_id).await;
    assert_eq!(c.add("w", 1).await, 61);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    assert!(
        acknowledged > 0,
        "the writer got through during the changes"
    );
    let new = c.leader().await.status();
    assert_ne!(new.id, old_id);
    assert_eq!(new.conf_state.voters.len(), 3);
    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
        assert_eq!(c.read(id, "w").await, Some(61));
        let load = c.read(id, "load").await.unwrap_or(0);
        assert!(
            load >= acknowledged,
            "node {id}: {load} < {acknowledged} acknowledged writes"
        );
    }
    let leader_view = c.leader().await.status().conf_state;
    c.wait_applied(4, c.leader().await.status().commit).await;
    assert_eq!(
        c.nodes[&4].status().conf_state,
        leader_view,
        "node 4 knows every member"
    );
}

/// Proposes to whichever of `nodes` leads until `stop`; returns how many
/// writes were acknowledged.
async fn write_until(
    nodes: Vec<RaftNode<Counters>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    let mut acknowledged = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let leader = nodes
            .iter()
            .find(|n| n.status().role == Role::Leader && n.status().running);
        match leader {
            Some(l) if l.propose(Add("load".into(), 1)).await.is_ok() => acknowledged += 1,
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    acknowledged
}
