//! The store: opening it, its published state, and the read side. The
//! layout on disk is [`schema`](crate::schema)'s. One writer at a time
//! applies commands; readers take a storage snapshot
//! together with the revision it holds, so a read never sees half a write.

use std::collections::BTreeMap;
use std::mem;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use fjall::{Database, Keyspace, OwnedWriteBatch, Readable, Snapshot};

use crate::auth::AuthState;
use crate::compaction::{Fate, Garbage, Pass};
use crate::encoding::{is_tombstone, split_version_key, DerivedIndexer};
use crate::range::{self, Committed};
use crate::schema::{load_leases, revision_bytes, Keyspaces, Lease, State, INDEXED, RESTORING};
use crate::MvccError;
use keel_api::etcdserverpb::{AlarmMember, Member, RangeRequest, RangeResponse};

/// Entries per write batch when rebuilding, clearing or restoring.
const WRITE_BATCH: usize = 4096;

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Bytes of block cache for the storage engine.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
        }
    }
}

/// The etcd-style multi-version key-value store: keel's replicated state.
/// Cloning is cheap; clones share the store.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// A consistent view of the whole store, for streaming a snapshot while
/// commands keep being applied.
pub struct StoreView {
    pub(crate) snapshot: Snapshot,
    pub(crate) keyspaces: Keyspaces,
}

pub(crate) struct Inner {
    pub db: Database,
    pub keyspaces: Keyspaces,
    /// The state as of the last committed batch.
    pub state: RwLock<State>,
    /// The leases as of the last committed batch (apart from `state`,
    /// which each batch copies: there can be very many leases).
    pub leases: RwLock<BTreeMap<i64, Lease>>,
    /// The auth state as of the last committed batch.
    pub auth: RwLock<Arc<AuthState>>,
    /// Held by whoever writes: applying a batch, restoring, or removing
    /// compacted history (whose progress it holds).
    pub writer: Mutex<Option<Pass>>,
}

/// A hash of the key-value history up to a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32C over every version at or below the revision that
    /// compaction keeps.
    pub hash: u32,
    /// The store's revision when hashed.
    pub revision: i64,
    /// The store's compaction point when hashed.
    pub compact_revision: i64,
}

