//! A simulated node's disk: an in-memory [`FileSystem`] that injects the
//! faults real disks have, driven by the run's seed. keel-node's
//! `DiskStore` (keel-wal's log and the snapshot files) runs over it.
//!
//! - Every file has durable bytes and the bytes written since its last
//!   sync. A [`crash`](FaultFs::crash) keeps, per file and at random, none
//!   of the unsynced writes, a prefix of them, or a prefix and part of the
//!   next one (a torn write: the bytes as written, zeros, or garbage).
//! - Names (create, rename, remove) are durable after a sync of their
//!   directory; a crash either loses every name change made since the last
//!   directory sync or keeps them all. Directories themselves are durable
//!   at once. Truncation is durable at once (the seam's `truncate` syncs).
//! - With the chance given, a write, a sync, a directory sync or a
//!   truncation fails with `EIO` or `ENOSPC` (a failed write may have
//!   written a prefix), and a sync may "crash" the node just before or
//!   just after it makes the data durable. A failed sync loses the data it
//!   should have synced even if a later sync succeeds (Linux drops the
//!   dirty pages: fsyncgate), so a node that went on after one would be
//!   caught. The simulator treats every injected error as a crash of the
//!   node (see [`FaultFs::take_injected`]).
//!
//! A crash invalidates the files opened before it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use keel_wal::{FileSystem, FsFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// What a disk injected, for the run's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Crashes the disk went through.
    pub crashes: u64,
    /// Unsynced bytes lost in crashes.
    pub lost_unsynced_bytes: u64,
    /// Writes torn by a crash (part of a write kept).
    pub torn_writes: u64,
    /// Torn writes whose kept part holds garbage or zeros.
    pub garbage_tails: u64,
    /// Name changes (create, rename, remove) lost with their directory's sync.
    pub lost_dir_ops: u64,
    /// `EIO` errors returned.
    pub eio: u64,
    /// `ENOSPC` errors returned.
    pub enospc: u64,
    /// Crashes struck in a sync (before or after it).
    pub crashes_in_sync: u64,
}

impl FaultStats {
    /// Adds `other`'s figures to these.
    pub fn add(&mut self, other: &FaultStats) {
        self.crashes += other.crashes;
        self.lost_unsynced_bytes += other.lost_unsynced_bytes;
        self.torn_writes += other.torn_writes;
        self.garbage_tails += other.garbage_tails;
        self.lost_dir_ops += other.lost_dir_ops;
        self.eio += other.eio;
        self.enospc += other.enospc;
        self.crashes_in_sync += other.crashes_in_sync;
    }
}

/// One file's contents.
#[derive(Clone, Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// How much of `data` is durable.
    durable_len: usize,
    /// The lengths of the writes since the last sync, in order.
    unsynced_writes: Vec<usize>,
    /// Ranges a failed sync lost: zeros on the disk whatever happens next.
    lost: Vec<(usize, usize)>,
}

#[derive(Debug)]
struct Inner {
    rng: StdRng,
    /// The chance that a write, sync, directory sync or truncation fails.
    error_chance: f64,
    /// The chance of a crash on each side of a sync.
    crash_chance: f64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    /// The names as the running node sees them.
    names: BTreeMap<PathBuf, u64>,
    /// The names a crash leaves (at least).
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Bumped by every crash: older handles are dead.
    generation: u64,
    stats: FaultStats,
    /// An error was injected since [`FaultFs::take_injected`] last looked.
    injected: bool,
}

/// An in-memory filesystem that injects faults (see the module docs).
/// Clones share the same disk.
#[derive(Clone)]
pub struct FaultFs(Arc<Mutex<Inner>>);

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultFs")
    }
}

/// Why an operation failed, when the fault layer chose it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Injected {
    Eio,
    Enospc,
}

impl FaultFs {
    /// An empty disk whose faults are drawn from `seed`; no errors or
    /// crashes in syncs until [`set_faults`](Self::set_faults).
    pub fn new(seed: u64) -> Self {
        FaultFs(Arc::new(Mutex::new(Inner {
            rng: StdRng::seed_from_u64(seed),
            error_chance: 0.0,
            crash_chance: 0.0,
            inodes: BTreeMap::new(),
            next_inode: 0,
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            generation: 0,
            stats: FaultStats::default(),
            injected: false,
        })))
    }

