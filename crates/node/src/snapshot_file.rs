//! Snapshot files: `[magic][header len][header][header crc] data
//! [data len][data crc]`. The header (the snapshot's last entry and
//! membership) is known before the data, the data's length and checksum only
//! after, so a snapshot streams to disk without being held in memory, and is
//! served chunk by chunk with positioned reads.
//!
//! Both types work on the real filesystem by default, or on any
//! [`FileSystem`] (a simulator's, that injects faults).

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel_raft::{ConfState, EntryId, NodeId, SnapshotData, SnapshotMeta, StorageError};
use keel_wal::{FileSystem, FsFile, StdFs};

/// Files whose data starts with the address book (see
/// [`crate::addresses`]), then the state machine's part.
const MAGIC: &[u8; 4] = b"KSN3";
/// Files written before the address book: the data is the state machine's.
const MAGIC_WITHOUT_BOOK: &[u8; 4] = b"KSN2";
const TRAILER: u64 = 12;

/// Writes a snapshot file under a temporary name; [`finish`](Self::finish)
/// syncs it and gives it its final name.
pub struct SnapshotWriter<F: FileSystem = StdFs> {
    fs: F,
    out: BufWriter<F::File>,
    tmp: PathBuf,
    path: PathBuf,
    last: EntryId,
    conf_state: ConfState,
    len: u64,
    crc: u32,
}

impl SnapshotWriter {
    /// Starts `path` for the snapshot ending at `last` with membership `conf_state`.
    pub fn create(path: PathBuf, last: EntryId, conf_state: ConfState) -> io::Result<Self> {
        SnapshotWriter::create_in(StdFs, path, last, conf_state)
    }
}

impl<F: FileSystem> SnapshotWriter<F> {
    /// Starts `path` on `fs` for the snapshot ending at `last` with
    /// membership `conf_state`.
    pub fn create_in(
        fs: F,
        path: PathBuf,
        last: EntryId,
        conf_state: ConfState,
    ) -> io::Result<Self> {
        let tmp = path.with_extension("tmp");
        let mut out = BufWriter::new(fs.create(&tmp, false)?);
        let mut header = BytesMut::new();
        header.put_u64_le(last.term);
        header.put_u64_le(last.index);
        for ids in [
            &conf_state.voters,
            &conf_state.voters_outgoing,
            &conf_state.learners,
            &conf_state.learners_next,
        ] {
            header.put_u32_le(ids.len() as u32);
            for id in ids.iter() {
                header.put_u64_le(*id);
            }
        }
        out.write_all(MAGIC)?;
        out.write_all(&(header.len() as u32).to_le_bytes())?;
        out.write_all(&header)?;
        out.write_all(&crc32c::crc32c(&header).to_le_bytes())?;
        Ok(SnapshotWriter {
            fs,
            out,
            tmp,
            path,
            last,
            conf_state,
            len: 0,
            crc: 0,
        })
    }

    /// Completes the file (synced, renamed, its directory synced) and
    /// returns the snapshot it holds.
    pub fn finish(mut self) -> io::Result<FileSnapshot<F>> {
        self.out.write_all(&self.len.to_le_bytes())?;
        self.out.write_all(&self.crc.to_le_bytes())?;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        drop(file);
        self.fs.rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            self.fs.sync_dir(dir)?;
        }
        let meta = SnapshotMeta {
            last: self.last,
            conf_state: self.conf_state,
            size: self.len,
        };
        FileSnapshot::open_in(self.fs, &self.path).and_then(|s| {
            if s.meta == meta {
                Ok(s)
            } else {
                Err(io::Error::other("snapshot file reads back differently"))
            }
        })
    }
}

impl<F: FileSystem> Write for SnapshotWriter<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A complete snapshot file, read in place.
#[derive(Debug)]
pub struct FileSnapshot<F: FileSystem = StdFs> {
    /// The snapshot's last entry, membership and data size.
    pub meta: SnapshotMeta,
    file: F::File,
    data_offset: u64,
    with_book: bool,
}

impl FileSnapshot {
    /// Opens and checks a snapshot file (both checksums).
    pub fn open(path: &Path) -> io::Result<Self> {
        FileSnapshot::open_in(StdFs, path)
    }
}

