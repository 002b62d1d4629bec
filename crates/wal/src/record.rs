//! The on-disk record: `[len: u32][crc32c: u32][kind: u8][body]`, where `len`
//! counts kind and body and the checksum covers them too. All integers are
//! little-endian.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel_raft::{Entry, EntryId, EntryKind, HardState};

/// Bytes before the checksummed part: length and checksum.
pub(crate) const HEADER_LEN: usize = 8;
/// The largest record accepted on reading; anything larger is corruption.
pub(crate) const MAX_RECORD_LEN: u32 = 256 * 1024 * 1024;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;

/// One logical record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A log entry; one at an index at or below the last replaces the suffix.
    Entry(Entry),
    /// The latest hard state.
    HardState(HardState),
    /// The log now starts after this snapshot. With `replaces_log` (a
    /// snapshot received from the leader) every entry before the marker is
    /// dropped; otherwise (local compaction) entries after it stay.
    Snapshot {
        /// The snapshot's last entry.
        last: EntryId,
        /// Whether the snapshot replaced the whole log.
        replaces_log: bool,
    },
}

/// Appends the encoding of `record` to `out`.
pub(crate) fn encode(record: &Record, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32_le(0);
    out.put_u32_le(0);
    match record {
        Record::Entry(e) => {
            out.put_u8(KIND_ENTRY);
            out.put_u64_le(e.term);
            out.put_u64_le(e.index);
            out.put_u8(match e.kind {
                EntryKind::Normal => 0,
                EntryKind::ConfChange => 1,
            });
            out.put_slice(&e.data);
        }
        Record::HardState(hs) => {
            out.put_u8(KIND_HARD_STATE);
            out.put_u64_le(hs.term);
            out.put_u64_le(hs.vote.unwrap_or(0));
            out.put_u64_le(hs.commit);
        }
        Record::Snapshot { last, replaces_log } => {
            out.put_u8(KIND_SNAPSHOT);
            out.put_u64_le(last.term);
            out.put_u64_le(last.index);
            out.put_u8(u8::from(*replaces_log));
        }
    }
    let body = &out[start + HEADER_LEN..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why bytes could not be read as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The record runs past the end of the data (a torn write, if at the tail).
    Truncated,
    /// The length is zero or absurd.
    Length(u32),
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the body makes no sense.
    Malformed(&'static str),
}

/// Decodes the record at the start of `data`; returns it and its total size.
pub(crate) fn decode(data: &[u8]) -> Result<(Record, usize), Bad> {
    if data.len() < HEADER_LEN {
        return Err(Bad::Truncated);
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(Bad::Length(len));
    }
    let total = HEADER_LEN + len as usize;
    if data.len() < total {
        return Err(Bad::Truncated);
    }
    let body = &data[HEADER_LEN..total];
    if crc32c::crc32c(body) != crc {
        return Err(Bad::Checksum);
    }
    Ok((parse(body)?, total))
}

fn parse(body: &[u8]) -> Result<Record, Bad> {
    let mut b = body;
    let kind = b.get_u8();
    let need = |b: &[u8], n: usize| {
        if b.len() < n {
            Err(Bad::Malformed("short body"))
        } else {
            Ok(())
        }
    };
    match kind {
        KIND_ENTRY => {
            need(b, 17)?;
            let term = b.get_u64_le();
            let index = b.get_u64_le();
            let kind = match b.get_u8() {
                0 => EntryKind::Normal,
                1 => EntryKind::ConfChange,
                _ => return Err(Bad::Malformed("unknown entry kind")),
            };
            Ok(Record::Entry(Entry {
                term,
                index,
                kind,
                data: Bytes::copy_from_slice(b),
            }))
        }
        KIND_HARD_STATE => {
            need(b, 24)?;
            let term = b.get_u64_le();
            let vote = b.get_u64_le();
            let commit = b.get_u64_le();
            Ok(Record::HardState(HardState {
                term,
                vote: (vote != 0).then_some(vote),
                commit,
            }))
        }
        KIND_SNAPSHOT => {
            need(b, 17)?;
            let term = b.get_u64_le();
            let index = b.get_u64_le();
            Ok(Record::Snapshot {
                last: EntryId { term, index },
                replaces_log: b.get_u8() != 0,
            })
        }
        _ => Err(Bad::Malformed("unknown record kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: Record) {
        let mut buf = BytesMut::new();
        encode(&r, &mut buf);
        let (back, size) = decode(&buf).unwrap();
        assert_eq!(back, r);
        assert_eq!(size, buf.len());
    }

    #[test]
    fn records_round_trip() {
        roundtrip(Record::Entry(Entry::normal(
            3,
            9,
            Bytes::from_static(b"payload"),
        )));
        roundtrip(Record::Entry(Entry {
            term: 1,
            index: 1,
            kind: EntryKind::ConfChange,
            data: Bytes::new(),
        }));
        roundtrip(Record::HardState(HardState {
            term: 4,
            vote: Some(2),
            commit: 7,
        }));
        roundtrip(Record::HardState(HardState {
            term: 4,
            vote: None,
            commit: 0,
        }));
        roundtrip(Record::Snapshot {
            last: EntryId {
                term: 2,
                index: 100,
            },
            replaces_log: true,
        });
    }

    #[test]
    fn damage_is_detected() {
        let mut buf = BytesMut::new();
        encode(
            &Record::Entry(Entry::normal(1, 1, Bytes::from_static(b"abc"))),
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).unwrap_err(),
                Bad::Truncated,
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
        assert_eq!(decode(&[0u8; 16]).unwrap_err(), Bad::Length(0));
    }
}
