//! keel-raft messages to and from their protobuf form (proto/raft.proto).
//! Decoding checks that every required part is there: a peer speaking
//! nonsense gets an error, never a panic.

use keel_raft as raft;

/// The generated protobuf types.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("keel.raft.v1");
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer message: {0}")]
pub struct DecodeError(pub &'static str);

fn id_to_pb(id: raft::EntryId) -> pb::EntryId {
    pb::EntryId {
        term: id.term,
        index: id.index,
    }
}

fn id_from_pb(id: Option<pb::EntryId>) -> Result<raft::EntryId, DecodeError> {
    let id = id.ok_or(DecodeError("missing entry id"))?;
    Ok(raft::EntryId {
        term: id.term,
        index: id.index,
    })
}

fn conf_to_pb(cs: &raft::ConfState) -> pb::ConfState {
    pb::ConfState {
        voters: cs.voters.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners: cs.learners.clone(),
        learners_next: cs.learners_next.clone(),
    }
}

fn conf_from_pb(cs: Option<pb::ConfState>) -> raft::ConfState {
    let cs = cs.unwrap_or_default();
    raft::ConfState {
        voters: cs.voters,
        voters_outgoing: cs.voters_outgoing,
        learners: cs.learners,
        learners_next: cs.learners_next,
    }
}

fn entry_to_pb(e: &raft::Entry) -> pb::Entry {
    pb::Entry {
        term: e.term,
        index: e.index,
        kind: match e.kind {
            raft::EntryKind::Normal => 0,
            raft::EntryKind::ConfChange => 1,
        },
        data: e.data.clone(),
    }
}

fn entry_from_pb(e: pb::Entry) -> Result<raft::Entry, DecodeError> {
    let kind = match e.kind {
        0 => raft::EntryKind::Normal,
        1 => raft::EntryKind::ConfChange,
        _ => return Err(DecodeError("unknown entry kind")),
    };
    Ok(raft::Entry {
        term: e.term,
        index: e.index,
        kind,
        data: e.data,
    })
}

/// Encodes a message for the wire.
pub fn to_pb(m: &raft::Message) -> pb::Message {
    use pb::message::Body;
    use raft::MessageBody as M;
    let body = match &m.body {
        M::Append(a) => Body::Append(pb::Append {
            prev_index: a.prev_index,
            prev_term: a.prev_term,
            entries: a.entries.iter().map(entry_to_pb).collect(),
            commit: a.commit,
        }),
        M::AppendResponse(raft::AppendResponse::Accepted { index }) => {
            Body::AppendAccepted(pb::AppendAccepted { index: *index })
        }
        M::AppendResponse(raft::AppendResponse::Rejected {
            rejected_index,
            hint_index,
            hint_term,
        }) => Body::AppendRejected(pb::AppendRejected {
            rejected_index: *rejected_index,
            hint_index: *hint_index,
            hint_term: *hint_term,
        }),
        M::Heartbeat(h) => Body::Heartbeat(pb::Heartbeat {
            commit: h.commit,
            read_round: h.read_round,
        }),
        M::HeartbeatResponse(h) => Body::HeartbeatResponse(pb::HeartbeatResponse {
            read_round: h.read_round,
        }),
        M::Vote(v) => Body::Vote(pb::VoteRequest {
            pre_vote: v.pre_vote,
            last: Some(id_to_pb(v.last)),
            transfer: v.transfer,
        }),
        M::VoteResponse(v) => Body::VoteResponse(pb::VoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
        }),
        M::Snapshot(c) => Body::Snapshot(pb::SnapshotChunk {
            meta: Some(pb::SnapshotMeta {
                last: Some(id_to_pb(c.meta.last)),
                conf_state: Some(conf_to_pb(&c.meta.conf_state)),
                size: c.meta.size,
            }),
            offset: c.offset,
            data: c.data.clone(),
        }),
        M::SnapshotResponse {
            index,
            next_offset,
            rejected,
        } => Body::SnapshotResponse(pb::SnapshotResponse {
            index: *index,
            next_offset: *next_offset,
            rejected: *rejected,
        }),
        M::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
        M::ReadIndex { request } => Body::ReadIndex(pb::ReadIndex { request: *request }),
        M::ReadIndexResponse { request, index } => Body::ReadIndexResponse(pb::ReadIndexResponse {
            request: *request,
            index: *index,
        }),
    };
    pb::Message {
        from: m.from,
        to: m.to,
        term: m.term,
        body: Some(body),
    }
}