    /// Sets the chance of an `EIO`/`ENOSPC` on each write, sync, directory
    /// sync and truncation, and of a crash on each side of each sync.
    pub fn set_faults(&self, error_chance: f64, crash_chance: f64) {
        let mut inner = self.lock();
        inner.error_chance = error_chance;
        inner.crash_chance = crash_chance;
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    /// Whether an error was injected since the last call: a node that
    /// stopped on a store error after one crashed, as it should; without
    /// one, the error is a bug.
    pub fn take_injected(&self) -> bool {
        std::mem::take(&mut self.lock().injected)
    }

    /// The machine loses power: unsynced data and name changes are lost,
    /// all or in part (see the module docs); open files die.
    pub fn crash(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.generation += 1;
        inner.stats.crashes += 1;
        if inner.names != inner.durable_names {
            if inner.rng.random_bool(0.5) {
                let lost = inner
                    .names
                    .iter()
                    .filter(|(p, i)| inner.durable_names.get(*p) != Some(i))
                    .count()
                    + inner
                        .durable_names
                        .keys()
                        .filter(|p| !inner.names.contains_key(*p))
                        .count();
                inner.stats.lost_dir_ops += lost as u64;
                inner.names = inner.durable_names.clone();
            } else {
                inner.durable_names = inner.names.clone();
            }
        }
        let live: BTreeSet<u64> = inner.names.values().copied().collect();
        inner.inodes.retain(|i, _| live.contains(i));
        for inode in inner.inodes.values_mut() {
            crash_file(inode, &mut inner.rng, &mut inner.stats);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0
            .lock()
            .expect("the fault filesystem's lock is never poisoned")
    }

    /// Draws whether this operation fails.
    fn maybe_fail(&self, inner: &mut Inner, what: &str, path: &Path) -> io::Result<()> {
        if inner.error_chance > 0.0 && inner.rng.random_bool(inner.error_chance) {
            let kind = if inner.rng.random_bool(0.5) {
                Injected::Eio
            } else {
                Injected::Enospc
            };
            return Err(inject(inner, kind, what, path));
        }
        Ok(())
    }
}

fn inject(inner: &mut Inner, kind: Injected, what: &str, path: &Path) -> io::Error {
    inner.injected = true;
    let code = match kind {
        Injected::Eio => {
            inner.stats.eio += 1;
            EIO
        }
        Injected::Enospc => {
            inner.stats.enospc += 1;
            ENOSPC
        }
    };
    let os = io::Error::from_raw_os_error(code);
    io::Error::new(
        os.kind(),
        format!("injected on {what} {}: {os}", path.display()),
    )
}

fn crashed_in_sync(inner: &mut Inner, when: &str, path: &Path) -> io::Error {
    inner.injected = true;
    inner.stats.crashes_in_sync += 1;
    io::Error::other(format!("simulated crash {when} syncing {}", path.display()))
}

/// What a crash leaves of one file.
fn crash_file(inode: &mut Inode, rng: &mut StdRng, stats: &mut FaultStats) {
    let writes = std::mem::take(&mut inode.unsynced_writes);
    let unsynced = inode.data.len() - inode.durable_len;
    let mut keep = 0;
    if !writes.is_empty() {
        match rng.random_range(0..3) {
            0 => {}
            1 => {
                let n = rng.random_range(0..=writes.len());
                keep = writes[..n].iter().sum();
            }
            _ => {
                let n = rng.random_range(0..writes.len());
                keep = writes[..n].iter().sum();
                let next = writes[n];
                if next > 1 {
                    let part = rng.random_range(1..next);
                    let start = inode.durable_len + keep;
                    stats.torn_writes += 1;
                    match rng.random_range(0..4) {
                        0 => {
                            stats.garbage_tails += 1;
                            rng.fill(&mut inode.data[start..start + part]);
                        }
                        1 => {
                            stats.garbage_tails += 1;
                            inode.data[start..start + part].fill(0);
                        }
                        _ => {}
                    }
                    keep += part;
                }
            }
        }
    }
    stats.lost_unsynced_bytes += (unsynced - keep) as u64;
    inode.data.truncate(inode.durable_len + keep);
    for (from, to) in std::mem::take(&mut inode.lost) {
        let to = to.min(inode.data.len());
        if from < to {
            inode.data[from..to].fill(0);
        }
    }
    inode.durable_len = inode.data.len();
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl FileSystem for FaultFs {
    type File = FaultFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        for d in dir.ancestors() {
            inner.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(inner
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn create(&self, path: &Path, exclusive: bool) -> io::Result<FaultFile> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !path.parent().is_some_and(|d| inner.dirs.contains(d)) {
            return Err(not_found(path));
        }
        if exclusive && inner.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        // Emptying an existing file gives it a new inode: the old contents
        // come back if the name change is lost in a crash.
        let inode = inner.next_inode;
        inner.next_inode += 1;
        inner.inodes.insert(inode, Inode::default());
        inner.names.insert(path.to_path_buf(), inode);
        Ok(FaultFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
            generation: inner.generation,
        })
    }

    fn open_append(&self, path: &Path) -> io::Result<FaultFile> {
        self.open_read(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<FaultFile> {
        let inner = self.lock();
        let inode = *inner.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(FaultFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
            generation: inner.generation,
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = self.lock();
        let inode = inner.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(inner.inodes[inode].data.clone())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut guard = self.lock();
        self.maybe_fail(&mut guard, "truncating", path)?;
        let inner = &mut *guard;
        let id = *inner.names.get(path).ok_or_else(|| not_found(path))?;
        let inode = inner.inodes.get_mut(&id).expect("named inodes exist");
        inode.data.truncate(len as usize);
        inode.durable_len = inode.data.len();
        inode.unsynced_writes.clear();
        inode.lost.clear();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        let inode = inner.names.remove(from).ok_or_else(|| not_found(from))?;
        inner.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut guard = self.lock();
        self.maybe_fail(&mut guard, "syncing directory", dir)?;
        let inner = &mut *guard;
        inner.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, i) in &inner.names {
            if p.parent() == Some(dir) {
                inner.durable_names.insert(p.clone(), *i);
            }
        }
        Ok(())
    }
}

/// An open file of a [`FaultFs`].
pub struct FaultFile {
    fs: FaultFs,
    inode: u64,
    path: PathBuf,
    generation: u64,
}

impl fmt::Debug for FaultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultFile({})", self.path.display())
    }
}

impl FaultFile {
    /// The file's inode, checking the handle survived no crash.
    fn inode<'a>(&self, inner: &'a mut Inner) -> io::Result<&'a mut Inode> {
        if inner.generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: a file opened before a crash used after it",
                self.path.display()
            )));
        }
        Ok(inner
            .inodes
            .get_mut(&self.inode)
            .expect("open files keep their inode until a crash"))
    }
}

