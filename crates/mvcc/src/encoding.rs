//! How key versions are laid out in the `kv` keyspace.
//!
//! Each version of a user key is one entry: the escaped user key, a
//! terminator, then the bitwise-inverted big-endian revision, so that the
//! entries of one key sort together, newest first, and keys sort in the
//! same order as their user keys. Escaping maps `0x00` to `0x00 0xFF`; the
//! terminator is `0x00 0x01`, which sorts below any escaped continuation.
//!
//! The value is the prost-encoded [`KeyValue`] without its key and
//! mod_revision (both are in the storage key); a tombstone has no
//! key-value fields. A write that was not its revision's first also
//! carries its place within the revision (etcd's sub-revision) as an extra
//! field, [`SUB_REVISION_TAG`], which `KeyValue` decoding skips: history
//! read back lists a revision's changes in the order they were made.
//!
//! The `live` keyspace indexes the newest version of every key that exists
//! now: the plain user key maps to the prost-encoded [`KeyValue`] without
//! its key. Reads at the current revision and the writer's lookups go
//! there, so they never step over old versions or compaction's deletions.
//!
//! The `changes` keyspace lists every write in revision order: the
//! big-endian revision and sub-revision map to the user key written.
//! Reading a range's history over a window of revisions walks the window
//! there instead of every version of every key in the range.

use bytes::Bytes;
use prost::Message;

use crate::MvccError;
use keel_api::mvccpb::KeyValue;

const TERMINATOR: [u8; 2] = [0x00, 0x01];

/// The longest user key the store holds, in bytes: 32,762. The storage
/// engine takes keys of at most 65,535 bytes, and the storage key of a key
/// made only of zero bytes is twice its length plus the terminator and the
/// revision.
pub const MAX_KEY_BYTES: usize = (u16::MAX as usize - TERMINATOR.len() - 8) / 2;

/// Refuses a user key (or range end) longer than [`MAX_KEY_BYTES`].
pub(crate) fn check_key_len(key: &[u8]) -> Result<(), MvccError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(MvccError::KeyTooLong);
    }
    Ok(())
}

/// Appends the escaped form of `key` to `out`.
fn escape_into(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// The storage prefix shared by all versions of `key`: the lowest storage
/// key any of its versions can have.
pub(crate) fn key_start(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    escape_into(key, &mut out);
    out.extend_from_slice(&TERMINATOR);
    out
}

/// The storage key just above every version of `key`.
pub(crate) fn key_end(key: &[u8]) -> Vec<u8> {
    let mut out = key_start(key);
    if let Some(last) = out.last_mut() {
        *last += 1;
    }
    out
}

/// The storage key of `key` at `revision`.
pub(crate) fn version_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut out = key_start(key);
    out.extend_from_slice(&(!(revision as u64)).to_be_bytes());
    out
}

/// Splits a storage key into the user key and the revision.
pub(crate) fn split_version_key(stored: &[u8]) -> Result<(Vec<u8>, i64), MvccError> {
    let corrupt = || MvccError::Corrupt("malformed version key".into());
    let mut key = Vec::with_capacity(stored.len());
    let mut i = 0;
    loop {
        let b = *stored.get(i).ok_or_else(corrupt)?;
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match stored.get(i + 1) {
            Some(0xFF) => {
                key.push(0);
                i += 2;
            }
            Some(0x01) => {
                i += 2;
                break;
            }
            _ => return Err(corrupt()),
        }
    }
    let rev: [u8; 8] = stored
        .get(i..)
        .and_then(|r| r.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok((key, !u64::from_be_bytes(rev) as i64))
}

/// The protobuf field number of a stored version's sub-revision: above
/// every field `KeyValue` has.
const SUB_REVISION_TAG: u32 = 15;

/// The sub-revision field alone, read from a stored version.
#[derive(Clone, PartialEq, prost::Message)]
struct SubRevision {
    #[prost(uint32, tag = "15")]
    sub: u32,
}

/// One stored version, the `sub`-th write of its revision: `None` is a
/// tombstone.
pub(crate) fn encode_version(kv: Option<&KeyValue>, sub: u32) -> Vec<u8> {
    let mut out = match kv {
        None => Vec::new(),
        Some(kv) => KeyValue {
            key: Bytes::new(),
            mod_revision: 0,
            ..kv.clone()
        }
        .encode_to_vec(),
    };
    if sub > 0 {
        prost::encoding::uint32::encode(SUB_REVISION_TAG, &sub, &mut out);
    }
    out
}

/// Decodes a stored version of `key` at `revision`; `None` is a tombstone.
pub(crate) fn decode_version(
    key: &[u8],
    revision: i64,
    value: &[u8],
) -> Result<Option<KeyValue>, MvccError> {
    if is_tombstone(value) {
        return Ok(None);
    }
    let mut kv = KeyValue::decode(value)
        .map_err(|e| MvccError::Corrupt(format!("stored key-value: {e}")))?;
    kv.key = Bytes::copy_from_slice(key);
    kv.mod_revision = revision;
    Ok(Some(kv))
}

/// Whether a stored version is a deletion, without decoding it: a stored
/// key-value starts with its create revision (field 2, never zero), a
/// deletion is empty or holds only its sub-revision.
pub(crate) fn is_tombstone(value: &[u8]) -> bool {
    const SUB_REVISION_KEY: u8 = (SUB_REVISION_TAG << 3) as u8;
    value.first().is_none_or(|b| *b == SUB_REVISION_KEY)
}

/// The place of a stored version among its revision's writes.
pub(crate) fn decode_sub_revision(value: &[u8]) -> Result<u32, MvccError> {
    SubRevision::decode(value)
        .map(|s| s.sub)
        .map_err(|e| MvccError::Corrupt(format!("stored sub-revision: {e}")))
}

/// The `live` entry of a key's newest version.
pub(crate) fn encode_live(kv: &KeyValue) -> Vec<u8> {
    KeyValue {
        key: Bytes::new(),
        ..kv.clone()
    }
    .encode_to_vec()
}

/// Decodes the `live` entry of `key`.
pub(crate) fn decode_live(key: &[u8], value: &[u8]) -> Result<KeyValue, MvccError> {
    let mut kv =
        KeyValue::decode(value).map_err(|e| MvccError::Corrupt(format!("live key-value: {e}")))?;
    kv.key = Bytes::copy_from_slice(key);
    Ok(kv)
}

/// The `changes` key of the `sub`-th write at `revision`.
pub(crate) fn change_key(revision: i64, sub: u32) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..8].copy_from_slice(&(revision as u64).to_be_bytes());
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

