//! Fuzzing keel-node's decoders (issue 17): snapshot files, peer messages,
//! the address book and serde snapshots, from arbitrary bytes and from
//! valid encodings with bytes flipped, cut off or appended. Nothing panics;
//! every refusal is a typed error.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use keel_raft as raft;
use proptest::prelude::*;
use prost::Message as _;

use crate::addresses;
use crate::codec::{self, pb};
use crate::snapshot_file::{FileSnapshot, SnapshotWriter};
use crate::state_machine::{read_serde_snapshot, write_serde_snapshot};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..8,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 11),
        1 => any::<u64>(),
    ]
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(edgy_u64(), 0..4)
}

fn conf_state() -> impl Strategy<Value = raft::ConfState> {
    (ids(), ids(), ids(), ids()).prop_map(|(voters, voters_outgoing, learners, learners_next)| {
        raft::ConfState {
            voters,
            voters_outgoing,
            learners,
            learners_next,
        }
    })
}

/// A snapshot file as `SnapshotWriter` writes it, and its bytes.
fn snapshot_file(dir: &Path, last: raft::EntryId, cs: raft::ConfState, data: &[u8]) -> Vec<u8> {
    let path = dir.join("s.snap");
    let mut w = SnapshotWriter::create(path.clone(), last, cs).unwrap();
    w.write_all(data).unwrap();
    let s = w.finish().unwrap();
    assert_eq!(s.meta.size, data.len() as u64);
    fs::read(path).unwrap()
}

/// Opens `bytes` as a snapshot file: an `InvalidData` refusal, or a
/// snapshot whose data reads back whole.
fn open_bytes(dir: &Path, bytes: &[u8]) -> Result<(FileSnapshot, Vec<u8>), std::io::Error> {
    let path = dir.join("t.snap");
    fs::write(&path, bytes).unwrap();
    let s = FileSnapshot::open(&path)?;
    let mut data = Vec::new();
    s.reader().unwrap().read_to_end(&mut data).unwrap();
    assert_eq!(data.len() as u64, s.meta.size);
    Ok((s, data))
}

fn message() -> impl Strategy<Value = raft::Message> {
    use raft::MessageBody as M;
    let id = || (edgy_u64(), edgy_u64()).prop_map(|(term, index)| raft::EntryId { term, index });
    let entry = (edgy_u64(), edgy_u64(), any::<bool>(), any::<Vec<u8>>()).prop_map(
        |(term, index, conf, data)| raft::Entry {
            term,
            index,
            kind: if conf {
                raft::EntryKind::ConfChange
            } else {
                raft::EntryKind::Normal
            },
            data: Bytes::from(data),
        },
    );
    let body = prop_oneof![
        (
            edgy_u64(),
            edgy_u64(),
            proptest::collection::vec(entry, 0..3),
            edgy_u64()
        )
            .prop_map(
                |(prev_index, prev_term, entries, commit)| M::Append(raft::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit
                })
            ),
        edgy_u64().prop_map(|index| M::AppendResponse(raft::AppendResponse::Accepted { index })),
        (edgy_u64(), edgy_u64(), edgy_u64()).prop_map(|(a, b, c)| M::AppendResponse(
            raft::AppendResponse::Rejected {
                rejected_index: a,
                hint_index: b,
                hint_term: c
            }
        )),
        (any::<bool>(), id(), any::<bool>()).prop_map(|(pre_vote, last, transfer)| {
            M::Vote(raft::VoteRequest {
                pre_vote,
                last,
                transfer,
            })
        }),
        (id(), conf_state(), edgy_u64(), edgy_u64(), any::<Vec<u8>>()).prop_map(
            |(last, conf_state, size, offset, data)| M::Snapshot(raft::SnapshotChunk {
                meta: raft::SnapshotMeta {
                    last,
                    conf_state,
                    size
                },
                offset,
                data: Bytes::from(data),
            })
        ),
        (edgy_u64(), any::<Vec<u8>>()).prop_map(|(request, data)| M::Propose {
            request,
            data: Bytes::from(data)
        }),
        (edgy_u64(), id()).prop_map(|(request, id)| M::ProposeResponse {
            request,
            result: Ok(id)
        }),
        (edgy_u64(), edgy_u64()).prop_map(|(request, index)| M::ProposeResponse {
            request,
            result: Err(raft::ProposeError::NotCaughtUp {
                id: index,
                matched: request,
                last: index,
            }),
        }),
        Just(M::TimeoutNow),
    ];
    (edgy_u64(), edgy_u64(), edgy_u64(), body).prop_map(|(from, to, term, body)| raft::Message {
        from,
        to,
        term,
        body,
    })
}

