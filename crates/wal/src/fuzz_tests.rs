//! Fuzzing the record decoder and recovery (issue 17): arbitrary bytes,
//! damaged valid logs (flips, truncations, garbage, zero fill) and hostile
//! but well-formed records. Nothing panics; a damaged log either opens with
//! exactly the records before the damage, or is refused with a typed error.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use keel_raft::{Entry, EntryId, EntryKind, HardState};
use proptest::prelude::*;

use crate::record::{self, Bad, Record};
use crate::{replay, segment, Recovered, Wal, WalError, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_size: 1 << 30,
        sync: false,
    }
}

fn encoded(records: &[Record]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for r in records {
        record::encode(r, &mut buf);
    }
    buf.to_vec()
}

/// The state replaying `records` gives (they are all well-formed here).
fn replayed(records: &[Record]) -> Recovered {
    let mut state = Recovered::default();
    for r in records {
        replay(&mut state, r.clone()).expect("a generated log replays");
    }
    state
}

/// A number that is often at an edge of its type.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..8,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(i64::MAX as u64),
        1 => any::<u64>(),
    ]
}

fn any_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (
            edgy_u64(),
            edgy_u64(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(term, index, conf, data)| Record::Entry(Entry {
                term,
                index,
                kind: if conf {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: Bytes::from(data),
            })),
        (edgy_u64(), edgy_u64(), edgy_u64()).prop_map(|(term, vote, commit)| {
            Record::HardState(HardState {
                term,
                vote: (vote != 0).then_some(vote),
                commit,
            })
        }),
        (edgy_u64(), edgy_u64(), any::<bool>()).prop_map(|(term, index, replaces_log)| {
            Record::Snapshot {
                last: EntryId { term, index },
                replaces_log,
            }
        }),
    ]
}

/// A log a real node could have written: a hard state, entries from 1 with
/// non-decreasing terms, a suffix rewrite now and then, hard states between
/// them, maybe a local snapshot marker.
fn plausible_log() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec((0u8..10, 0usize..30), 1..25).prop_map(|steps| {
        let mut out = vec![Record::HardState(HardState {
            term: 1,
            vote: Some(1),
            commit: 0,
        })];
        let (mut last, mut term, mut snap) = (0u64, 1u64, 0u64);
        for (what, size) in steps {
            match what {
                0 => {
                    term += 1;
                    out.push(Record::HardState(HardState {
                        term,
                        vote: Some(2),
                        commit: snap,
                    }));
                }
                1 if last > snap + 1 => {
                    // A conflicting suffix replaced from a lower index.
                    last = snap + 1 + (size as u64 % (last - snap));
                    term += 1;
                    out.push(Record::Entry(Entry::normal(term, last, Bytes::new())));
                }
                2 if last > snap => {
                    snap = snap + 1 + (size as u64 % (last - snap));
                    out.push(Record::Snapshot {
                        last: EntryId { term, index: snap },
                        replaces_log: false,
                    });
                }
                _ => {
                    last += 1;
                    out.push(Record::Entry(Entry::normal(
                        term,
                        last,
                        Bytes::from(vec![what; size]),
                    )));
                }
            }
        }
        out
    })
}

/// How a log on disk is damaged.
#[derive(Clone, Debug)]
enum Damage {
    /// The last segment cut at this fraction (per mille) of its length.
    Truncate(u16),
    /// One byte of one segment (chosen per mille of the whole) XORed.
    Flip(u16, u8),
    /// Random bytes after the last record.
    Garbage(Vec<u8>),
    /// Zeros after the last record (space allocated, never written).
    Zeros(usize),
    /// Part of one record overwritten with random bytes.
    Overwrite(u16, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u16..1000).prop_map(Damage::Truncate),
        (0u16..1000, 1u8..=255).prop_map(|(at, x)| Damage::Flip(at, x)),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
        (1usize..5000).prop_map(Damage::Zeros),
        (0u16..1000, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
    ]
}

fn write_segments(dir: &Path, segments: &[Vec<u8>]) {
    for (seq, bytes) in segments.iter().enumerate() {
        fs::write(dir.join(segment::file_name(seq as u64)), bytes).unwrap();
    }
}

