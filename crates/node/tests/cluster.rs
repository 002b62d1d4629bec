//! Clusters of real nodes (tokio tasks, WALs on disk) over the in-process
//! transport: election, fail-over, restart, snapshots, membership changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use keel_node::{LocalNetwork, NodeConfig, ProposeError, RaftNode, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// A counter map: each command adds to a key and returns the new value.
#[derive(Default)]
struct Counters(BTreeMap<String, u64>);

#[derive(Serialize, Deserialize)]
struct Add(String, u64);

impl StateMachine for Counters {
    type Command = Add;
    type Response = u64;

    fn apply(&mut self, _index: u64, Add(key, n): Add) -> u64 {
        let v = self.0.entry(key).or_default();
        *v += n;
        *v
    }

    fn snapshot(&self) -> Bytes {
        postcard::to_allocvec(&self.0).expect("encodes").into()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.0 = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    network: LocalNetwork,
    nodes: BTreeMap<u64, RaftNode<Counters>>,
    members: BTreeMap<u64, String>,
    snapshot_threshold: u64,
}

impl Cluster {
    async fn new(size: u64, snapshot_threshold: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            network: LocalNetwork::new(),
            nodes: BTreeMap::new(),
            members: (1..=size).map(|id| (id, format!("node-{id}"))).collect(),
            snapshot_threshold,
        };
        for id in 1..=size {
            c.start(id, true);
        }
        c
    }

    fn config(&self, id: u64, bootstrap: bool) -> NodeConfig {
        let mut config = NodeConfig::new(id, self.root.join(id.to_string()));
        if bootstrap {
            config.initial_members = self.members.clone();
        }
        config.tick_interval = Duration::from_millis(10);
        config.snapshot_threshold = self.snapshot_threshold;
        config
    }

    fn start(&mut self, id: u64, bootstrap: bool) {
        let node = RaftNode::start(
            self.config(id, bootstrap),
            Counters::default(),
            self.network.transport(id),
        )
        .expect("node starts");
        self.network.register(id, node.inbox());
        self.nodes.insert(id, node);
    }

    async fn stop(&mut self, id: u64) {
        self.network.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.stop().await;
        }
    }

    /// Waits for a leader among the running nodes that all of them agree on.
    async fn leader(&self) -> RaftNode<Counters> {
        for _ in 0..500 {
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
    async fn add(&self, key: &str, n: u64) -> u64 {
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

    async fn read(&self, id: u64, key: &str) -> Option<u64> {
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

    async fn wait_applied(&self, id: u64, index: u64) {
        for _ in 0..500 {
            if self.nodes[&id].status().applied >= index {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("node {id} stuck at {:?}", self.nodes[&id].status());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_commits_and_reads_linearizably_from_followers() {
    let c = Cluster::new(3, 10_000).await;
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
    let follower = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    match c.nodes[&follower].propose(Add("a".into(), 1)).await {
        Err(ProposeError::NotLeader {
            leader: Some(l),
            address: Some(addr),
        }) => {
            assert_eq!(l, leader);
            assert_eq!(addr, format!("node-{leader}"));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_leader_stops_and_loses_no_acknowledged_write() {
    let mut c = Cluster::new(3, 10_000).await;
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
    c.start(old, true);
    let leader = c.leader().await;
    c.wait_applied(old, leader.status().commit).await;
    assert_eq!(c.read(old, "k").await, Some(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_recovers_everything_from_its_wal() {
    let mut c = Cluster::new(3, 10_000).await;
    for i in 0..30 {
        c.add(&format!("k{}", i % 3), 1).await;
    }
    for id in [1, 2, 3] {
        c.stop(id).await;
    }
    for id in [1, 2, 3] {
        c.start(id, true);
    }
    for id in [1, 2, 3] {
        for k in 0..3 {
            assert_eq!(c.read(id, &format!("k{k}")).await, Some(10), "node {id}");
        }
    }
    assert_eq!(c.add("k0", 1).await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() {
    let mut c = Cluster::new(3, 20).await;
    c.add("x", 1).await;
    let leader = c.leader().await.status().id;
    let lagging = [1, 2, 3].into_iter().find(|&i| i != leader).unwrap();
    c.stop(lagging).await;
    for _ in 0..100 {
        c.add("x", 1).await;
    }
    // The leader has compacted its log past what the stopped node holds.
    c.start(lagging, true);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_under_load_and_is_promoted_then_the_leader_is_removed() {
    let mut c = Cluster::new(3, 50).await;
    for _ in 0..60 {
        c.add("w", 1).await;
    }
    c.members.insert(4, "node-4".into());
    c.start(4, false);
    let leader = c.leader().await;
    leader.add_learner(4).await.expect("learner added");
    for _ in 0..30 {
        c.add("w", 1).await;
    }
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
    assert_eq!(c.add("w", 1).await, 91);
    let new = c.leader().await.status();
    assert_ne!(new.id, old_id);
    assert_eq!(new.conf_state.voters.len(), 3);
    assert_eq!(c.read(4, "w").await, Some(91));
}
