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

fn refusal_to_pb(e: &raft::ProposeError) -> pb::ProposeRefusal {
    use pb::propose_refusal::Kind;
    use raft::ProposeError as E;
    let mut pb = pb::ProposeRefusal::default();
    let kind = match e {
        E::NotLeader { leader } => {
            pb.node = leader.unwrap_or(0);
            Kind::NotLeader
        }
        E::TransferInProgress { to } => {
            pb.node = *to;
            Kind::TransferInProgress
        }
        E::ConfChangeInProgress { index } => {
            pb.index = *index;
            Kind::ConfChangeInProgress
        }
        E::NewLeader { index } => {
            pb.index = *index;
            Kind::NewLeader
        }
        E::InvalidConfChange(c) => {
            pb.conf_change_error = match c {
                raft::ConfChangeError::Empty => 0,
                raft::ConfChangeError::ZeroId => 1,
                raft::ConfChangeError::AlreadyJoint => 2,
                raft::ConfChangeError::NotJoint => 3,
                raft::ConfChangeError::NoVoters => 4,
                raft::ConfChangeError::Malformed(_) => 5,
            };
            Kind::InvalidConfChange
        }
        E::NotCaughtUp { id, matched, last } => {
            (pb.node, pb.matched, pb.last) = (*id, *matched, *last);
            Kind::NotCaughtUp
        }
        E::UncommittedSizeExceeded { pending, limit } => {
            (pb.pending, pb.limit) = (*pending, *limit);
            Kind::UncommittedSizeExceeded
        }
        E::NoActiveQuorum => Kind::NoActiveQuorum,
    };
    pb.kind = kind as i32;
    pb
}

fn refusal_from_pb(r: pb::ProposeRefusal) -> Result<raft::ProposeError, DecodeError> {
    use pb::propose_refusal::Kind;
    use raft::ProposeError as E;
    let kind = Kind::try_from(r.kind).map_err(|_| DecodeError("unknown refusal kind"))?;
    Ok(match kind {
        Kind::NotLeader => E::NotLeader {
            leader: (r.node != 0).then_some(r.node),
        },
        Kind::TransferInProgress => E::TransferInProgress { to: r.node },
        Kind::ConfChangeInProgress => E::ConfChangeInProgress { index: r.index },
        Kind::NewLeader => E::NewLeader { index: r.index },
        Kind::InvalidConfChange => E::InvalidConfChange(match r.conf_change_error {
            0 => raft::ConfChangeError::Empty,
            1 => raft::ConfChangeError::ZeroId,
            2 => raft::ConfChangeError::AlreadyJoint,
            3 => raft::ConfChangeError::NotJoint,
            4 => raft::ConfChangeError::NoVoters,
            5 => raft::ConfChangeError::Malformed("refused by the leader"),
            _ => return Err(DecodeError("unknown membership change error")),
        }),
        Kind::NotCaughtUp => E::NotCaughtUp {
            id: r.node,
            matched: r.matched,
            last: r.last,
        },
        Kind::UncommittedSizeExceeded => E::UncommittedSizeExceeded {
            pending: r.pending,
            limit: r.limit,
        },
        Kind::NoActiveQuorum => E::NoActiveQuorum,
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
        M::Propose { request, data } => Body::Propose(pb::Propose {
            request: *request,
            data: data.clone(),
        }),
        M::ProposeResponse { request, result } => {
            use pb::propose_response::Result as R;
            let result = match result {
                Ok(id) => R::Appended(id_to_pb(*id)),
                Err(e) => R::Refused(refusal_to_pb(e)),
            };
            Body::ProposeResponse(pb::ProposeResponse {
                request: *request,
                result: Some(result),
            })
        }
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
        Body::Propose(p) => M::Propose {
            request: p.request,
            data: p.data,
        },
        Body::ProposeResponse(r) => {
            use pb::propose_response::Result as R;
            let result = match r.result.ok_or(DecodeError("missing proposal result"))? {
                R::Appended(id) => Ok(id_from_pb(Some(id))?),
                R::Refused(refusal) => Err(refusal_from_pb(refusal)?),
            };
            M::ProposeResponse {
                request: r.request,
                result,
            }
        }
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
            m(M::Propose {
                request: 12,
                data: Bytes::from_static(b"cmd"),
            }),
            m(M::ProposeResponse {
                request: 12,
                result: Ok(raft::EntryId { term: 3, index: 9 }),
            }),
        ];
        use raft::ProposeError as E;
        let refusals = [
            E::NotLeader { leader: None },
            E::NotLeader { leader: Some(4) },
            E::TransferInProgress { to: 2 },
            E::ConfChangeInProgress { index: 5 },
            E::NewLeader { index: 6 },
            E::InvalidConfChange(raft::ConfChangeError::NoVoters),
            E::NotCaughtUp {
                id: 4,
                matched: 1,
                last: 9,
            },
            E::UncommittedSizeExceeded {
                pending: 10,
                limit: 8,
            },
            E::NoActiveQuorum,
        ];
        let all = all.into_iter().chain(refusals.into_iter().map(|e| {
            m(M::ProposeResponse {
                request: 13,
                result: Err(e),
            })
        }));
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
        let answer = |result| pb::Message {
            from: 1,
            to: 2,
            term: 1,
            body: Some(pb::message::Body::ProposeResponse(pb::ProposeResponse {
                request: 1,
                result,
            })),
        };
        assert!(from_pb(answer(None)).is_err());
        let nonsense = pb::ProposeRefusal {
            kind: 99,
            ..Default::default()
        };
        let refused = pb::propose_response::Result::Refused(nonsense);
        assert_eq!(
            from_pb(answer(Some(refused))),
            Err(DecodeError("unknown refusal kind"))
        );
    }
}
