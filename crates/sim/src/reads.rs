//! Linearizable reads, checked. Clients start reads on random nodes; a read
//! *returns* once its node has a [`ReadState`] for it and has applied up to
//! the read's index, and it returns the node's state at that moment.
//!
//! The state machine is a log prefix, so every operation has a *level*: a
//! write is the index of its entry, a read the applied index it returned.
//! A history of such operations is linearizable when no operation observes a
//! level below one that completed before it started. Writes complete when
//! they are applied anywhere (the earliest moment a leader could acknowledge
//! them), and a read never returns more than was applied somewhere, so the
//! highest index applied anywhere is the *floor* every later read must reach.
//! ReadIndex promises more than that: the read index itself is at least the
//! floor at the read's start, and that is what is checked.

use std::collections::BTreeMap;

use keel_raft::{Index, NodeId, ReadState};

use crate::checker::{Property, Violation};

/// A read started and not yet returned.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    node: NodeId,
    /// The floor when the read started.
    floor: Index,
    /// The read index, once the node has a ReadState for it.
    index: Option<Index>,
}

/// The reads in flight and the linearizability check on their results.
#[derive(Debug, Default)]
pub struct Reads {
    next_request: u64,
    pending: BTreeMap<u64, PendingRead>,
    /// Reads that returned.
    pub returned: u64,
}

impl Reads {
    /// A client starts a read on `node` while `floor` is the highest index
    /// applied anywhere; returns the request id to hand to `read_index`.
    pub fn start(&mut self, node: NodeId, floor: Index) -> u64 {
        self.next_request += 1;
        let read = PendingRead {
            node,
            floor,
            index: None,
        };
        self.pending.insert(self.next_request, read);
        self.next_request
    }

    /// The read was refused or its node crashed: its client gives up.
    pub fn abandon(&mut self, request: u64) {
        self.pending.remove(&request);
    }

    /// `node` crashed: every read waiting on it is abandoned.
    pub fn abandon_node(&mut self, node: NodeId) {
        self.pending.retain(|_, r| r.node != node);
    }

    /// `node` handed out `state`. States for reads this node did not start
    /// (or that were abandoned) are ignored.
    pub fn observe_read_state(&mut self, node: NodeId, state: ReadState) {
        if let Some(read) = self.pending.get_mut(&state.request) {
            if read.node == node && read.index.is_none() {
                read.index = Some(state.index);
            }
        }
    }

    /// `node` has applied up to `applied`: its reads whose index it reached
    /// return now. Returns the highest level returned, if any.
    pub fn serve(&mut self, node: NodeId, applied: Index) -> Result<Option<Index>, Violation> {
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, r)| r.node == node && r.index.is_some_and(|i| i <= applied))
            .map(|(request, _)| *request)
            .collect();
        let mut level = None;
        for request in ready {
            let read = self.pending.remove(&request).expect("listed above");
            let index = read.index.expect("filtered on it");
            if index < read.floor {
                return Err(Violation {
                    property: Property::Linearizability,
                    detail: format!(
                        "read {request} on node {node} was served at index {index} (state at {applied}), \
                         but index {} was applied somewhere before the read started",
                        read.floor
                    ),
                });
            }
            self.returned += 1;
            level = Some(applied);
        }
        Ok(level)
    }

    /// Reads still waiting.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_below_the_floor_at_its_start_is_caught() {
        let mut reads = Reads::default();
        let fresh = reads.start(1, 5);
        let stale = reads.start(2, 5);
        reads.observe_read_state(
            1,
            ReadState {
                request: fresh,
                index: 6,
            },
        );
        reads.observe_read_state(
            2,
            ReadState {
                request: stale,
                index: 4,
            },
        );
        assert_eq!(reads.serve(1, 5).unwrap(), None, "not applied far enough");
        assert_eq!(reads.serve(1, 7).unwrap(), Some(7));
        let err = reads.serve(2, 9).unwrap_err();
        assert_eq!(err.property, Property::Linearizability);
    }

    #[test]
    fn states_for_other_nodes_or_abandoned_reads_are_ignored() {
        let mut reads = Reads::default();
        let r = reads.start(1, 3);
        reads.observe_read_state(
            2,
            ReadState {
                request: r,
                index: 0,
            },
        );
        assert_eq!(reads.serve(2, 10).unwrap(), None);
        reads.abandon_node(1);
        reads.observe_read_state(
            1,
            ReadState {
                request: r,
                index: 0,
            },
        );
        assert_eq!(reads.serve(1, 10).unwrap(), None);
        assert_eq!(reads.in_flight(), 0);
    }
}
