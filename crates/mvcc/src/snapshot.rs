//! Streaming the whole store out and back in.
//!
//! The stream is `KEELSNAP1`, then records `tag, key length (u32 LE), key,
//! value length (u32 LE), value` where the tag names the keyspace, then the
//! end tag and a CRC-32C (u32 LE) of everything before it. Neither side
//! holds more than one record (or one write batch) in memory. The derived
//! indexes are not streamed: restoring rebuilds them from the `kv` records
//! as they arrive.

use std::io::{self, BufReader, BufWriter, Read, Write};

use fjall::Readable;

use crate::encoding::DerivedIndexer;
use keel_api::etcdserverpb::Member;
use prost::Message;

use crate::schema::{revision_bytes, APPLIED, INDEXED, KV_TAG, META_TAG, RESTORING, REVISION};
use crate::store::StoreView;
use crate::{MvccError, Store};

const MAGIC: &[u8] = b"KEELSNAP1";
const END: u8 = 0xFF;
/// No key or value is larger than this; a bigger length is corruption.
const MAX_FIELD: u32 = 1 << 28;

/// A writer that keeps a CRC of what passed through it.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that keeps a CRC of what passed through it.
struct CrcReader<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

impl Store {
    /// Streams `view` to `out`.
    pub fn write_snapshot(view: StoreView, out: &mut dyn Write) -> io::Result<()> {
        let mut w = CrcWriter {
            inner: BufWriter::with_capacity(1 << 16, out),
            crc: 0,
        };
        w.write_all(MAGIC)?;
        for (tag, keyspace) in view.keyspaces.tagged() {
            for entry in view.snapshot.iter(keyspace) {
                let (key, value) = entry.into_inner().map_err(io::Error::other)?;
                // Local bookkeeping, not state.
                if tag == META_TAG && [RESTORING, INDEXED].contains(&key.as_ref()) {
                    continue;
                }
                w.write_all(&[tag])?;
                for field in [key.as_ref(), value.as_ref()] {
                    let len = u32::try_from(field.len()).map_err(io::Error::other)?;
                    w.write_all(&len.to_le_bytes())?;
                    w.write_all(field)?;
                }
            }
        }
        w.write_all(&[END])?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_le_bytes())?;
        w.inner.flush()
    }

    /// Replaces the whole store with a snapshot streamed by
    /// [`write_snapshot`](Store::write_snapshot). Until it completes, the
    /// store reports applied index 0, also across a restart, so an
    /// interrupted or corrupt restore is redone rather than trusted.
    pub fn restore(&self, snapshot: &mut dyn Read) -> Result<(), MvccError> {
        let mut writer = self.lock_writer();
        // A removal pass over the old contents means nothing for the new.
        *writer = None;
        let mut reader = CrcReader {
            inner: BufReader::with_capacity(1 << 16, snapshot),
            crc: 0,
        };
        let mut magic = [0u8; MAGIC.len()];
        read_exact(&mut reader, &mut magic)?;
        if magic != MAGIC {
            return Err(MvccError::Corrupt("not a keel store snapshot".into()));
        }
        let result = self.replace_contents(&mut reader);
        self.reload()?;
        result
    }

    /// Makes a restored store the seed of a new cluster, as `etcdutl
    /// snapshot restore` does: the keys, their history, the leases and the
    /// revision stay; the old cluster's raft position (the applied index
    /// becomes 0, so the new cluster's log applies from its first entry),
    /// its member records (replaced by `members`) and its alarms go.
    pub fn reseed(&self, members: &[Member]) -> Result<(), MvccError> {
        let _writer = self.lock_writer();
        if self.restoring() {
            return Err(MvccError::Restoring);
        }
        let keyspaces = &self.inner.keyspaces;
        self.clear(&keyspaces.members)?;
        self.clear(&keyspaces.alarms)?;
        let mut batch = self.inner.db.batch();
        batch.remove(&keyspaces.meta, APPLIED);
        for member in members {
            batch.insert(
                &keyspaces.members,
                member.id.to_be_bytes(),
                member.encode_to_vec(),
            );
        }
        batch.commit()?;
        self.inner.db.persist(fjall::PersistMode::SyncAll)?;
        self.reload()
    }

    fn replace_contents<R: Read>(&self, reader: &mut CrcReader<R>) -> Result<(), MvccError> {
        let inner = &self.inner;
        let keyspaces = inner.keyspaces.clone();
        let mut batch = inner.db.batch();
        batch.insert(&keyspaces.meta, RESTORING, [1u8]);
        batch.commit()?;
        // Not `reload`: the old contents may be what cannot be loaded.
        inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .restoring = true;
        for keyspace in keyspaces.all() {
            self.clear(keyspace)?;
        }
        let mut batch = inner.db.batch();
        let mut indexer = DerivedIndexer::default();
        // A store that never wrote has no revision record: revision 1.
        let mut revision = revision_bytes(1).to_vec();
        loop {
            let mut tag = [0u8];
            read_exact(reader, &mut tag)?;
            if tag[0] == END {
                let expected = reader.crc;
                let mut crc = [0u8; 4];
                read_exact(&mut reader.inner, &mut crc)?;
                if u32::from_le_bytes(crc) != expected {
                    return Err(MvccError::Corrupt("snapshot checksum mismatch".into()));
                }
                break;
            }
            let keyspace = keyspaces
                .tagged()
                .into_iter()
                .find(|(t, _)| *t == tag[0])
                .map(|(_, k)| k.clone())
                .ok_or_else(|| MvccError::Corrupt(format!("unknown snapshot record {}", tag[0])))?;
            let key = read_field(reader)?;
            let value = read_field(reader)?;
            if key.is_empty() || (tag[0] == META_TAG && key == RESTORING) {
                return Err(MvccError::Corrupt("malformed snapshot record".into()));
            }
            if tag[0] == META_TAG && key == REVISION {
                revision = value.clone();
            }
            if tag[0] == KV_TAG {
                indexer.index(&keyspaces, &mut batch, &key, &value)?;
            }
            batch.insert(&keyspace, key, value);
            self.commit_if_full(&mut batch)?;
        }
        // The indexes just built match the restored revision.
        batch.insert(&keyspaces.meta, INDEXED, revision);
        batch.commit()?;
        // Contents that would not load are refused: the store stays marked
        // as restoring, to be restored again.
        self.reload()?;
        let mut batch = inner.db.batch();
        batch.remove(&keyspaces.meta, RESTORING);
        batch.commit()?;
        Ok(())
    }
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), MvccError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => MvccError::Corrupt("snapshot ends early".into()),
        _ => MvccError::Storage(format!("reading the snapshot: {e}")),
    })
}

fn read_field(reader: &mut impl Read) -> Result<Vec<u8>, MvccError> {
    let mut len = [0u8; 4];
    read_exact(reader, &mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD {
        return Err(MvccError::Corrupt(format!("snapshot field of {len} bytes")));
    }
    let mut field = vec![0u8; len as usize];
    read_exact(reader, &mut field)?;
    Ok(field)
}