/// Per record: its segment, and where it starts and ends in it.
type Spans = Vec<(usize, usize, usize)>;

/// Splits `records` into `parts` segments at record boundaries; returns the
/// segments' bytes and, per record, (segment, start offset, end offset).
fn split(records: &[Record], parts: usize) -> (Vec<Vec<u8>>, Spans) {
    let per = records.len().div_ceil(parts).max(1);
    let mut segments = Vec::new();
    let mut spans = Vec::new();
    for chunk in records.chunks(per) {
        let mut bytes = Vec::new();
        for r in chunk {
            let start = bytes.len();
            bytes.extend_from_slice(&encoded(std::slice::from_ref(r)));
            spans.push((segments.len(), start, bytes.len()));
        }
        segments.push(bytes);
    }
    (segments, spans)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Found by `hostile_well_formed_records_never_panic_recovery`: an entry
/// at the last possible index, then another, overflowed `last.index + 1`.
#[test]
fn an_entry_at_the_last_index_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        Record::Entry(Entry::normal(0, u64::MAX, Bytes::new())),
        Record::Entry(Entry::normal(0, 1, Bytes::new())),
    ];
    write_segments(dir.path(), &[encoded(&records)]);
    let err = Wal::open(dir.path(), options()).err().expect("refused");
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

