//! Linearizable reads, checked. Clients start reads on random nodes; a read
//! *returns* once its node's leader confirmed a read index and the node has
//! applied up to it, and it returns the node's state at that moment.
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

use keel_raft::Index;

use crate::checker::{Property, Violation};

/// The reads in flight and the linearizability check on their results.
#[derive(Debug, Default)]
pub struct Reads {
    next_request: u64,
    /// Reads started and not yet returned: request → the floor at its start.
    floors: BTreeMap<u64, Index>,
    /// Reads that returned.
    pub returned: u64,
}

impl Reads {
    /// A client starts a read while `floor` is the highest index applied
    /// anywhere; returns the read's id.
    pub fn start(&mut self, floor: Index) -> u64 {
        self.next_request += 1;
        self.floors.insert(self.next_request, floor);
        self.next_request
    }

    /// The read failed (refused, timed out, its node stopped): its client
    /// gives up.
    pub fn abandon(&mut self, request: u64) {
        self.floors.remove(&request);
    }

    /// Read `request` returned with `read_index` confirmed and the state at
    /// `applied`: the read index must reach the floor at the read's start.
    pub fn served(
        &mut self,
        request: u64,
        read_index: Index,
        applied: Index,
    ) -> Result<(), Violation> {
        let Some(floor) = self.floors.remove(&request) else {
            return Err(Violation {
                property: Property::NodeError,
                detail: format!("read {request} returned twice, or was never started"),
            });
        };
        if read_index < floor {
            return Err(Violation {
                property: Property::Linearizability,
                detail: format!(
                    "read {request} was served at index {read_index} (state at {applied}), \
                     but index {floor} was applied somewhere before the read started"
                ),
            });
        }
        self.returned += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_below_the_floor_at_its_start_is_caught() {
        let mut reads = Reads::default();
        let fresh = reads.start(5);
        let stale = reads.start(5);
        reads.served(fresh, 6, 7).unwrap();
        let err = reads.served(stale, 4, 9).unwrap_err();
        assert_eq!(err.property, Property::Linearizability);
        assert_eq!(reads.returned, 1);
    }

    #[test]
    fn an_abandoned_read_that_returns_anyway_is_caught() {
        let mut reads = Reads::default();
        let r = reads.start(3);
        reads.abandon(r);
        assert_eq!(
            reads.served(r, 10, 10).unwrap_err().property,
            Property::NodeError
        );
    }
}
