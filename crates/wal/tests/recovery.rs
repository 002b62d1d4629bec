//! The WAL on a real filesystem: replay, truncation, segments and purge,
//! and recovery from torn tails, flipped bytes and missing segments.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use keel_raft::{Entry, EntryId, HardState};
use keel_wal::{Recovered, Wal, WalError, WalOptions};

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|i| Entry::normal(term, i, Bytes::from(format!("entry {i} of term {term}"))))
        .collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some(1),
        commit,
    }
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_size: 512,
        sync: true,
    }
}

fn reopen(dir: &Path) -> Recovered {
    Wal::open(dir, WalOptions::default()).expect("reopens").1
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn replays_entries_and_the_last_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert_eq!(rec, Recovered::default());
    wal.append(&entries(1, 1..=3), Some(hs(1, 1))).unwrap();
    wal.append(&entries(1, 4..=5), Some(hs(1, 4))).unwrap();
    wal.append(&[], Some(hs(1, 5))).unwrap();
    assert_eq!(wal.syncs(), 2, "none when only the commit index moves");
    wal.append(&[], Some(hs(2, 5))).unwrap();
    assert_eq!(wal.syncs(), 3, "a new term is synced");
    drop(wal);
    let rec = reopen(dir.path());
    assert_eq!(rec.entries, [entries(1, 1..=3), entries(1, 4..=5)].concat());
    assert_eq!(rec.hard_state, hs(2, 5));
}

#[test]
fn a_conflicting_append_replaces_the_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 1..=5), None).unwrap();
    wal.append(&entries(2, 3..=3), None).unwrap();
    drop(wal);
    let rec = reopen(dir.path());
    assert_eq!(rec.entries, [entries(1, 1..=2), entries(2, 3..=3)].concat());
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    assert!(matches!(
        wal.append(&entries(2, 9..=9), None),
        Err(WalError::NonContiguous { index: 9, last: 3 })
    ));
}

#[test]
fn segments_roll_and_purge_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 1..=40 {
        wal.append(&entries(1, i..=i), Some(hs(1, i - 1))).unwrap();
    }
    let before = wal.segment_count();
    assert!(before > 3, "rolled into {before} segments");
    wal.compact_to(EntryId { term: 1, index: 30 }).unwrap();
    let purged = wal.purge().unwrap();
    assert!(purged > 0);
    assert_eq!(segments(dir.path()).len(), before - purged);
    drop(wal);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, Some(EntryId { term: 1, index: 30 }));
    assert_eq!(rec.hard_state, hs(1, 39), "the hard state survives purging");
    assert_eq!(rec.entries.first().map(|e| e.index), Some(31));
    assert_eq!(rec.entries.last().map(|e| e.index), Some(40));
}

#[test]
fn an_installed_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 1..=8), None).unwrap();
    wal.install_snapshot(EntryId { term: 3, index: 5 }).unwrap();
    wal.append(&entries(3, 6..=6), None).unwrap();
    drop(wal);
    let rec = reopen(dir.path());
    assert_eq!(rec.snapshot, Some(EntryId { term: 3, index: 5 }));
    assert_eq!(
        rec.entries,
        entries(3, 6..=6),
        "stale entries 6..8 are gone"
    );
}

#[test]
fn a_torn_tail_is_cut_off_and_the_log_goes_on() {
    for cut in [1u64, 5, 9, 20] {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.append(&entries(1, 1..=3), Some(hs(1, 2))).unwrap();
        wal.append(&entries(1, 4..=4), None).unwrap();
        drop(wal);
        let file = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&file).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        let (mut wal, rec) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(
            rec.entries,
            entries(1, 1..=3),
            "cut {cut}: entry 4 was torn"
        );
        assert_eq!(rec.hard_state, hs(1, 2));
        wal.append(&entries(2, 4..=4), None).unwrap();
        drop(wal);
        assert_eq!(
            reopen(dir.path()).entries.len(),
            4,
            "appends after the cut replay"
        );
    }
}

#[test]
fn a_zero_filled_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 1..=2), None).unwrap();
    drop(wal);
    let file = segments(dir.path()).pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    assert_eq!(reopen(dir.path()).entries, entries(1, 1..=2));
    assert!(
        fs::metadata(&file).unwrap().len() < 4096,
        "the zeros were truncated"
    );
}

/// A crash tore the last write and left garbage where its length was (a
/// filesystem may show stale blocks in a file's unsynced tail): that is a
/// torn tail like any other, not corruption. Found by keel-sim's fault
/// filesystem: the node refused to start with `Length(326293312)`.
#[test]
fn a_torn_tail_with_a_garbage_length_is_cut_off() {
    for garbage in [
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4][..],
        &[0x40, 0x72, 0x72, 0x13, 9, 9][..],
        &[0x01, 0x00, 0x00, 0x80][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.append(&entries(1, 1..=2), Some(hs(1, 1))).unwrap();
        drop(wal);
        let file = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&file).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(garbage)
            .unwrap();
        let recovered = reopen(dir.path());
        assert_eq!(recovered.entries, entries(1, 1..=2), "{garbage:?}");
        assert_eq!(fs::metadata(&file).unwrap().len(), len, "cut off");
    }
}

#[test]
fn a_flipped_byte_before_the_tail_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
    wal.append(&entries(1, 1..=3), None).unwrap();
    drop(wal);
    let file = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&file).unwrap();
    data[20] ^= 0xff; // Inside the first record's body.
    fs::write(&file, &data).unwrap();
    match Wal::open(dir.path(), WalOptions::default()) {
        Err(WalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, file);
            assert_eq!(offset, 0);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r)),
    }
    // Still refused on a second try: nothing was "repaired" away.
    assert!(Wal::open(dir.path(), WalOptions::default()).is_err());
}

#[test]
fn damage_in_an_older_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 1..=20 {
        wal.append(&entries(1, i..=i), None).unwrap();
    }
    drop(wal);
    let first = segments(dir.path()).remove(0);
    let len = fs::metadata(&first).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::Corrupt { path, .. }) if path == first
    ));
}

#[test]
fn a_missing_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), small_segments()).unwrap();
    for i in 1..=60 {
        wal.append(&entries(1, i..=i), None).unwrap();
    }
    drop(wal);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), WalOptions::default()),
        Err(WalError::MissingSegment { missing: 1, .. })
    ));
}