impl io::Write for FaultFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.fs.lock();
        let inner = &mut *guard;
        self.inode(inner)?;
        let failed = self.fs.maybe_fail(inner, "writing", &self.path);
        // A failed write may still have written a prefix.
        let n = match &failed {
            Ok(()) => buf.len(),
            Err(_) if !buf.is_empty() && inner.rng.random_bool(0.5) => {
                inner.rng.random_range(0..buf.len())
            }
            Err(_) => 0,
        };
        let inode = self.inode(inner)?;
        inode.data.extend_from_slice(&buf[..n]);
        if n > 0 {
            inode.unsynced_writes.push(n);
        }
        failed.map(|()| n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FsFile for FaultFile {
    fn sync_data(&mut self) -> io::Result<()> {
        let mut guard = self.fs.lock();
        let inner = &mut *guard;
        self.inode(inner)?;
        if inner.crash_chance > 0.0 && inner.rng.random_bool(inner.crash_chance) {
            return Err(crashed_in_sync(inner, "before", &self.path));
        }
        if let Err(e) = self.fs.maybe_fail(inner, "syncing", &self.path) {
            // fsyncgate: the kernel drops the dirty pages and forgets the
            // error; what they held never reaches the disk.
            let inode = self.inode(inner)?;
            let range = (inode.durable_len, inode.data.len());
            inode.lost.push(range);
            inode.unsynced_writes.clear();
            inode.durable_len = inode.data.len();
            return Err(e);
        }
        let inode = self.inode(inner)?;
        inode.durable_len = inode.data.len();
        inode.unsynced_writes.clear();
        if inner.crash_chance > 0.0 && inner.rng.random_bool(inner.crash_chance) {
            return Err(crashed_in_sync(inner, "after", &self.path));
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut inner = self.fs.lock();
        Ok(self.inode(&mut inner)?.data.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut inner = self.fs.lock();
        let data = &self.inode(&mut inner)?.data;
        let start = offset as usize;
        let end = start.checked_add(buf.len()).filter(|&e| e <= data.len());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: read past the end", self.path.display()),
            ));
        };
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn dir() -> &'static Path {
        Path::new("/d")
    }

    /// A disk with `/d/f` (its name synced) holding `synced`, then `unsynced`
    /// written as one write per element.
    fn disk(seed: u64, synced: &[u8], unsynced: &[&[u8]]) -> FaultFs {
        let fs = FaultFs::new(seed);
        fs.create_dir_all(dir()).unwrap();
        let mut f = fs.create(&dir().join("f"), true).unwrap();
        fs.sync_dir(dir()).unwrap();
        f.write_all(synced).unwrap();
        f.sync_data().unwrap();
        for w in unsynced {
            f.write_all(w).unwrap();
        }
        fs
    }

    #[test]
    fn synced_data_survives_a_crash_and_unsynced_data_may_not() {
        let mut seen_lost = false;
        let mut seen_kept = false;
        for seed in 0..64 {
            let fs = disk(seed, b"durable", &[b"one", b"two"]);
            fs.crash();
            let data = fs.read(&dir().join("f")).unwrap();
            assert!(data.starts_with(b"durable"), "seed {seed}: {data:?}");
            assert!(data.len() <= b"durableonetwo".len());
            seen_lost |= data == b"durable";
            seen_kept |= data == b"durableone";
            let stats = fs.stats();
            assert_eq!(stats.crashes, 1);
            assert_eq!(
                stats.lost_unsynced_bytes as usize,
                b"durableonetwo".len() - data.len()
            );
        }
        assert!(seen_lost && seen_kept, "both outcomes occur over 64 seeds");
    }

    #[test]
    fn a_crash_may_tear_the_last_write() {
        let mut torn = 0;
        let mut garbage = 0;
        for seed in 0..200 {
            let fs = disk(seed, b"", &[b"0123456789"]);
            fs.crash();
            let data = fs.read(&dir().join("f")).unwrap();
            if !data.is_empty() && data.len() < 10 {
                torn += 1;
                if data[..] != b"0123456789"[..data.len()] {
                    garbage += 1;
                }
            }
            assert_eq!(
                fs.stats().torn_writes,
                u64::from(!data.is_empty() && data.len() < 10)
            );
        }
        assert!(torn > 20 && garbage > 0, "torn {torn}, garbage {garbage}");
    }

    #[test]
    fn names_are_durable_after_a_directory_sync() {
        let mut lost = 0;
        for seed in 0..32 {
            let fs = disk(seed, b"x", &[]);
            let mut g = fs.create(&dir().join("g.tmp"), true).unwrap();
            g.write_all(b"snapshot").unwrap();
            g.sync_data().unwrap();
            fs.rename(&dir().join("g.tmp"), &dir().join("g")).unwrap();
            fs.remove_file(&dir().join("f")).unwrap();
            fs.crash();
            let names = fs.list_dir(dir()).unwrap();
            if names == ["f"] {
                lost += 1;
                assert_eq!(fs.read(&dir().join("f")).unwrap(), b"x");
            } else {
                assert_eq!(names, ["g"]);
                assert_eq!(fs.read(&dir().join("g")).unwrap(), b"snapshot");
            }
        }
        assert!(lost > 0 && lost < 32);
        // Once the directory is synced, the names stay.
        let fs = disk(1, b"x", &[]);
        fs.rename(&dir().join("f"), &dir().join("h")).unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.crash();
        assert_eq!(fs.list_dir(dir()).unwrap(), ["h"]);
    }

    #[test]
    fn errors_are_eio_or_enospc_and_reported() {
        let fs = disk(7, b"", &[]);
        fs.set_faults(1.0, 0.0);
        let mut f = fs.open_append(&dir().join("f")).unwrap();
        let e = f.write_all(b"data").unwrap_err();
        assert!(
            [Some(EIO), Some(ENOSPC)].contains(&e.raw_os_error())
                || e.kind() == io::ErrorKind::StorageFull
                || e.to_string().contains("injected"),
            "{e}"
        );
        assert!(f.sync_data().is_err());
        assert!(fs.sync_dir(dir()).is_err());
        let stats = fs.stats();
        assert_eq!(stats.eio + stats.enospc, 3);
        assert!(fs.take_injected());
        assert!(!fs.take_injected(), "taken");
    }

    #[test]
    fn a_failed_sync_loses_its_data_even_after_a_later_sync() {
        let fs = disk(3, b"ab", &[b"cd"]);
        let mut f = fs.open_append(&dir().join("f")).unwrap();
        fs.set_faults(1.0, 0.0);
        assert!(f.sync_data().is_err());
        fs.set_faults(0.0, 0.0);
        f.write_all(b"ef").unwrap();
        f.sync_data().unwrap();
        assert_eq!(
            fs.read(&dir().join("f")).unwrap(),
            b"abcdef",
            "the cache still has it"
        );
        fs.crash();
        assert_eq!(fs.read(&dir().join("f")).unwrap(), b"ab\0\0ef");
    }

    #[test]
    fn a_crash_in_a_sync_is_before_or_after_it() {
        let (mut before, mut after) = (0, 0);
        for seed in 0..32 {
            let fs = disk(seed, b"", &[]);
            let mut f = fs.open_append(&dir().join("f")).unwrap();
            f.write_all(b"zz").unwrap();
            fs.set_faults(0.0, 0.5);
            let e = match f.sync_data() {
                Ok(()) => continue,
                Err(e) => e.to_string(),
            };
            assert!(fs.take_injected());
            fs.crash();
            let data = fs.read(&dir().join("f")).unwrap();
            if e.contains("simulated crash after") {
                after += 1;
                assert_eq!(data, b"zz", "synced before the crash");
            } else {
                assert!(e.contains("simulated crash before"), "{e}");
                before += 1;
            }
            assert!(f.len().is_err(), "a handle from before the crash is dead");
        }
        assert!(before > 0 && after > 0);
    }
}
