//! How the store lays out its state in fjall: the keyspaces, the meta keys,
//! the in-memory [`State`] loaded from them, and the byte forms of
//! revisions and alarms. The other modules of the store build on this one;
//! it depends on none of them.
//!
//! Five keyspaces hold the replicated state: `kv` (every key version, see
//! [`encoding`](crate::encoding)), `meta` (applied index, revision,
//! compaction point), `members`, `alarms` and `leases`. Three more are
//! indexes derived from `kv`, written in the same batches, and rebuilt
//! rather than streamed in snapshots: `live` holds the newest version of
//! each existing key, `changes` names the key of every write in revision
//! order (for reading the history of a range back without scanning the
//! range), and `attached` pairs each lease with the keys it holds.

use std::collections::{BTreeMap, BTreeSet};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable, Snapshot};
use keel_api::etcdserverpb::Member;
use prost::Message;

use crate::MvccError;

/// Meta key of the last applied raft index.
pub(crate) const APPLIED: &[u8] = b"applied";
/// Meta key of the store revision.
pub(crate) const REVISION: &[u8] = b"revision";
/// Meta key of the compaction point.
pub(crate) const COMPACTED: &[u8] = b"compacted";
/// Meta key of the revision below which compacted history is removed
/// (missing in stores that removed it while applying: then the point).
pub(crate) const PHYSICAL: &[u8] = b"physically-compacted";
/// Meta key present while a snapshot is being restored.
pub(crate) const RESTORING: &[u8] = b"restoring";
/// Meta key of the revision the derived indexes (`live`, `changes`) match
/// `kv` at, written with every batch that writes them. Opening rebuilds
/// them when it differs from the store's revision: a store written before
/// they existed, or written by such a binary since. It is local: snapshots
/// do not carry it.
pub(crate) const INDEXED: &[u8] = b"indexed";

/// The tag of `meta` records in a snapshot stream.
pub(crate) const META_TAG: u8 = 1;
/// The tag of `kv` records in a snapshot stream.
pub(crate) const KV_TAG: u8 = 2;

/// The store's keyspaces.
#[derive(Clone)]
pub(crate) struct Keyspaces {
    pub kv: Keyspace,
    pub live: Keyspace,
    pub changes: Keyspace,
    pub attached: Keyspace,
    pub meta: Keyspace,
    pub members: Keyspace,
    pub alarms: Keyspace,
    pub leases: Keyspace,
    pub auth: Keyspace,
}

/// Each keyspace's memtable: flushed once it holds this much. fjall's
/// default (64 MiB) kept up to 64 MiB per busy keyspace in memory; the
/// raft log already holds recent writes, so a smaller table costs nothing
/// in durability and halves a member's resident memory under writes (see
/// docs/benchmarks.md, "Memtables and RSS").
const MEMTABLE_BYTES: u64 = 8 << 20;

impl Keyspaces {
    /// Opens (or creates) every keyspace of `db`.
    pub(crate) fn open(db: &Database) -> Result<Keyspaces, MvccError> {
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
        };
        Ok(Keyspaces {
            kv: open("kv")?,
            live: open("live")?,
            changes: open("changes")?,
            attached: open("attached")?,
            meta: open("meta")?,
            members: open("members")?,
            alarms: open("alarms")?,
            leases: open("leases")?,
            auth: open("auth")?,
        })
    }

    /// Every keyspace, the derived indexes included.
    pub(crate) fn all(&self) -> [&Keyspace; 9] {
        [
            &self.kv,
            &self.live,
            &self.changes,
            &self.attached,
            &self.leases,
            &self.meta,
            &self.members,
            &self.alarms,
            &self.auth,
        ]
    }

    /// Each keyspace a snapshot streams, with its tag in the stream.
    pub(crate) fn tagged(&self) -> [(u8, &Keyspace); 6] {
        [
            (META_TAG, &self.meta),
            (KV_TAG, &self.kv),
            (3, &self.members),
            (4, &self.alarms),
            (5, &self.leases),
            (6, &self.auth),
        ]
    }
}

/// What the store knows besides the key versions; small, kept in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub applied: u64,
    pub revision: i64,
    pub compacted: i64,
    /// Every version compaction removes is gone below this revision.
    pub physical: i64,
    pub members: BTreeMap<u64, Member>,
    /// (member id, alarm type) pairs.
    pub alarms: BTreeSet<(u64, i32)>,
    /// A restore was started and not finished: the state is not usable.
    pub restoring: bool,
}