impl Store {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, MvccError> {
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            // One background thread flushes and compacts. With two (fjall's
            // default on two cores) the first hands every compaction to the
            // second by sending it back into their shared queue, and spins
            // on its own message while the second is busy: ~10% of a
            // member's CPU under writes (docs/benchmarks.md).
            .worker_threads(1)
            .open()?;
        let keyspaces = Keyspaces::open(&db)?;
        let state = State::load(&db.snapshot(), &keyspaces)?;
        let leases = load_leases(&db.snapshot(), &keyspaces)?;
        let auth = crate::apply::load_auth(&db.snapshot(), &keyspaces.auth)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                keyspaces,
                state: RwLock::new(state),
                leases: RwLock::new(leases),
                auth: RwLock::new(Arc::new(auth)),
                writer: Mutex::new(None),
            }),
        };
        let keyspaces = &store.inner.keyspaces;
        let indexed_at = keyspaces.meta.get(INDEXED)?;
        let revision = revision_bytes(store.state().revision);
        if indexed_at.as_deref() != Some(&revision[..]) {
            store.clear(&keyspaces.live)?;
            store.clear(&keyspaces.changes)?;
            store.clear(&keyspaces.attached)?;
            store.build_indexes(revision)?;
        }
        Ok(store)
    }

    /// Fills the (empty) derived indexes from `kv` and marks them built as
    /// of `revision`, the store's.
    fn build_indexes(&self, revision: [u8; 8]) -> Result<(), MvccError> {
        let keyspaces = &self.inner.keyspaces;
        let snapshot = self.inner.db.snapshot();
        let mut batch = self.inner.db.batch();
        let mut indexer = DerivedIndexer::default();
        for entry in snapshot.iter(&keyspaces.kv) {
            let (stored, value) = entry.into_inner()?;
            indexer.index(keyspaces, &mut batch, &stored, &value)?;
            self.commit_if_full(&mut batch)?;
        }
        // The marker of an older binary, which kept only `live`.
        batch.remove(&keyspaces.meta, b"live-indexed");
        batch.insert(&keyspaces.meta, INDEXED, revision);
        batch.commit()?;
        Ok(())
    }

    /// Commits a bulk write's `batch` and starts a new one once it holds
    /// [`WRITE_BATCH`] entries, so memory stays bounded.
    pub(crate) fn commit_if_full(&self, batch: &mut OwnedWriteBatch) -> Result<(), MvccError> {
        if batch.len() >= WRITE_BATCH {
            mem::replace(batch, self.inner.db.batch()).commit()?;
        }
        Ok(())
    }

    /// Removes every entry of `keyspace` except the restore marker.
    pub(crate) fn clear(&self, keyspace: &Keyspace) -> Result<(), MvccError> {
        let snapshot = self.inner.db.snapshot();
        let mut batch = self.inner.db.batch();
        for entry in snapshot.iter(keyspace) {
            let key = entry.key()?;
            if keyspace.name().as_ref() == "meta" && key.as_ref() == RESTORING {
                continue;
            }
            batch.remove(keyspace, key);
            self.commit_if_full(&mut batch)?;
        }
        batch.commit()?;
        Ok(())
    }

    pub(crate) fn state(&self) -> State {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Option<Pass>> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A storage snapshot with the revision and compaction point it holds.
    /// Refused while a restore is unfinished: the keyspaces are then half
    /// old, half new.
    pub(crate) fn read_view(&self) -> Result<(Snapshot, i64, i64), MvccError> {
        let (snapshot, state) = self.read_state()?;
        Ok((snapshot, state.revision, state.compacted))
    }

    /// A storage snapshot with the state it holds, taken together; refused
    /// while a restore is unfinished.
    pub(crate) fn read_state(&self) -> Result<(Snapshot, State), MvccError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if state.restoring {
            return Err(MvccError::Restoring);
        }
        Ok((self.inner.db.snapshot(), state.clone()))
    }

    /// The raft index of the last applied command (0 while a restore is
    /// unfinished: the state must then be restored again).
    pub fn applied_index(&self) -> u64 {
        let state = self.state();
        if state.restoring {
            0
        } else {
            state.applied
        }
    }

    /// The store revision: 1 when empty, +1 for each write that changed keys.
    pub fn revision(&self) -> i64 {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision
    }

    /// The revision history was compacted at (0 if never).
    pub fn compact_revision(&self) -> i64 {
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .compacted
    }

    /// Serves a range request from committed state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let (snapshot, current, compacted) = self.read_view()?;
        let versions = Committed {
            snapshot: &snapshot,
            revision: current,
            keyspaces: &self.inner.keyspaces,
        };
        range::execute(&versions, request, current, compacted)
    }

    /// Hashes every version at or below `revision` (0: the current
    /// revision) that compaction keeps. Members that applied the same
    /// commands agree on it.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let (snapshot, current, compacted) = self.read_view()?;
        let revision = if revision <= 0 { current } else { revision };
        if revision > current {
            return Err(MvccError::FutureRevision);
        }
        if revision < compacted {
            return Err(MvccError::Compacted);
        }
        let mut hash = 0u32;
        // What compaction removes is left out, removed yet or not.
        let mut garbage = Garbage::new(compacted);
        for entry in snapshot.iter(&self.inner.keyspaces.kv) {
            let (stored, value) = entry.into_inner()?;
            let (key, rev) = split_version_key(&stored)?;
            if garbage.fate(&key, rev, is_tombstone(&value)) != Fate::Keep {
                continue;
            }
            if rev <= revision {
                hash = crc32c::crc32c_append(hash, &stored);
                hash = crc32c::crc32c_append(hash, &value);
            }
        }
        Ok(HashKv {
            hash,
            revision: current,
            compact_revision: compacted,
        })
    }

    /// The cluster members on record, by id.
    pub fn members(&self) -> Vec<Member> {
        self.state().members.into_values().collect()
    }

    /// The raised alarms.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.state()
            .alarms
            .into_iter()
            .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect()
    }

    /// The bytes of data the store holds: its tables on disk plus what is
    /// still in memory tables (the journal, preallocated, is not counted).
    pub fn db_size(&self) -> u64 {
        let tables: u64 = self
            .inner
            .keyspaces
            .all()
            .iter()
            .map(|keyspace| keyspace.disk_space())
            .sum();
        tables + self.inner.db.write_buffer_size()
    }

    /// A consistent view of the whole store as of the last applied batch.
    /// While a restore is unfinished it holds partial contents (see
    /// [`restoring`](Store::restoring)); the raft node never asks then.
    pub fn view(&self) -> StoreView {
        StoreView {
            snapshot: self.inner.db.snapshot(),
            keyspaces: self.inner.keyspaces.clone(),
        }
    }

    /// The auth state (users, roles, whether auth is on) as of the last
    /// applied batch.
    pub fn auth(&self) -> Arc<AuthState> {
        self.inner
            .auth
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether a restore is under way or was interrupted: the contents are
    /// then partial, and reads are refused until it is redone.
    pub fn restoring(&self) -> bool {
        self.state().restoring
    }

    /// Re-reads the state from storage and publishes it.
    pub(crate) fn reload(&self) -> Result<(), MvccError> {
        let snapshot = self.inner.db.snapshot();
        let state = State::load(&snapshot, &self.inner.keyspaces)?;
        let leases = load_leases(&snapshot, &self.inner.keyspaces)?;
        let auth = crate::apply::load_auth(&snapshot, &self.inner.keyspaces.auth)?;
        *self
            .inner
            .auth
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(auth);
        *self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state;
        *self
            .inner
            .leases
            .write()
            .unwrap_or_else(PoisonError::into_inner) = leases;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::encoding::{encode_version, version_key};
    use crate::schema::REVISION;
    use crate::Command;
    use keel_api::etcdserverpb::{DeleteRangeRequest, PutRequest};
    use keel_api::keelpb::{self, command::Op};

    fn every_key() -> RangeRequest {
        RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..Default::default()
        }
    }

    #[test]
    fn a_store_without_the_derived_indexes_gets_them_built_on_opening_and_restoring() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let put = |key: &'static [u8], value: &'static [u8]| {
            Op::Put(PutRequest {
                key: Bytes::from_static(key),
                value: Bytes::from_static(value),
                ..Default::default()
            })
        };
        let ops = [
            put(b"a", b"1"),
            put(b"b", b"1"),
            put(b"a\0", b"1"),
            put(b"a", b"2"),
            Op::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"b"),
                ..Default::default()
            }),
            put(b"c", b"1"),
        ];
        let commands = ops
            .into_iter()
            .zip(1..)
            .map(|(op, index)| {
                (
                    index,
                    Command(keelpb::Command {
                        op: Some(op),
                        auth: None,
                    }),
                )
            })
            .collect();
        for result in store.apply_batch(commands).responses {
            result.unwrap();
        }
        let before = store.range(&every_key()).unwrap();
        assert_eq!(before.kvs.len(), 3);
        let all = every_key();
        let history = |store: &Store| {
            store
                .events(&all.key, &all.range_end, 1, 100, usize::MAX)
                .unwrap()
        };
        let events = history(&store);
        assert_eq!(events.events.len(), 6);

        // A snapshot restored elsewhere gets them built.
        let mut stream = Vec::new();
        Store::write_snapshot(store.view(), &mut stream).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let copy = Store::open(elsewhere.path(), StoreOptions::default()).unwrap();
        copy.restore(&mut stream.as_slice()).unwrap();
        assert_eq!(copy.range(&every_key()).unwrap(), before);
        assert_eq!(history(&copy), events);

        // What a store written before the indexes existed looks like.
        store.clear(&store.inner.keyspaces.live).unwrap();
        store.clear(&store.inner.keyspaces.changes).unwrap();
        store.inner.keyspaces.meta.remove(INDEXED).unwrap();
        assert!(store.range(&every_key()).unwrap().kvs.is_empty());
        assert!(history(&store).events.is_empty());
        drop(store);

        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert_eq!(store.range(&every_key()).unwrap(), before);
        assert_eq!(history(&store), events);
    }

    #[test]
    fn writes_by_a_binary_without_the_live_index_get_it_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let put = |key: &'static [u8]| {
            Command(keelpb::Command {
                op: Some(Op::Put(PutRequest {
                    key: Bytes::from_static(key),
                    value: Bytes::from_static(b"1"),
                    ..Default::default()
                })),
                auth: None,
            })
        };
        for result in store
            .apply_batch(vec![(1, put(b"a")), (2, put(b"b"))])
            .responses
        {
            result.unwrap();
        }
        // The marker is local: a snapshot does not carry it.
        let mut stream = Vec::new();
        Store::write_snapshot(store.view(), &mut stream).unwrap();
        assert!(!stream.windows(INDEXED.len()).any(|w| w == INDEXED));

        // An older binary deletes "a" at revision 4: `kv` and the revision
        // move on, `live` and its marker do not.
        let keyspaces = &store.inner.keyspaces;
        let mut batch = store.inner.db.batch();
        batch.insert(&keyspaces.kv, version_key(b"a", 4), encode_version(None, 0));
        batch.insert(&keyspaces.meta, REVISION, revision_bytes(4));
        batch.commit().unwrap();
        drop(store);

        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let keys: Vec<_> = store
            .range(&every_key())
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, vec![Bytes::from_static(b"b")]);
    }
}
