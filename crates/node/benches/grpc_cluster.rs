//! Three keel-node nodes in one process talking gRPC over loopback, each
//! with its WAL fsyncing on this machine's disk: committed proposals/s and
//! latency percentiles for N concurrent clients proposing 256-byte commands,
//! and WAL fsyncs per committed entry (group commit at work).
//!
//! Run: `cargo bench -p keel-node --bench grpc_cluster` (optionally followed
//! by `-- <clients>... [--seconds N]`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_node::{serve, GrpcTransport, NodeConfig, RaftNode, RaftService, Role, StateMachine};
use serde::{Deserialize, Serialize};

/// Counts commands; the payload only travels.
#[derive(Default)]
struct Sink(u64);

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes_compat")] Vec<u8>);

mod serde_bytes_compat {
    pub(crate) fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

impl StateMachine for Sink {
    type Command = Blob;
    type Response = ();
    type Snapshot = u64;
    fn apply(&mut self, _index: u64, _command: Blob) {
        self.0 += 1;
    }
    fn snapshot(&self) -> u64 {
        self.0
    }
    fn write_snapshot(view: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&view.to_le_bytes())
    }
    fn restore(&mut self, snapshot: &mut dyn std::io::Read) -> Result<(), String> {
        let mut buf = [0u8; 8];
        snapshot.read_exact(&mut buf).map_err(|e| e.to_string())?;
        self.0 = u64::from_le_bytes(buf);
        Ok(())
    }
}

async fn cluster(dir: &std::path::Path) -> Vec<RaftNode<Sink>> {
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(
            id,
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
    }
    let members: BTreeMap<u64, String> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::new(id, dir.join(id.to_string()));
        config.initial_members = members.clone();
        config.tick_interval = Duration::from_millis(50);
        config.snapshot_threshold = 1_000_000;
        let node = RaftNode::start(
            config,
            Sink::default(),
            GrpcTransport::new(1, members.clone()),
        )
        .unwrap();
        tokio::spawn(serve(
            listener,
            RaftService::new(1, node.inbox()),
            std::future::pending(),
        ));
        nodes.push(node);
    }
    nodes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn measure(clients: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster(dir.path()).await;
    let leader = loop {
        if let Some(n) = nodes.iter().find(|n| n.status().role == Role::Leader) {
            break n.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Warm up the streams.
    for _ in 0..100 {
        leader.propose(Blob(vec![0; 256])).await.unwrap();
    }
    let syncs_before: u64 = nodes.iter().map(|n| n.wal_syncs()).sum();
    let applied_before = leader.status().applied;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let leader = leader.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    leader
                        .propose(Blob(vec![0xAB; 256]))
                        .await
                        .expect("committed");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let committed = leader.status().applied - applied_before;
    let syncs: u64 = nodes.iter().map(|n| n.wal_syncs()).sum::<u64>() - syncs_before;
    println!(
        "clients {clients:>4}: {:>8.0} commits/s  p50 {:>7.3} ms  p99 {:>7.3} ms  fsyncs/entry {:.3} (all 3 nodes: {syncs} fsyncs for {committed} entries)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        syncs as f64 / committed.max(1) as f64,
    );
    for n in &nodes {
        n.stop().await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut clients: Vec<usize> = Vec::new();
    let mut seconds = 5;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(seconds),
            other => {
                if let Ok(n) = other.parse() {
                    clients.push(n);
                }
            }
        }
    }
    if clients.is_empty() {
        clients = vec![1, 64, 256];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("keel-node bench: 3 nodes, gRPC on loopback, WAL fsync on, 256-byte commands, 2 worker threads");
    for c in clients {
        runtime.block_on(measure(c, seconds));
    }
}