impl State {
    /// Reads the state a storage snapshot holds.
    pub(crate) fn load(snapshot: &Snapshot, keyspaces: &Keyspaces) -> Result<State, MvccError> {
        let meta = |key: &[u8]| -> Result<Option<u64>, MvccError> {
            match snapshot.get(&keyspaces.meta, key)? {
                None => Ok(None),
                Some(v) => v
                    .as_ref()
                    .try_into()
                    .map(|b| Some(u64::from_be_bytes(b)))
                    .map_err(|_| {
                        MvccError::Corrupt(format!("meta {}", String::from_utf8_lossy(key)))
                    }),
            }
        };
        let mut members = BTreeMap::new();
        for entry in snapshot.iter(&keyspaces.members) {
            let (_, value) = entry.into_inner()?;
            let member = Member::decode(value.as_ref())
                .map_err(|e| MvccError::Corrupt(format!("member record: {e}")))?;
            members.insert(member.id, member);
        }
        let mut alarms = BTreeSet::new();
        for entry in snapshot.iter(&keyspaces.alarms) {
            let (key, _) = entry.into_inner()?;
            alarms.insert(decode_alarm_key(&key)?);
        }
        Ok(State {
            applied: meta(APPLIED)?.unwrap_or(0),
            revision: meta(REVISION)?.map_or(1, |r| r as i64),
            compacted: meta(COMPACTED)?.map_or(0, |r| r as i64),
            physical: meta(PHYSICAL)?.or(meta(COMPACTED)?).map_or(0, |r| r as i64),
            members,
            alarms,
            restoring: snapshot.contains_key(&keyspaces.meta, RESTORING)?,
        })
    }
}

/// How meta records hold a revision.
pub(crate) fn revision_bytes(revision: i64) -> [u8; 8] {
    (revision as u64).to_be_bytes()
}

/// The storage key of an alarm.
pub(crate) fn alarm_key(member_id: u64, alarm: i32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&member_id.to_be_bytes());
    key[8..].copy_from_slice(&alarm.to_be_bytes());
    key
}

fn decode_alarm_key(key: &[u8]) -> Result<(u64, i32), MvccError> {
    let corrupt = || MvccError::Corrupt("alarm record".into());
    let member: [u8; 8] = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let alarm: [u8; 4] = key
        .get(8..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok((u64::from_be_bytes(member), i32::from_be_bytes(alarm)))
}

/// A lease as the store keeps it: what it was granted and how often it was
/// renewed (so an expiry decided before a renewal is told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The time to live granted, in seconds.
    pub ttl: i64,
    /// Renewals applied so far.
    pub renewals: u64,
}

/// The storage key of lease `id`.
pub(crate) fn lease_key(id: i64) -> [u8; 8] {
    (id as u64).to_be_bytes()
}

/// A lease record's stored form.
pub(crate) fn encode_lease(lease: &Lease) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&lease.ttl.to_be_bytes());
    out[8..].copy_from_slice(&lease.renewals.to_be_bytes());
    out
}

/// Every lease in `snapshot`.
pub(crate) fn load_leases(
    snapshot: &Snapshot,
    keyspaces: &Keyspaces,
) -> Result<BTreeMap<i64, Lease>, MvccError> {
    let corrupt = || MvccError::Corrupt("lease record".into());
    let mut leases = BTreeMap::new();
    for entry in snapshot.iter(&keyspaces.leases) {
        let (key, value) = entry.into_inner()?;
        let id: [u8; 8] = key.as_ref().try_into().map_err(|_| corrupt())?;
        let (ttl, renewals) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let renewals: [u8; 8] = renewals.try_into().map_err(|_| corrupt())?;
        leases.insert(
            u64::from_be_bytes(id) as i64,
            Lease {
                ttl: i64::from_be_bytes(*ttl),
                renewals: u64::from_be_bytes(renewals),
            },
        );
    }
    Ok(leases)
}

/// The `attached` key pairing lease `id` with user key `key`: the lease
/// first, so a lease's keys sit together.
pub(crate) fn attached_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&lease_key(id));
    out.extend_from_slice(key);
    out
}
