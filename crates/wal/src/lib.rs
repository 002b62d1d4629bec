//! # keel-wal
//!
//! The Raft log on disk. Records (entries, hard states, snapshot markers) are
//! appended to numbered segment files, each length-prefixed and protected by
//! a CRC32C. [`Wal::append`] writes a whole batch — every entry and the hard
//! state of one `Ready` — with a single `fdatasync`, which is group commit:
//! every proposal that arrived since the last sync shares it.
//!
//! Replaying the log rebuilds the state: a later entry at an index at or
//! below the last replaces the suffix from there (a follower's conflicting
//! entries are truncated by simply writing the leader's), the last hard state
//! wins, and a snapshot marker drops everything it covers. Segments wholly
//! covered by a snapshot are deleted by [`Wal::purge`].
//!
//! Recovery cuts off a torn tail (a record cut short by a crash mid-write)
//! with a warning that says what was dropped; damage anywhere else, or a
//! missing segment, refuses to start with an error naming file and offset.

mod error;
pub mod fs;
#[cfg(test)]
mod fuzz_tests;
mod record;
mod segment;

use std::io::Write;
use std::path::{Path, PathBuf};

/// The `metrics` histogram of each `fdatasync`'s duration in seconds
/// (etcd's name, so etcd's dashboards read it).
pub const FSYNC_SECONDS: &str = "etcd_disk_wal_fsync_duration_seconds";

use bytes::BytesMut;
use keel_raft::{Entry, EntryId, HardState, Index};

use error::io;
pub use error::WalError;
pub use fs::{FileSystem, FsFile, StdFs};
use record::Record;

/// Tunables of the log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Start a new segment once the current one passes this size.
    pub segment_size: u64,
    /// Call `fdatasync` after each batch. Off only for tests and benchmarks
    /// that measure everything but the disk.
    pub sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 * 1024 * 1024,
            sync: true,
        }
    }
}

/// What the log held when opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written.
    pub hard_state: HardState,
    /// The snapshot the log starts after, if any.
    pub snapshot: Option<EntryId>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// What is known of one segment file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    /// The highest entry index written in it, if any.
    last_index: Option<Index>,
}

/// An open write-ahead log, on the real filesystem unless another
/// [`FileSystem`] is given (see [`Wal::open_in`]).
pub struct Wal<F: FileSystem = StdFs> {
    fs: F,
    dir: PathBuf,
    options: WalOptions,
    /// Every segment, oldest first; the last one is open for appending.
    segments: Vec<Segment>,
    file: F::File,
    file_len: u64,
    /// The state as of the last append, rewritten at the top of each new
    /// segment so that purging old segments never loses it.
    hard_state: HardState,
    snapshot: Option<EntryId>,
    last_index: Index,
    buf: BytesMut,
    /// fdatasync calls made (for benchmarks and tests).
    syncs: u64,
}

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        Wal::open_in(StdFs, dir, options)
    }
}

