//! The checkers can fail: clusters with a deliberately broken node must be
//! caught, while the same seeds with honest nodes pass.

use std::collections::HashMap;

use bytes::BytesMut;
use keel_raft::{AppendResponse, Message, MessageBody, NodeId};
use keel_sim::{run, Property, Scenario, SimOptions, Simulation, Tamper};

const LIAR: NodeId = 3;
const SEEDS: u64 = 60;

/// Grants every vote and pre-vote it is asked for, even a second one in a term.
struct LyingVoter;

impl Tamper for LyingVoter {
    fn outgoing(&mut self, m: &mut Message) {
        if m.from == LIAR {
            if let MessageBody::VoteResponse(r) = &mut m.body {
                r.granted = true;
            }
        }
    }
}

/// Claims to hold entries it refused: turns each rejection into an acknowledgement.
struct LyingAcker;

impl Tamper for LyingAcker {
    fn outgoing(&mut self, m: &mut Message) {
        if m.from == LIAR {
            if let MessageBody::AppendResponse(AppendResponse::Rejected {
                rejected_index, ..
            }) = m.body
            {
                m.body = MessageBody::AppendResponse(AppendResponse::Accepted {
                    index: rejected_index,
                });
            }
        }
    }
}

/// Answers forwarded reads with a stale read index, as a leader that skipped
/// the quorum round (or served from an old commit index) would.
struct StaleReads;

impl Tamper for StaleReads {
    fn outgoing(&mut self, m: &mut Message) {
        if let MessageBody::ReadIndexResponse { index, .. } = &mut m.body {
            *index = index.saturating_sub(5);
        }
    }
}

/// Flips a bit of the state every snapshot it streams carries.
/// Flips a bit of the state machine's digest in the snapshots it sends.
/// A snapshot's data starts with keel-node's address book (its length as
/// a u32, then the book), then the state machine's header: the last
/// command's index (8 bytes), then the digest. The book's length is read
/// from the first four bytes as they pass, per snapshot and receiver.
#[derive(Default)]
struct CorruptSnapshots {
    heads: HashMap<(NodeId, u64, u64), Vec<u8>>,
}

impl Tamper for CorruptSnapshots {
    fn outgoing(&mut self, m: &mut Message) {
        if let MessageBody::Snapshot(chunk) = &mut m.body {
            let key = (m.to, chunk.meta.last.term, chunk.meta.last.index);
            let head = self.heads.entry(key).or_default();
            let start = chunk.offset as usize;
            let end = start + chunk.data.len();
            while head.len() < 4 && (start..end).contains(&head.len()) {
                head.push(chunk.data[head.len() - start]);
            }
            let Ok(book) = <[u8; 4]>::try_from(&head[..]) else {
                return;
            };
            let digest = 4 + u32::from_le_bytes(book) as usize + 8;
            if (start..end).contains(&digest) {
                let mut data = BytesMut::from(&chunk.data[..]);
                data[digest - start] ^= 1;
                chunk.data = data.freeze();
            }
        }
    }
}

fn options(seed: u64) -> SimOptions {
    let mut options = SimOptions::new(seed);
    options.scenario = Scenario::Chaos;
    options
}

/// Runs SEEDS seeds with a broken node; returns the properties caught.
fn caught(make: impl Fn() -> Box<dyn Tamper>) -> Vec<Property> {
    (0..SEEDS)
        .filter_map(|seed| {
            Simulation::new(options(seed))
                .with_tamper(make())
                .run()
                .err()
        })
        .map(|f| f.violation.property)
        .collect()
}

#[test]
fn honest_control_runs_pass() {
    for seed in 0..SEEDS {
        if let Err(f) = run(options(seed)) {
            panic!("honest run failed: {f}");
        }
    }
}

#[test]
fn a_node_that_votes_twice_breaks_election_safety() {
    let props = caught(|| Box::new(LyingVoter));
    assert!(
        props.contains(&Property::ElectionSafety),
        "two leaders in one term should have been caught; saw {props:?}"
    );
}

#[test]
fn a_node_that_acks_what_it_lacks_breaks_commit_safety() {
    let props = caught(|| Box::new(LyingAcker));
    let safety = [
        Property::LeaderCompleteness,
        Property::StateMachineSafety,
        Property::LogMatching,
    ];
    assert!(
        props.iter().any(|p| safety.contains(p)),
        "lost committed entries should have been caught; saw {props:?}"
    );
}

#[test]
fn stale_read_indexes_break_linearizability() {
    let props = caught(|| Box::new(StaleReads));
    assert!(
        props.contains(&Property::Linearizability),
        "stale reads should have been caught; saw {props:?}"
    );
}

#[test]
fn corrupt_snapshots_break_state_machine_safety() {
    let props = caught(|| Box::<CorruptSnapshots>::default());
    assert!(
        props.contains(&Property::StateMachineSafety),
        "a snapshot of another state should have been caught; saw {props:?}"
    );
}
