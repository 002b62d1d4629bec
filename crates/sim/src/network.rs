//! A seeded, faulty network in virtual time: messages are delayed by a random
//! amount (so they reorder), may be lost or duplicated, and links can be cut
//! in one direction or both.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Mutex;

use keel_raft::{Message, NodeId};
use rand::rngs::StdRng;
use rand::Rng;

/// Virtual time, in simulator steps.
pub type Time = u64;

/// How the network misbehaves.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delivery delay, in steps (at least 1).
    pub min_delay: Time,
    /// Largest delivery delay, in steps. A range wider than one reorders messages.
    pub max_delay: Time,
}

impl NetworkFaults {
    /// A perfect network: no loss, no duplicates, delivery after one step.
    pub fn none() -> Self {
        NetworkFaults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: 1,
            max_delay: 1,
        }
    }
}

/// The transport a simulated node sends through: batches wait here until
/// the simulator hands them to the [`Network`].
#[derive(Debug, Default)]
pub struct Outbox(Mutex<Vec<Vec<Message>>>);

impl Outbox {
    /// Takes every batch sent since the last call, in sending order.
    pub fn take(&self) -> Vec<Vec<Message>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl keel_node::Transport for Outbox {
    fn send(&self, _to: NodeId, messages: Vec<Message>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(messages);
    }
}

/// A message on its way.
#[derive(Debug, PartialEq, Eq)]
struct InFlight {
    deliver_at: Time,
    /// Send order, so that delivery order is fully determined by the seed.
    seq: u64,
    message: Message,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The network between simulated nodes.
#[derive(Debug)]
pub struct Network {
    /// The current fault profile.
    pub faults: NetworkFaults,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Directed links that drop everything: `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    seq: u64,
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages dropped by loss or a cut link.
    pub dropped: u64,
}

impl Network {
    /// A network with the given faults and no cut links.
    pub fn new(faults: NetworkFaults) -> Self {
        Network {
            faults,
            queue: BinaryHeap::new(),
            cut: BTreeSet::new(),
            seq: 0,
            sent: 0,
            dropped: 0,
        }
    }

    /// Hands a message to the network at time `now`.
    pub fn send(&mut self, now: Time, message: Message, rng: &mut StdRng) {
        self.sent += 1;
        if self.faults.loss > 0.0 && rng.random_bool(self.faults.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if self.faults.duplicate > 0.0 && rng.random_bool(self.faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay =
                rng.random_range(self.faults.min_delay.max(1)..=self.faults.max_delay.max(1));
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                deliver_at: now + delay,
                seq: self.seq,
                message: message.clone(),
            }));
        }
    }

    /// The next message due at or before `now`, skipping those whose link is
    /// cut at delivery time.
    pub fn next_due(&mut self, now: Time) -> Option<Message> {
        while self.queue.peek().is_some_and(|m| m.0.deliver_at <= now) {
            let Reverse(m) = self.queue.pop().expect("peeked");
            if self.cut.contains(&(m.message.from, m.message.to)) {
                self.dropped += 1;
                continue;
            }
            return Some(m.message);
        }
        None
    }

    /// Cuts the link `from → to` (one direction only).
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Splits the nodes into `groups`: links between groups are cut both ways.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a {
                    for &y in b {
                        self.cut.insert((x, y));
                        self.cut.insert((y, x));
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Messages still on their way.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::MessageBody;
    use rand::SeedableRng;

    fn msg(from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::HeartbeatResponse(Default::default()),
        }
    }

    #[test]
    fn delivers_in_time_order_and_respects_cuts() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut net = Network::new(NetworkFaults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: 1,
            max_delay: 10,
        });
        for _ in 0..50 {
            net.send(0, msg(1, 2), &mut rng);
        }
        net.cut_one_way(2, 1);
        net.send(0, msg(2, 1), &mut rng);
        let mut delivered = 0;
        for now in 0..=10 {
            while let Some(m) = net.next_due(now) {
                assert_eq!(m.from, 1, "the cut direction never delivers");
                delivered += 1;
            }
        }
        assert_eq!(delivered, 50);
        assert_eq!(net.dropped, 1);
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut net = Network::new(NetworkFaults {
            loss: 0.5,
            duplicate: 0.5,
            min_delay: 1,
            max_delay: 1,
        });
        for _ in 0..1000 {
            net.send(0, msg(1, 2), &mut rng);
        }
        let mut delivered = 0;
        while net.next_due(1).is_some() {
            delivered += 1;
        }
        // About 500 survive, and about half of those twice.
        assert!((600..900).contains(&delivered), "delivered {delivered}");
    }
}
