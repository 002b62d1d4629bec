//! Throughput of a three-node keel-raft cluster in one process, in the setup
//! of openraft's `benchmarks/minimal`: in-memory log and state machine, no
//! network (messages handed over through in-memory channels), empty commands,
//! and N concurrent clients that each propose and wait for their command to
//! be applied before proposing the next.
//!
//! Each node is a tokio task that owns a `RawNode` and runs the Ready loop:
//! drain its inbox (peer messages and proposals), then send, persist, apply
//! and advance. The runtime has two worker threads.
//!
//! Run: `cargo bench -p keel-raft --bench cluster` (optionally followed by
//! `-- <clients>... [--ops N] [--runs N]`). Each figure is the median of
//! `--runs` runs (default 5), each on a fresh cluster.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_raft::{Config, EntryId, MemStorage, Message, NodeId, RawNode, Role};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};

/// What a node task receives.
enum Input {
    /// Messages from one peer, one batch per peer per Ready.
    Peer(Vec<Message>),
    /// A client command and where to report it applied.
    Propose(Bytes, oneshot::Sender<Result<(), ()>>),
}

type Inbox = mpsc::UnboundedSender<Input>;

/// Proposals waiting to apply, in log order (indexes only grow on one leader).
type Waiting = VecDeque<(EntryId, oneshot::Sender<Result<(), ()>>)>;

const NODES: u64 = 3;
const MAX_DRAIN: usize = 4096;

async fn run_node(id: NodeId, mut inbox: mpsc::UnboundedReceiver<Input>, peers: Arc<Vec<Inbox>>) {
    let storage = MemStorage::with_voters(&[1, 2, 3]);
    let mut config = Config::new(id);
    config.max_inflight_msgs = 64;
    let rng = Box::new(rand::rngs::StdRng::seed_from_u64(id));
    let mut node = RawNode::new(config, storage.clone(), rng).expect("valid config");
    if id == 1 {
        node.campaign();
    }
    let mut waiting: Waiting = VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut batches: Vec<Vec<Message>> = vec![Vec::new(); NODES as usize];
    loop {
        let first = tokio::select! {
            input = inbox.recv() => match input {
                Some(input) => Some(input),
                None => return,
            },
            _ = ticker.tick() => {
                node.tick();
                None
            }
        };
        let mut next = first;
        let mut drained = 0;
        while let Some(input) = next.take() {
            match input {
                Input::Peer(messages) => {
                    for m in messages {
                        // In this closed setup every message is well-formed.
                        let _ = node.step(m);
                    }
                }
                Input::Propose(data, done) => match node.propose(data) {
                    Ok(entry) => waiting.push_back((entry, done)),
                    Err(_) => {
                        let _ = done.send(Err(()));
                    }
                },
            }
            drained += 1;
            if drained < MAX_DRAIN {
                next = inbox.try_recv().ok();
            }
        }
        while node.has_ready() {
            let ready = node.ready();
            route(&peers, &mut batches, ready.messages);
            storage.append(&ready.entries).expect("in order");
            if let Some(hs) = ready.hard_state {
                storage.set_hard_state(hs);
            }
            route(&peers, &mut batches, ready.persisted_messages);
            for entry in &ready.committed_entries {
                while waiting.front().is_some_and(|(w, _)| w.index <= entry.index) {
                    let (w, done) = waiting.pop_front().expect("checked");
                    let applied = w.index == entry.index && w.term == entry.term;
                    let _ = done.send(if applied { Ok(()) } else { Err(()) });
                }
            }
            if ready.soft_state.is_some_and(|s| s.role != Role::Leader) {
                for (_, done) in waiting.drain(..) {
                    let _ = done.send(Err(()));
                }
            }
            node.advance();
        }
    }
}

/// Hands messages to their peers, one channel send per peer.
fn route(peers: &[Inbox], batches: &mut [Vec<Message>], messages: Vec<Message>) {
    if messages.is_empty() {
        return;
    }
    for m in messages {
        batches[(m.to - 1) as usize].push(m);
    }
    for (i, batch) in batches.iter_mut().enumerate() {
        if !batch.is_empty() {
            let _ = peers[i].send(Input::Peer(std::mem::take(batch)));
        }
    }
}

async fn client(leader: Inbox, ops: u64) {
    for _ in 0..ops {
        let (tx, rx) = oneshot::channel();
        leader
            .send(Input::Propose(Bytes::new(), tx))
            .expect("leader runs");
        rx.await.expect("answered").expect("applied");
    }
}

/// Runs `total_ops` empty commands from `clients` clients; returns ops/s.
async fn measure(clients: u64, total_ops: u64) -> f64 {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..NODES {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let peers = Arc::new(senders);
    let mut nodes = Vec::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        nodes.push(tokio::spawn(run_node(i as u64 + 1, rx, peers.clone())));
    }
    // Node 1 campaigns at start: wait until it accepts a command.
    loop {
        let (tx, rx) = oneshot::channel();
        peers[0]
            .send(Input::Propose(Bytes::new(), tx))
            .expect("node runs");
        if rx.await == Ok(Ok(())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let per_client = total_ops / clients;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(peers[0].clone(), per_client)))
        .collect();
    for t in tasks {
        t.await.expect("client finished");
    }
    let elapsed = started.elapsed();
    for n in nodes {
        n.abort();
    }
    (per_client * clients) as f64 / elapsed.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut clients: Vec<u64> = Vec::new();
    let mut ops: Option<u64> = None;
    let mut runs = 5usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ops" => ops = it.next().and_then(|v| v.parse().ok()),
            "--runs" => {
                runs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(runs)
                    .max(1)
            }
            "--bench" => {}
            other => {
                if let Ok(n) = other.parse() {
                    clients.push(n);
                }
            }
        }
    }
    if clients.is_empty() {
        clients = vec![1, 256, 4096];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("keel-raft cluster bench: 3 nodes, in-memory, empty commands, 2 worker threads");
    for c in clients {
        let total = ops
            .unwrap_or(if c == 1 { 100_000 } else { 2_000_000 })
            .max(c);
        let mut rates: Vec<f64> = (0..runs)
            .map(|_| runtime.block_on(measure(c, total)))
            .collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        println!(
            "clients {c:>5}: median {:>10.0} ops/s  (min {:.0}, max {:.0}; {runs} runs of {total} ops)",
            rates[runs / 2],
            rates[0],
            rates[runs - 1]
        );
    }
}