/// Decodes a message from the wire.
pub fn from_pb(m: pb::Message) -> Result<raft::Message, DecodeError> {
    use pb::message::Body;
    use raft::MessageBody as M;
    let body = match m.body.ok_or(DecodeError("message without a body"))? {
        Body::Append(a) => M::Append(raft::Append {
            prev_index: a.prev_index,
            prev_term: a.prev_term,
            entries: a
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            commit: a.commit,
        }),
        Body::AppendAccepted(a) => {
            M::AppendResponse(raft::AppendResponse::Accepted { index: a.index })
        }
        Body::AppendRejected(r) => M::AppendResponse(raft::AppendResponse::Rejected {
            rejected_index: r.rejected_index,
            hint_index: r.hint_index,
            hint_term: r.hint_term,
        }),
        Body::Heartbeat(h) => M::Heartbeat(raft::Heartbeat {
            commit: h.commit,
            read_round: h.read_round,
        }),
        Body::HeartbeatResponse(h) => M::HeartbeatResponse(raft::HeartbeatResponse {
            read_round: h.read_round,
        }),
        Body::Vote(v) => M::Vote(raft::VoteRequest {
            pre_vote: v.pre_vote,
            last: id_from_pb(v.last)?,
            transfer: v.transfer,
        }),
        Body::VoteResponse(v) => M::VoteResponse(raft::VoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
        }),
        Body::Snapshot(c) => {
            let meta = c
                .meta
                .ok_or(DecodeError("snapshot chunk without metadata"))?;
            M::Snapshot(raft::SnapshotChunk {
                meta: raft::SnapshotMeta {
                    last: id_from_pb(meta.last)?,
                    conf_state: conf_from_pb(meta.conf_state),
                    size: meta.size,
                },
                offset: c.offset,
                data: c.data,
            })
        }
        Body::SnapshotResponse(r) => M::SnapshotResponse {
            index: r.index,
            next_offset: r.next_offset,
            rejected: r.rejected,
        },
        Body::TimeoutNow(_) => M::TimeoutNow,
        Body::ReadIndex(r) => M::ReadIndex { request: r.request },
        Body::ReadIndexResponse(r) => M::ReadIndexResponse {
            request: r.request,
            index: r.index,
        },
    };
    Ok(raft::Message {
        from: m.from,
        to: m.to,
        term: m.term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft::MessageBody as M;

    fn m(body: M) -> raft::Message {
        raft::Message {
            from: 1,
            to: 2,
            term: 3,
            body,
        }
    }

    #[test]
    fn every_message_kind_round_trips() {
        let meta = raft::SnapshotMeta {
            last: raft::EntryId { term: 2, index: 9 },
            conf_state: raft::ConfState::with_voters(&[1, 2, 3]),
            size: 4,
        };
        let all = vec![
            m(M::Append(raft::Append {
                prev_index: 4,
                prev_term: 2,
                entries: vec![raft::Entry::normal(3, 5, Bytes::from_static(b"x"))],
                commit: 4,
            })),
            m(M::AppendResponse(raft::AppendResponse::Accepted {
                index: 5,
            })),
            m(M::AppendResponse(raft::AppendResponse::Rejected {
                rejected_index: 5,
                hint_index: 3,
                hint_term: 1,
            })),
            m(M::Heartbeat(raft::Heartbeat {
                commit: 4,
                read_round: 7,
            })),
            m(M::HeartbeatResponse(raft::HeartbeatResponse {
                read_round: 7,
            })),
            m(M::Vote(raft::VoteRequest {
                pre_vote: true,
                last: raft::EntryId { term: 2, index: 4 },
                transfer: true,
            })),
            m(M::VoteResponse(raft::VoteResponse {
                pre_vote: false,
                granted: true,
            })),
            m(M::Snapshot(raft::SnapshotChunk {
                meta,
                offset: 0,
                data: Bytes::from_static(b"abcd"),
            })),
            m(M::SnapshotResponse {
                index: 9,
                next_offset: 4,
                rejected: false,
            }),
            m(M::TimeoutNow),
            m(M::ReadIndex { request: 11 }),
            m(M::ReadIndexResponse {
                request: 11,
                index: 8,
            }),
        ];
        for msg in all {
            assert_eq!(from_pb(to_pb(&msg)).unwrap(), msg);
        }
    }

    #[test]
    fn missing_parts_are_errors() {
        assert!(from_pb(pb::Message {
            from: 1,
            to: 2,
            term: 1,
            body: None
        })
        .is_err());
        let vote = pb::Message {
            from: 1,
            to: 2,
            term: 1,
            body: Some(pb::message::Body::Vote(pb::VoteRequest {
                pre_vote: false,
                last: None,
                transfer: false,
            })),
        };
        assert!(from_pb(vote).is_err());
        let entry = pb::Entry {
            term: 1,
            index: 1,
            kind: 9,
            data: Bytes::new(),
        };
        let append = pb::Message {
            from: 1,
            to: 2,
            term: 1,
            body: Some(pb::message::Body::Append(pb::Append {
                prev_index: 0,
                prev_term: 0,
                entries: vec![entry],
                commit: 0,
            })),
        };
        assert_eq!(from_pb(append), Err(DecodeError("unknown entry kind")));
    }
}