impl<F: FileSystem> FileSnapshot<F> {
    /// Opens and checks a snapshot file of `fs` (both checksums).
    pub fn open_in(fs: F, path: &Path) -> io::Result<Self> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        let file = fs.open_read(path)?;
        let file_len = file.len()?;
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| bad("truncated header"))?;
        let with_book = match &head[..4] {
            m if m == MAGIC => true,
            m if m == MAGIC_WITHOUT_BOOK => false,
            _ => return Err(bad("not a keel snapshot file")),
        };
        let header_len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as u64;
        if header_len > file_len {
            return Err(bad("header length beyond the file"));
        }
        let mut header = vec![0u8; header_len as usize + 4];
        file.read_exact_at(&mut header, 8)
            .map_err(|_| bad("truncated header"))?;
        let (header, crc) = header.split_at(header_len as usize);
        if crc32c::crc32c(header) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("header checksum mismatch"));
        }
        let (last, conf_state) = parse_header(header).ok_or_else(|| bad("malformed header"))?;
        let data_offset = 8 + header_len + 4;
        if file_len < data_offset + TRAILER {
            return Err(bad("truncated data"));
        }
        let mut trailer = [0u8; TRAILER as usize];
        file.read_exact_at(&mut trailer, file_len - TRAILER)?;
        let size = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(trailer[8..].try_into().expect("4 bytes"));
        if size.checked_add(data_offset + TRAILER) != Some(file_len) {
            return Err(bad("data length does not match the file"));
        }
        let snapshot = FileSnapshot {
            meta: SnapshotMeta {
                last,
                conf_state,
                size,
            },
            file,
            data_offset,
            with_book,
        };
        let mut actual = 0u32;
        {
            let mut reader = snapshot.reader()?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                actual = crc32c::crc32c_append(actual, &buf[..n]);
            }
        }
        if actual != crc {
            return Err(bad("data checksum mismatch"));
        }
        Ok(snapshot)
    }

    /// Whether the data starts with the address book (files written since
    /// keel-node kept one).
    pub fn has_address_book(&self) -> bool {
        self.with_book
    }

    /// The snapshot's data, from the start.
    pub fn reader(&self) -> io::Result<impl Read + '_> {
        Ok(DataReader {
            file: &self.file,
            pos: self.data_offset,
            end: self.data_offset + self.meta.size,
        })
    }
}

/// Reads a snapshot's data with positioned reads.
struct DataReader<'a, T> {
    file: &'a T,
    pos: u64,
    end: u64,
}

impl<T: FsFile> Read for DataReader<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        self.file.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: FileSystem> SnapshotData for FileSnapshot<F> {
    fn len(&self) -> u64 {
        self.meta.size
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        let len = len.min(self.meta.size.saturating_sub(offset));
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, self.data_offset + offset)
            .map_err(|e| {
                StorageError::Other(format!("reading snapshot {}: {e}", self.meta.last.index))
            })?;
        Ok(Bytes::from(buf))
    }
}

fn parse_header(mut b: &[u8]) -> Option<(EntryId, ConfState)> {
    let u64_of = |b: &mut &[u8]| (b.len() >= 8).then(|| b.get_u64_le());
    let term = u64_of(&mut b)?;
    let index = u64_of(&mut b)?;
    let mut lists: Vec<Vec<NodeId>> = Vec::new();
    for _ in 0..4 {
        if b.len() < 4 {
            return None;
        }
        let n = b.get_u32_le() as usize;
        if b.len() < n.checked_mul(8)? {
            return None;
        }
        lists.push((0..n).map(|_| b.get_u64_le()).collect());
    }
    if !b.is_empty() {
        return None;
    }
    let learners_next = lists.pop()?;
    let learners = lists.pop()?;
    let voters_outgoing = lists.pop()?;
    let voters = lists.pop()?;
    Some((
        EntryId { term, index },
        ConfState {
            voters,
            voters_outgoing,
            learners,
            learners_next,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, data: &[u8]) -> FileSnapshot {
        let cs = ConfState {
            voters: vec![1, 2],
            voters_outgoing: vec![1, 2, 3],
            learners: vec![4],
            learners_next: vec![3],
        };
        let mut w =
            SnapshotWriter::create(dir.join("s.bin"), EntryId { term: 3, index: 42 }, cs).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn streams_out_and_reads_back_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let s = write(dir.path(), &data);
        assert_eq!(s.meta.size, data.len() as u64);
        assert_eq!(s.meta.conf_state.learners_next, vec![3]);
        assert_eq!(&s.read_at(10, 5).unwrap()[..], &data[10..15]);
        assert_eq!(
            s.read_at(99_998, 100).unwrap().len(),
            2,
            "clipped at the end"
        );
        let mut all = Vec::new();
        s.reader().unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        assert!(!dir.path().join("s.tmp").exists());
    }

    #[test]
    fn damage_anywhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), b"some state");
        let path = dir.path().join("s.bin");
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            assert!(
                FileSnapshot::open(&path).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(FileSnapshot::open(&path).is_err());
    }
}