/// The revision and sub-revision of a `changes` key.
pub(crate) fn split_change_key(stored: &[u8]) -> Result<(i64, u32), MvccError> {
    let (revision, sub) = stored
        .split_first_chunk::<8>()
        .and_then(|(r, s)| Some((r, <[u8; 4]>::try_from(s).ok()?)))
        .ok_or_else(|| MvccError::Corrupt("malformed change index key".into()))?;
    Ok((
        u64::from_be_bytes(*revision) as i64,
        u32::from_be_bytes(sub),
    ))
}

/// Derives the `live`, `changes` and `attached` indexes from `kv` entries
/// visited in storage order: every version is a change, and the first
/// version of each user key is its newest, which belongs in `live` (and,
/// with a lease, in `attached`) unless it is a deletion.
#[derive(Default)]
pub(crate) struct DerivedIndexer {
    last_key: Option<Vec<u8>>,
}

impl DerivedIndexer {
    /// Adds to `batch` the index entries of one `kv` entry.
    pub(crate) fn index(
        &mut self,
        keyspaces: &crate::schema::Keyspaces,
        batch: &mut fjall::OwnedWriteBatch,
        stored: &[u8],
        value: &[u8],
    ) -> Result<(), MvccError> {
        let (key, revision) = split_version_key(stored)?;
        batch.insert(
            &keyspaces.changes,
            change_key(revision, decode_sub_revision(value)?),
            key.as_slice(),
        );
        if self.last_key.as_deref() == Some(key.as_slice()) {
            return Ok(());
        }
        if let Some(kv) = decode_version(&key, revision, value)? {
            batch.insert(&keyspaces.live, key.as_slice(), encode_live(&kv));
            if kv.lease != 0 {
                batch.insert(
                    &keyspaces.attached,
                    crate::schema::attached_key(kv.lease, &key),
                    [],
                );
            }
        }
        self.last_key = Some(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_versions_keep_their_sub_revision() {
        let kv = KeyValue {
            key: Bytes::from_static(b"k"),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            value: Bytes::from_static(b"v"),
            lease: 7,
        };
        for sub in [0, 1, 300] {
            let put = encode_version(Some(&kv), sub);
            assert_eq!(decode_version(b"k", 9, &put).unwrap(), Some(kv.clone()));
            assert_eq!(decode_sub_revision(&put).unwrap(), sub);
            assert!(!is_tombstone(&put));
            let tombstone = encode_version(None, sub);
            assert!(is_tombstone(&tombstone));
            assert_eq!(decode_version(b"k", 9, &tombstone).unwrap(), None);
            assert_eq!(decode_sub_revision(&tombstone).unwrap(), sub);
        }
        // A first write is stored as before sub-revisions existed.
        assert_eq!(
            encode_version(Some(&kv), 0),
            KeyValue {
                key: Bytes::new(),
                mod_revision: 0,
                ..kv
            }
            .encode_to_vec()
        );
        assert!(encode_version(None, 0).is_empty());
    }

    #[test]
    fn version_keys_round_trip_and_sort_like_user_keys() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        let mut stored = Vec::new();
        for k in &keys {
            for rev in [1i64, 7, 300] {
                let s = version_key(k, rev);
                assert_eq!(split_version_key(&s).unwrap(), (k.to_vec(), rev));
                stored.push((s, k.to_vec(), rev));
            }
        }
        stored.sort();
        let order: Vec<(Vec<u8>, i64)> = stored.iter().map(|(_, k, r)| (k.clone(), *r)).collect();
        let mut expected: Vec<(Vec<u8>, i64)> = keys
            .iter()
            .flat_map(|k| [300, 7, 1].map(|r| (k.to_vec(), r)))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        assert_eq!(order, expected);
        for k in &keys {
            assert!(key_start(k) <= version_key(k, i64::MAX));
            assert!(version_key(k, 1) < key_end(k));
        }
    }

    #[test]
    fn garbage_keys_are_refused() {
        assert!(split_version_key(b"abc").is_err());
        assert!(split_version_key(b"a\0\x05").is_err());
        assert!(split_version_key(b"a\0\x01\x00").is_err());
    }
}
