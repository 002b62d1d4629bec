//! The replicated state machine every simulated node runs: a hash chain over
//! the entries it applied. Two nodes at the same applied index hold the same
//! digest exactly when they applied the same entries, so comparing digests
//! checks whole states, including states that arrived in a snapshot.

use bytes::{BufMut, Bytes, BytesMut};
use keel_raft::{Entry, Index};

/// Bytes a snapshot's header takes: the applied index and the digest.
pub const SNAPSHOT_HEADER_BYTES: usize = 16;

/// A node's durable state machine: what it applied, summed up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// The index of the last entry applied.
    pub applied: Index,
    /// A hash chain over every applied entry's index, term and payload.
    pub digest: u64,
}

impl StateMachine {
    /// Applies `entry`, which must be the next one.
    pub fn apply(&mut self, entry: &Entry) {
        debug_assert_eq!(entry.index, self.applied + 1, "entries apply in order");
        let mut h = Fnv::new(self.digest);
        h.write(&entry.index.to_be_bytes());
        h.write(&entry.term.to_be_bytes());
        h.write(&entry.data);
        self.applied = entry.index;
        self.digest = h.finish();
    }

    /// The snapshot payload: the header, then `padding` filler bytes so
    /// that snapshots have realistic sizes and travel in several chunks.
    pub fn snapshot_data(&self, padding: usize) -> Bytes {
        let mut b = BytesMut::with_capacity(SNAPSHOT_HEADER_BYTES + padding);
        b.put_u64(self.applied);
        b.put_u64(self.digest);
        b.put_bytes(0x5A, padding);
        b.freeze()
    }

    /// Restores a state machine from a snapshot payload, if it has a header.
    pub fn from_snapshot(data: &[u8]) -> Option<Self> {
        let header = data.get(..SNAPSHOT_HEADER_BYTES)?;
        let (applied, digest) = header.split_at(8);
        Some(StateMachine {
            applied: u64::from_be_bytes(applied.try_into().ok()?),
            digest: u64::from_be_bytes(digest.try_into().ok()?),
        })
    }
}

/// 64-bit FNV-1a, seeded with the previous link of the chain.
struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new(prev: u64) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.write(&prev.to_be_bytes());
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_depend_on_every_entry_and_survive_snapshots() {
        let mut a = StateMachine::default();
        let mut b = StateMachine::default();
        a.apply(&Entry::normal(1, 1, Bytes::from_static(b"x")));
        b.apply(&Entry::normal(1, 1, Bytes::from_static(b"y")));
        assert_ne!(a.digest, b.digest);
        let restored = StateMachine::from_snapshot(&a.snapshot_data(100)).unwrap();
        assert_eq!(restored, a);
        assert_eq!(StateMachine::from_snapshot(b"short"), None);
    }
}