impl<F: FileSystem> Wal<F> {
    /// Opens (or creates) the log in `dir` of the filesystem `fs` and
    /// replays it.
    pub fn open_in(
        fs: F,
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal<F>, Recovered), WalError> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(io("creating", &dir))?;
        let seqs = segment::list(&fs, &dir)?;
        let mut state = Recovered::default();
        let mut segments = Vec::new();
        let mut tail = None;
        for (i, &seq) in seqs.iter().enumerate() {
            let path = dir.join(segment::file_name(seq));
            if i > 0 && seq != seqs[i - 1] + 1 {
                return Err(WalError::MissingSegment {
                    missing: seqs[i - 1] + 1,
                    found: path,
                });
            }
            let is_last = i + 1 == seqs.len();
            let contents = segment::read(&fs, &path, is_last)?;
            let mut last_index = None;
            for (n, r) in contents.records.into_iter().enumerate() {
                if let Record::Entry(e) = &r {
                    last_index = Some(e.index);
                }
                replay(&mut state, r).map_err(|reason| WalError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("record {n}: {reason}"),
                })?;
            }
            if contents.valid_len < contents.file_len {
                tracing::warn!(
                    file = %path.display(),
                    offset = contents.valid_len,
                    dropped_bytes = contents.file_len - contents.valid_len,
                    "cutting off a torn record at the end of the WAL (a write interrupted by a crash)"
                );
                tail = Some((path.clone(), contents.valid_len));
            }
            segments.push(Segment { seq, last_index });
        }
        if let Some((path, len)) = tail {
            fs.truncate(&path, len).map_err(io("truncating", &path))?;
        }
        let last_index = state
            .entries
            .last()
            .map(|e| e.index)
            .or(state.snapshot.map(|s| s.index))
            .unwrap_or(0);
        let (file, file_len) = match segments.last() {
            Some(s) => {
                let path = dir.join(segment::file_name(s.seq));
                let file = fs.open_append(&path).map_err(io("opening", &path))?;
                let len = file.len().map_err(io("reading metadata of", &path))?;
                (file, len)
            }
            None => {
                segments.push(Segment {
                    seq: 0,
                    last_index: None,
                });
                (create_segment(&fs, &dir, 0)?, 0)
            }
        };
        let wal = Wal {
            fs,
            dir,
            options,
            segments,
            file,
            file_len,
            hard_state: state.hard_state,
            snapshot: state.snapshot,
            last_index,
            buf: BytesMut::new(),
            syncs: 0,
        };
        Ok((wal, state))
    }

    /// Appends `entries` (replacing any suffix from their first index) and
    /// the new `hard_state`, then syncs once. A batch that only moves the
    /// commit index is written but not synced: a commit index lost in a
    /// crash is learned again from the leader (term and vote are what must
    /// never go back).
    pub fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), WalError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        if let Some(first) = entries.first() {
            let floor = self.snapshot.map_or(0, |s| s.index);
            if first.index > self.last_index + 1 || first.index <= floor {
                return Err(WalError::NonContiguous {
                    index: first.index,
                    last: self.last_index,
                });
            }
        }
        let must_sync = !entries.is_empty()
            || hard_state.is_some_and(|hs| {
                (hs.term, hs.vote) != (self.hard_state.term, self.hard_state.vote)
            });
        self.buf.clear();
        for e in entries {
            record::encode(&Record::Entry(e.clone()), &mut self.buf);
        }
        if let Some(hs) = hard_state {
            record::encode(&Record::HardState(hs), &mut self.buf);
            self.hard_state = hs;
        }
        if let Some(last) = entries.last() {
            self.last_index = last.index;
            let seg = self.segments.last_mut().expect("an open segment");
            seg.last_index = Some(seg.last_index.map_or(last.index, |i| i.max(last.index)));
        }
        self.write_buf(must_sync)?;
        self.maybe_roll()
    }

    /// Records a snapshot taken locally: entries up to it may be purged,
    /// entries after it stay.
    pub fn compact_to(&mut self, snapshot: EntryId) -> Result<(), WalError> {
        self.write_snapshot_marker(snapshot, false)?;
        self.last_index = self.last_index.max(snapshot.index);
        Ok(())
    }

    /// Records a snapshot received from the leader: it replaces the whole
    /// log, which continues right after it.
    pub fn install_snapshot(&mut self, snapshot: EntryId) -> Result<(), WalError> {
        self.write_snapshot_marker(snapshot, true)?;
        self.last_index = snapshot.index;
        Ok(())
    }

    fn write_snapshot_marker(&mut self, last: EntryId, replaces_log: bool) -> Result<(), WalError> {
        self.buf.clear();
        record::encode(&Record::Snapshot { last, replaces_log }, &mut self.buf);
        self.snapshot = Some(last);
        self.write_buf(true)
    }

    /// Deletes segments whose entries all lie at or below the snapshot, and
    /// returns how many were deleted. The open segment is never deleted.
    pub fn purge(&mut self) -> Result<usize, WalError> {
        let Some(snapshot) = self.snapshot else {
            return Ok(0);
        };
        let active = self.segments.len() - 1;
        // Only a prefix can go: replay needs the rest in order.
        let removable = self.segments[..active]
            .iter()
            .take_while(|s| s.last_index.is_none_or(|i| i <= snapshot.index))
            .count();
        for s in self.segments.drain(..removable) {
            let path = self.dir.join(segment::file_name(s.seq));
            self.fs.remove_file(&path).map_err(io("removing", &path))?;
        }
        if removable > 0 {
            sync_dir(&self.fs, &self.dir)?;
        }
        Ok(removable)
    }

    /// `fdatasync` calls so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// How many segment files the log spans.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn write_buf(&mut self, sync: bool) -> Result<(), WalError> {
        let path = self.active_path();
        self.file
            .write_all(&self.buf)
            .map_err(io("writing", &path))?;
        self.file_len += self.buf.len() as u64;
        if sync && self.options.sync {
            let started = std::time::Instant::now();
            self.file.sync_data().map_err(io("syncing", &path))?;
            metrics::histogram!(FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
            self.syncs += 1;
        }
        Ok(())
    }

    /// Starts a new segment once the current one is full; it begins with the
    /// current hard state and snapshot marker, so older segments can go.
    fn maybe_roll(&mut self) -> Result<(), WalError> {
        if self.file_len < self.options.segment_size {
            return Ok(());
        }
        let seq = self.segments.last().expect("an open segment").seq + 1;
        self.file = create_segment(&self.fs, &self.dir, seq)?;
        self.file_len = 0;
        self.segments.push(Segment {
            seq,
            last_index: None,
        });
        self.buf.clear();
        record::encode(&Record::HardState(self.hard_state), &mut self.buf);
        if let Some(last) = self.snapshot {
            let marker = Record::Snapshot {
                last,
                replaces_log: false,
            };
            record::encode(&marker, &mut self.buf);
        }
        self.write_buf(true)
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join(segment::file_name(
            self.segments.last().expect("an open segment").seq,
        ))
    }
}

