//! A simulated node's disk: keel-node's [`LogStore`] over an in-memory log.
//!
//! The log (a `MemStorage`, shared with the node's core) is what the disk
//! holds; what was not synced is lost in a crash. As in keel-wal, a write
//! that only moves the commit index is not synced, so a crash takes the
//! node's commit index back to the last sync (never below what its state
//! machine applied: a durable state machine implies those entries
//! committed). The snapshot being received is staged in volatile memory,
//! so the core must ask for the transfer again. A crash may strike in a
//! sync, just before the write (the leader's appends have left, its own
//! copy is lost) or just after it (entries are durable, the
//! acknowledgements never leave).

use bytes::BytesMut;
use keel_node::replica::{LogStore, Restore};
use keel_raft::{
    ConfState, Entry, HardState, MemStorage, SnapshotChunk, SnapshotMeta, StorageError,
};
use rand::rngs::StdRng;
use rand::Rng;

/// Why a write to a simulated disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The node crashed during the sync (`when` says on which side of it).
    #[error("the node crashed {when}")]
    Crashed {
        /// "before persisting" or "after persisting".
        when: &'static str,
    },
    /// The core handed out entries that do not fit the log.
    #[error("entries that do not fit the log: {0}")]
    Log(#[from] StorageError),
    /// The core handed out a chunk that does not follow the staged ones.
    #[error("a snapshot chunk at {offset} after {staged} bytes")]
    ChunkOutOfOrder {
        /// The chunk's offset.
        offset: u64,
        /// Bytes staged so far.
        staged: u64,
    },
    /// The snapshot to install is not the one staged.
    #[error("a snapshot of {size} bytes installed from {staged} bytes received")]
    SnapshotSize {
        /// The size the metadata gives.
        size: u64,
        /// Bytes staged.
        staged: u64,
    },
    /// The state machine refused the snapshot.
    #[error("the state machine refused the snapshot: {0}")]
    Restore(String),
}

/// One life of a node's disk.
pub struct SimDisk {
    log: MemStorage,
    /// The snapshot being received: volatile.
    staging: BytesMut,
    rng: StdRng,
    /// The chance of a crash on each side of each sync.
    crash_chance: f64,
    /// The snapshot installed since the simulator last looked.
    installed: Option<SnapshotMeta>,
    /// The hard state as of the last sync: what a crash leaves.
    synced: HardState,
}

impl SimDisk {
    /// A life of the disk holding `log`, crashing in a sync with
    /// `crash_chance` (drawn from `rng`).
    pub fn new(log: MemStorage, rng: StdRng, crash_chance: f64) -> Self {
        SimDisk {
            synced: log.hard_state(),
            log,
            staging: BytesMut::new(),
            rng,
            crash_chance,
            installed: None,
        }
    }

    /// Crashes no more (faults have stopped).
    pub fn stop_crashing(&mut self) {
        self.crash_chance = 0.0;
    }

    /// Takes the snapshot installed since the last call, if any. It is
    /// installed even when the sync that follows it crashed.
    pub fn take_installed(&mut self) -> Option<SnapshotMeta> {
        self.installed.take()
    }

    /// The hard state a crash leaves on this disk.
    pub fn synced_hard_state(&self) -> HardState {
        self.synced
    }

    fn maybe_crash(&mut self, when: &'static str) -> Result<(), DiskError> {
        if self.crash_chance > 0.0 && self.rng.random_bool(self.crash_chance) {
            return Err(DiskError::Crashed { when });
        }
        Ok(())
    }
}

impl LogStore for SimDisk {
    type Error = DiskError;

    fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), DiskError> {
        self.maybe_crash("before persisting")?;
        self.log.append(entries)?;
        // As keel-wal: a write that only moves the commit index is not synced.
        let synced = &self.synced;
        let must_sync = !entries.is_empty()
            || hard_state.is_some_and(|hs| (hs.term, hs.vote) != (synced.term, synced.vote));
        if let Some(hs) = hard_state {
            self.log.set_hard_state(hs);
        }
        if must_sync {
            self.synced = self.log.hard_state();
        }
        self.maybe_crash("after persisting")
    }

    fn set_conf_state(&mut self, conf_state: ConfState) {
        // Durable together with the applied index it belongs to.
        self.log.set_conf_state(conf_state);
    }

    fn receive_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), DiskError> {
        if chunk.offset == 0 {
            self.staging.clear();
        }
        let staged = self.staging.len() as u64;
        if chunk.offset != staged {
            return Err(DiskError::ChunkOutOfOrder {
                offset: chunk.offset,
                staged,
            });
        }
        self.staging.extend_from_slice(&chunk.data);
        Ok(())
    }

    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        restore: Restore<'_>,
    ) -> Result<(), DiskError> {
        let data = self.staging.split().freeze();
        if data.len() as u64 != meta.size {
            return Err(DiskError::SnapshotSize {
                size: meta.size,
                staged: data.len() as u64,
            });
        }
        restore(&mut &data[..]).map_err(DiskError::Restore)?;
        self.log.apply_snapshot(meta.clone(), data);
        // Installing syncs (keel-node syncs the file, then the WAL's marker).
        self.synced = self.log.hard_state();
        self.installed = Some(meta);
        Ok(())
    }
}