/// Decodes `bytes` as a peer does: protobuf, then keel-raft. Whatever
/// decodes re-encodes to a message that decodes the same.
fn decode_peer_message(bytes: &[u8]) -> Result<raft::Message, String> {
    let pb = pb::Message::decode(bytes).map_err(|e| e.to_string())?;
    let m = codec::from_pb(pb).map_err(|e| e.to_string())?;
    let again = codec::to_pb(&m).encode_to_vec();
    assert_eq!(
        codec::from_pb(pb::Message::decode(&again[..]).unwrap()).unwrap(),
        m
    );
    Ok(m)
}

/// Found by `hostile_snapshot_trailers_are_refused`: a trailer claiming a
/// data length near `u64::MAX` overflowed the length check.
#[test]
fn a_snapshot_claiming_an_absurd_length_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cs = raft::ConfState::with_voters(&[1]);
    let mut bytes = snapshot_file(dir.path(), raft::EntryId { term: 1, index: 1 }, cs, b"x");
    let at = bytes.len() - 12;
    bytes[at..at + 8].copy_from_slice(&(u64::MAX - 11).to_le_bytes());
    let err = open_bytes(dir.path(), &bytes).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_snapshot_files_are_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        magic in prop_oneof![Just(&b"KSN3"[..]), Just(&b"KSN2"[..]), Just(&b""[..])],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = magic.to_vec();
        file.extend_from_slice(&bytes);
        // Random bytes cannot carry two matching CRC32Cs.
        let err = open_bytes(dir.path(), &file).map(|_| ()).unwrap_err();
        prop_assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{}", err);
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused(
        index in edgy_u64(),
        cs in conf_state(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
        garbage in proptest::collection::vec(any::<u8>(), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let last = raft::EntryId { term: 7, index };
        let good = snapshot_file(dir.path(), last, cs.clone(), &data);
        let (s, back) = open_bytes(dir.path(), &good).unwrap();
        prop_assert_eq!(s.meta.last, last);
        prop_assert_eq!(&s.meta.conf_state, &cs);
        prop_assert_eq!(&back, &data);
        let mut flipped = good.clone();
        flipped[at.index(good.len())] ^= x;
        let cut = &good[..at.index(good.len())];
        let mut longer = good.clone();
        longer.extend_from_slice(&garbage);
        // The magic is outside the checksums: `KSN3` flipped to `KSN2`
        // opens as a file without an address book (its reader, the state
        // machine, then refuses the data).
        let renamed = flipped.starts_with(b"KSN2");
        for bad in [flipped, cut.to_vec(), longer] {
            if renamed && bad.len() == good.len() {
                continue;
            }
            let err = open_bytes(dir.path(), &bad).map(|_| ()).unwrap_err();
            prop_assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{}", err);
        }
    }

    #[test]
    fn hostile_snapshot_trailers_are_refused(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        size in edgy_u64(),
        header_len in prop_oneof![Just(None), edgy_u64().prop_map(|n| Some(n as u32))],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cs = raft::ConfState::with_voters(&[1, 2, 3]);
        let mut bytes = snapshot_file(dir.path(), raft::EntryId { term: 1, index: 9 }, cs, &data);
        let at = bytes.len() - 12;
        bytes[at..at + 8].copy_from_slice(&size.to_le_bytes());
        if let Some(n) = header_len {
            bytes[4..8].copy_from_slice(&n.to_le_bytes());
        }
        match open_bytes(dir.path(), &bytes) {
            Ok((_, back)) => {
                // Only the true values can pass both checks.
                prop_assert_eq!(size, data.len() as u64);
                prop_assert_eq!(back, data);
            }
            Err(err) => prop_assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{}", err),
        }
    }

    #[test]
    fn arbitrary_bytes_are_a_peer_message_or_a_decode_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let _ = decode_peer_message(&bytes);
    }

    #[test]
    fn damaged_peer_messages_decode_or_are_refused(
        m in message(),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
        garbage in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let good = codec::to_pb(&m).encode_to_vec();
        prop_assert_eq!(decode_peer_message(&good).unwrap(), m);
        let mut flipped = good.clone();
        if !good.is_empty() {
            flipped[at.index(good.len())] ^= x;
        }
        let cut = if good.is_empty() { &good[..] } else { &good[..at.index(good.len())] };
        let mut longer = good.clone();
        longer.extend_from_slice(&garbage);
        for bad in [flipped, cut.to_vec(), longer] {
            let _ = decode_peer_message(&bad);
        }
    }

    #[test]
    fn well_formed_protobuf_with_hostile_fields_is_a_decode_error_at_worst(
        kind in any::<u32>(),
        refusal in any::<i32>(),
        conf_change_error in any::<u32>(),
        which in 0u8..6,
    ) {
        use pb::message::Body;
        let body = match which {
            0 => None,
            1 => Some(Body::Vote(pb::VoteRequest { pre_vote: true, last: None, transfer: false })),
            2 => Some(Body::Append(pb::Append {
                entries: vec![pb::Entry { kind, ..Default::default() }],
                ..Default::default()
            })),
            3 => Some(Body::Snapshot(pb::SnapshotChunk::default())),
            4 => Some(Body::ProposeResponse(pb::ProposeResponse { request: 1, result: None })),
            _ => Some(Body::ProposeResponse(pb::ProposeResponse {
                request: 1,
                result: Some(pb::propose_response::Result::Refused(pb::ProposeRefusal {
                    kind: refusal,
                    conf_change_error,
                    ..Default::default()
                })),
            })),
        };
        let bytes = pb::Message { from: 1, to: 2, term: 3, body }.encode_to_vec();
        let decoded = decode_peer_message(&bytes);
        match which {
            0 | 1 | 3 | 4 => prop_assert!(decoded.is_err()),
            2 => prop_assert_eq!(decoded.is_ok(), kind == 0 || kind == 1),
            _ => {}
        }
    }

    #[test]
    fn arbitrary_address_books_are_read_or_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        book in proptest::collection::btree_map(edgy_u64(), "[a-z0-9.:]{0,12}", 0..4),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
    ) {
        // A membership change's context: garbage reads as no addresses.
        let _ = addresses::decode(&bytes);
        prop_assert_eq!(addresses::decode(&addresses::encode(&book)), book.clone());
        // A snapshot's head.
        let _ = addresses::read_from_snapshot(&mut &bytes[..]);
        let mut good = Vec::new();
        addresses::write_to_snapshot(&book, &mut good).unwrap();
        good.extend_from_slice(b"rest");
        let mut input = &good[..];
        prop_assert_eq!(addresses::read_from_snapshot(&mut input).unwrap(), book);
        prop_assert_eq!(input, b"rest");
        let mut flipped = good.clone();
        flipped[at.index(good.len())] ^= x;
        let _ = addresses::read_from_snapshot(&mut &flipped[..]);
        let cut = &good[..at.index(good.len() - 4)];
        prop_assert!(addresses::read_from_snapshot(&mut &cut[..]).is_err());
    }

    #[test]
    fn arbitrary_serde_snapshots_are_read_or_refused(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
        state in proptest::collection::btree_map(".{0,8}", any::<u64>(), 0..6),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
    ) {
        type State = BTreeMap<String, Vec<u64>>;
        let _ = read_serde_snapshot::<State>(&mut &bytes[..]);
        let state: State = state.into_iter().map(|(k, v)| (k, vec![v; 3])).collect();
        let mut good = Vec::new();
        write_serde_snapshot(&state, &mut good).unwrap();
        prop_assert_eq!(read_serde_snapshot::<State>(&mut &good[..]).unwrap(), state);
        let mut flipped = good.clone();
        flipped[at.index(good.len())] ^= x;
        let _ = read_serde_snapshot::<State>(&mut &flipped[..]);
        // A length prefix claiming far more elements than there are.
        let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        huge.extend_from_slice(&bytes);
        prop_assert!(read_serde_snapshot::<State>(&mut &huge[..]).is_err());
        if good.len() > 1 {
            let cut = &good[..at.index(good.len() - 1)];
            prop_assert!(read_serde_snapshot::<State>(&mut &cut[..]).is_err());
        }
    }
}