/// Opening the log in `dir` gives consecutive entries above the snapshot,
/// or refuses it as corrupt.
fn opens_consistent_or_is_refused(dir: &Path) -> Result<(), TestCaseError> {
    match Wal::open(dir, options()) {
        Ok((_, state)) => {
            let floor = state.snapshot.map_or(0, |s| s.index);
            for pair in state.entries.windows(2) {
                prop_assert_eq!(Some(pair[1].index), pair[0].index.checked_add(1));
            }
            prop_assert!(state.entries.iter().all(|e| e.index > floor));
        }
        Err(e) => prop_assert!(matches!(e, WalError::Corrupt { .. }), "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_to_a_typed_error_or_a_record_that_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok((r, size)) = record::decode(&data) {
            prop_assert!(size <= data.len());
            let again = encoded(std::slice::from_ref(&r));
            prop_assert_eq!(record::decode(&again).unwrap(), (r, again.len()));
        }
    }

    #[test]
    fn a_damaged_record_is_a_typed_error(
        r in any_record(),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
        garbage in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let good = encoded(std::slice::from_ref(&r));
        prop_assert_eq!(record::decode(&good).unwrap(), (r.clone(), good.len()));
        // Trailing bytes belong to the next record.
        let mut longer = good.clone();
        longer.extend_from_slice(&garbage);
        prop_assert_eq!(record::decode(&longer).unwrap(), (r, good.len()));
        // Cut short: always `Truncated`.
        let cut = at.index(good.len());
        prop_assert_eq!(record::decode(&good[..cut]).unwrap_err(), Bad::Truncated);
        // One byte changed: CRC32C catches every single-byte error.
        let mut flipped = good.clone();
        flipped[at.index(good.len())] ^= x;
        prop_assert!(record::decode(&flipped).is_err());
    }

    #[test]
    fn a_checksummed_body_of_any_shape_is_parsed_or_refused(
        body in proptest::collection::vec(any::<u8>(), 1..48),
    ) {
        let mut data = Vec::new();
        data.extend_from_slice(&(body.len() as u32).to_le_bytes());
        data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        data.extend_from_slice(&body);
        match record::decode(&data) {
            Ok((r, size)) => {
                prop_assert_eq!(size, data.len());
                let again = encoded(std::slice::from_ref(&r));
                prop_assert_eq!(record::decode(&again).unwrap().0, r);
            }
            Err(bad) => prop_assert!(matches!(bad, Bad::Malformed(_)), "{:?}", bad),
        }
    }

    #[test]
    fn arbitrary_segment_files_open_or_are_refused(
        files in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..3),
        valid_head in plausible_log(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = files;
        // Sometimes a valid log followed by nonsense.
        if files[0].len() % 2 == 0 {
            let mut head = encoded(&valid_head);
            head.extend_from_slice(&files[0]);
            files[0] = head;
        }
        write_segments(dir.path(), &files);
        opens_consistent_or_is_refused(dir.path())?;
    }

    #[test]
    fn hostile_well_formed_records_never_panic_recovery(
        records in proptest::collection::vec(any_record(), 0..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_segments(dir.path(), &[encoded(&records)]);
        opens_consistent_or_is_refused(dir.path())?;
    }

    #[test]
    fn a_damaged_log_opens_with_the_records_before_the_damage_or_is_refused(
        records in plausible_log(),
        parts in 1usize..4,
        damage in damage(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (mut segments, spans) = split(&records, parts);
        let last_seg = segments.len() - 1;
        let total: usize = segments.iter().map(Vec::len).sum();
        // Where a per-mille position falls: (segment, offset, record).
        let locate = |per_mille: u16| {
            let mut at = (total * per_mille as usize / 1000).min(total - 1);
            for (n, &(seg, start, end)) in spans.iter().enumerate() {
                if at < end - start {
                    return (seg, start + at, n);
                }
                at -= end - start;
            }
            unreachable!("position inside the log")
        };
        // The first record touched, and whether the log must still open
        // (a torn or padded tail) or must be refused (damage before the tail).
        enum Expect { Opens, Refused, Either }
        let (first_bad, expect) = match &damage {
            Damage::Truncate(per_mille) => {
                let seg = &mut segments[last_seg];
                let cut = seg.len() * *per_mille as usize / 1000;
                seg.truncate(cut);
                let n = spans
                    .iter()
                    .position(|&(s, _, end)| s == last_seg && end > cut)
                    .unwrap_or(records.len());
                (n, Expect::Opens)
            }
            Damage::Flip(per_mille, x) => {
                let (seg, offset, n) = locate(*per_mille);
                segments[seg][offset] ^= x;
                let expect = if seg != last_seg {
                    Expect::Refused
                } else if n + 1 < records.len() && offset >= spans[n].1 + 4 {
                    // Length intact: the damaged record is skipped over
                    // and the intact ones after it betray the corruption.
                    Expect::Refused
                } else {
                    Expect::Either
                };
                (n, expect)
            }
            Damage::Garbage(bytes) => {
                segments[last_seg].extend_from_slice(bytes);
                (records.len(), Expect::Either)
            }
            Damage::Zeros(n) => {
                segments[last_seg].extend(std::iter::repeat_n(0u8, *n));
                (records.len(), Expect::Opens)
            }
            Damage::Overwrite(per_mille, bytes) => {
                let (seg, offset, n) = locate(*per_mille);
                let end = (offset + bytes.len()).min(segments[seg].len());
                let changed = segments[seg][offset..end] != bytes[..end - offset];
                segments[seg][offset..end].copy_from_slice(&bytes[..end - offset]);
                if !changed {
                    (records.len(), Expect::Opens)
                } else if seg != last_seg {
                    (n, Expect::Refused)
                } else {
                    (n, Expect::Either)
                }
            }
        };
        write_segments(dir.path(), &segments);
        let expected = replayed(&records[..first_bad]);
        match (Wal::open(dir.path(), options()), expect) {
            (Ok((mut wal, state)), Expect::Opens | Expect::Either) => {
                // Exactly the records before the damage, nothing after it.
                prop_assert_eq!(&state, &expected);
                // The tail was cut off: the log goes on after the last
                // intact entry and reads back whole.
                let next = state
                    .entries
                    .last()
                    .map(|e| e.index)
                    .or(state.snapshot.map(|s| s.index))
                    .unwrap_or(0)
                    + 1;
                let entry = Entry::normal(99, next, Bytes::from_static(b"after"));
                wal.append(std::slice::from_ref(&entry), None).unwrap();
                drop(wal);
                let (_, again) = Wal::open(dir.path(), options()).unwrap();
                let mut want = expected;
                want.entries.push(entry);
                prop_assert_eq!(again, want);
            }
            (Err(e), Expect::Refused | Expect::Either) => {
                prop_assert!(matches!(e, WalError::Corrupt { .. }), "{}", e);
            }
            (Ok((_, state)), Expect::Refused) => {
                prop_assert!(false, "damage before the tail went unnoticed: {:?}", state);
            }
            (Err(e), Expect::Opens) => {
                prop_assert!(false, "a torn tail refused: {}", e);
            }
        }
    }
}
