//! The replicated state machine every simulated node runs, through keel-node's
//! [`StateMachine`](keel_node::StateMachine) trait: a hash chain over the
//! commands it applied. Two nodes at the same applied index hold the same
//! digest exactly when they applied the same commands, so comparing digests
//! checks whole states, including states that arrived in a snapshot.

use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use keel_raft::Index;

/// Bytes a snapshot's header takes: the last command's index and the digest.
pub const SNAPSHOT_HEADER_BYTES: usize = 16;

/// A client command: its id, and filler bytes so that sizes vary.
pub type Command = (u64, Vec<u8>);

/// A node's state machine: what it applied, summed up. In memory: a
/// restart restores it from the node's snapshot and applies the log again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    /// The index of the last command applied.
    pub last_command: Index,
    /// A hash chain over every applied command's index, id and filler.
    pub digest: u64,
    journal: Journal,
}

/// What a state machine did since the simulator last looked, so that the
/// checkers see the state after every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Journal {
    /// The digest of the snapshot it was restored from, if it was.
    pub restored: Option<u64>,
    /// The commands applied (after the restore): `(index, command id,
    /// digest right after it)`.
    pub applied: Vec<(Index, u64, u64)>,
}

impl StateMachine {
    /// Takes what happened since the last call.
    pub fn take_journal(&mut self) -> Journal {
        std::mem::take(&mut self.journal)
    }

    /// The snapshot payload: the header, then `padding` filler bytes so
    /// that snapshots have realistic sizes and travel in several chunks.
    pub fn snapshot_data(&self, padding: usize) -> Bytes {
        use keel_node::StateMachine as _;
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + padding);
        Self::write_snapshot(self.snapshot(), &mut out).expect("writing to memory cannot fail");
        let mut b = BytesMut::from(&out[..]);
        b.put_bytes(0x5A, padding);
        b.freeze()
    }
}

impl keel_node::StateMachine for StateMachine {
    type Command = Command;
    /// The id of the command applied.
    type Response = u64;
    /// The header of a snapshot: the last command's index and the digest.
    type Snapshot = (Index, u64);

    fn apply(&mut self, index: Index, (id, filler): Command) -> u64 {
        debug_assert!(index > self.last_command, "commands apply in order");
        let mut h = Fnv::new(self.digest);
        h.write(&index.to_be_bytes());
        h.write(&id.to_be_bytes());
        h.write(&filler);
        self.last_command = index;
        self.digest = h.finish();
        self.journal.applied.push((index, id, self.digest));
        id
    }

    fn snapshot(&self) -> (Index, u64) {
        (self.last_command, self.digest)
    }

    fn write_snapshot((last_command, digest): (Index, u64), out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&last_command.to_be_bytes())?;
        out.write_all(&digest.to_be_bytes())
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String> {
        let mut header = [0; SNAPSHOT_HEADER_BYTES];
        snapshot
            .read_exact(&mut header)
            .map_err(|e| format!("reading the snapshot header: {e}"))?;
        let (last_command, digest) = header.split_at(8);
        self.last_command = u64::from_be_bytes(last_command.try_into().expect("8 bytes"));
        self.digest = u64::from_be_bytes(digest.try_into().expect("8 bytes"));
        self.journal = Journal {
            restored: Some(self.digest),
            applied: Vec::new(),
        };
        Ok(())
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
    use keel_node::StateMachine as _;

    #[test]
    fn digests_depend_on_every_command_and_survive_snapshots() {
        let mut a = StateMachine::default();
        let mut b = StateMachine::default();
        assert_eq!(a.apply(1, (7, vec![1])), 7);
        b.apply(1, (7, vec![2]));
        assert_ne!(a.digest, b.digest);
        let mut restored = StateMachine::default();
        restored.restore(&mut &a.snapshot_data(100)[..]).unwrap();
        assert_eq!((restored.last_command, restored.digest), (1, a.digest));
        assert_eq!(restored.take_journal().restored, Some(a.digest));
        assert!(restored.restore(&mut &b"short"[..]).is_err());
    }
}