/// Applies one replayed record to the recovered state.
fn replay(state: &mut Recovered, record: Record) -> Result<(), String> {
    // No log reaches the last index: refusing it keeps `last + 1` in range.
    let index = match &record {
        Record::Entry(e) => e.index,
        Record::Snapshot { last, .. } => last.index,
        Record::HardState(_) => 0,
    };
    if index == Index::MAX {
        return Err(format!("index {index} is out of range"));
    }
    match record {
        Record::HardState(hs) => state.hard_state = hs,
        Record::Snapshot { last, replaces_log } => {
            if replaces_log {
                state.entries.clear();
            } else if state.snapshot.is_some_and(|old| old.index >= last.index) {
                return Ok(()); // Rewritten at a segment start: nothing new.
            } else {
                state.entries.retain(|e| e.index > last.index);
            }
            state.snapshot = Some(last);
        }
        Record::Entry(e) => {
            let floor = state.snapshot.map_or(0, |s| s.index);
            if e.index <= floor {
                return Ok(()); // Covered by the snapshot.
            }
            match (state.entries.first(), state.entries.last()) {
                (Some(first), Some(last)) => {
                    if e.index > last.index + 1 {
                        return Err(format!("entry {} follows {}", e.index, last.index));
                    }
                    let keep = e.index.saturating_sub(first.index) as usize;
                    state.entries.truncate(keep);
                }
                _ if state.snapshot.is_some() && e.index != floor + 1 => {
                    return Err(format!("entry {} follows snapshot {}", e.index, floor));
                }
                // Without a snapshot marker yet, the log may start anywhere:
                // the segments before this one were purged.
                _ => {}
            }
            state.entries.push(e);
        }
    }
    Ok(())
}

fn create_segment<F: FileSystem>(fs: &F, dir: &Path, seq: u64) -> Result<F::File, WalError> {
    let path = dir.join(segment::file_name(seq));
    let file = fs.create(&path, true).map_err(io("creating", &path))?;
    sync_dir(fs, dir)?;
    Ok(file)
}

fn sync_dir<F: FileSystem>(fs: &F, dir: &Path) -> Result<(), WalError> {
    fs.sync_dir(dir).map_err(io("syncing directory", dir))
}
