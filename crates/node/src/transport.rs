//! How messages travel between nodes: the [`Transport`] trait and an
//! in-process network for tests and examples that can drop, delay and
//! partition on command.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft::{Message, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// Where a node receives messages: batches, as they arrived from one peer.
pub type MessageSink = mpsc::UnboundedSender<Vec<Message>>;

/// Sends a node's messages to its peers. Delivery is best effort: Raft
/// retransmits what is lost.
pub trait Transport: Send + Sync + 'static {
    /// Sends `messages` (all addressed to `to`) as one batch.
    fn send(&self, to: NodeId, messages: Vec<Message>);

    /// Member `id` listens at `address`: the replicated membership says so
    /// (a member was added, or this node learned the book from the log or a
    /// snapshot). Transports that route by id ignore it.
    fn learn_address(&self, _id: NodeId, _address: &str) {}
}

struct NetworkState {
    nodes: BTreeMap<NodeId, MessageSink>,
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Option<Duration>,
    /// Probability that a batch is lost.
    loss: f64,
    rng: StdRng,
}

impl Default for NetworkState {
    fn default() -> Self {
        NetworkState {
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            delay: None,
            loss: 0.0,
            rng: StdRng::seed_from_u64(0),
        }
    }
}

/// An in-process network: nodes register their sinks, transports deliver
/// through channels. Faults are injected on command.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    state: Arc<Mutex<NetworkState>>,
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetworkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects node `id`'s inbox.
    pub fn register(&self, id: NodeId, sink: MessageSink) {
        self.lock().nodes.insert(id, sink);
    }

    /// Disconnects node `id` (as if it had crashed).
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// The transport node `id` sends through.
    pub fn transport(&self, id: NodeId) -> LocalTransport {
        LocalTransport {
            from: id,
            network: self.clone(),
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&self, id: NodeId) {
        let mut s = self.lock();
        let others: Vec<NodeId> = s.nodes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            s.cut.insert((id, o));
            s.cut.insert((o, id));
        }
    }

    /// Cuts the link `from → to` only.
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Loses each batch with probability `loss` (0 to 1), drawn from a
    /// generator seeded with `seed`.
    pub fn set_loss(&self, loss: f64, seed: u64) {
        let mut s = self.lock();
        s.loss = loss.clamp(0.0, 1.0);
        s.rng = StdRng::seed_from_u64(seed);
    }

    /// Delays every message by `delay` (None: deliver at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.lock().delay = delay;
    }
}

/// One node's view of a [`LocalNetwork`].
#[derive(Clone)]
pub struct LocalTransport {
    from: NodeId,
    network: LocalNetwork,
}

impl Transport for LocalTransport {
    fn send(&self, to: NodeId, messages: Vec<Message>) {
        let (sink, delay) = {
            let mut s = self.network.lock();
            if s.cut.contains(&(self.from, to)) {
                return;
            }
            let loss = s.loss;
            if loss > 0.0 && s.rng.random_bool(loss) {
                return;
            }
            (s.nodes.get(&to).cloned(), s.delay)
        };
        let Some(sink) = sink else { return };
        match delay {
            None => {
                let _ = sink.send(messages);
            }
            Some(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = sink.send(messages);
                });
            }
        }
    }
}
