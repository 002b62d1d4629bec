//! Snapshots (Raft §7, thesis §5): InstallSnapshot in chunks, restoring, and
//! transfers that are interrupted, stale or unnecessary.

use super::*;

/// The data of the snapshot the tests send: ten bytes, three chunks of at
/// most four bytes.
const DATA: &[u8] = b"0123456789";
const MAX_MSG: u64 = 4;

/// A three-node cluster led by node 1 (messages of at most [`MAX_MSG`]
/// bytes) in which node 3 missed everything after index 1, learner 4 (not
/// running) was added, and node 1 then compacted its log through index 6
/// into a snapshot holding `DATA`. Node 3 is reachable again.
fn behind_a_snapshot(tweak: impl Fn(&mut Config)) -> (Network, SnapshotMeta) {
    let mut net = Network::with_config(3, |c| {
        c.max_size_per_msg = MAX_MSG;
        tweak(c);
    });
    net.elect(1);
    net.isolate(3);
    net.raw(1)
        .propose_conf_change(ConfChange::add_learner(4))
        .unwrap();
    net.fill_to(1, 6);
    assert_eq!(net.commit(1), 6);
    let meta = net.compact(1, DATA);
    assert_eq!(meta.last, EntryId { term: 1, index: 6 });
    assert_eq!(meta.conf_state.learners, [4], "the snapshot's membership");
    assert_eq!(net.commit(3), 1);
    assert!(net.conf(3).learners.is_empty());
    net.heal();
    net.sent.clear();
    (net, meta)
}

/// Node 3 holds exactly `meta` and `data`, restored: its log starts right
/// after the snapshot, it committed and applied through it, and its
/// membership (in the core, in the Ready and on disk) is the snapshot's.
fn assert_restored(net: &Network, meta: &SnapshotMeta, data: &[u8]) {
    let node = &net.nodes[&3];
    assert_eq!(
        node.installed,
        [(meta.clone(), Bytes::copy_from_slice(data))],
        "installed once, with the leader's data"
    );
    assert_eq!(node.storage.first_index(), Ok(meta.last.index + 1));
    assert!(
        node.raw.log_term(meta.last.index - 1).is_err(),
        "no log before it"
    );
    assert!(net.commit(3) >= meta.last.index);
    assert!(node.raw.status().applied >= meta.last.index);
    assert!(
        node.applied
            .iter()
            .all(|e| e.index == 1 || e.index > meta.last.index),
        "the entries the snapshot covers are never applied one by one"
    );
    assert_eq!(
        node.conf_states.first(),
        Some(&meta.conf_state),
        "the Ready reports the snapshot's membership"
    );
    assert_eq!(net.conf(3), meta.conf_state);
    assert_eq!(
        node.storage.initial_state().unwrap().conf_state,
        meta.conf_state
    );
}

/// Replication goes on normally after a snapshot: a new entry reaches node 3
/// by append, commits and is applied there, and no snapshot is sent again.
fn assert_replicates_after(net: &mut Network, leader: NodeId) {
    let chunks = net.chunks_to(3).len();
    let id = net.propose(leader, 3).unwrap();
    net.stabilize();
    assert_eq!(net.commit(3), id.index);
    assert_eq!(net.nodes[&3].applied.last().map(Entry::id), Some(id));
    assert_eq!(
        net.raft(leader).progress[&3].state,
        ProgressState::Replicate
    );
    assert_eq!(net.chunks_to(3).len(), chunks, "no second transfer");
}

/// §7 / thesis §5.1: a follower that needs entries the leader has compacted
/// receives the snapshot (InstallSnapshot), here in chunks of at most
/// max_size_per_msg bytes, in order; then it restores: the log starts after
/// the snapshot, the commit index is the snapshot's, the membership is the
/// snapshot's. The leader then replicates to it normally.
#[test]
fn a_follower_behind_the_compacted_log_gets_the_snapshot_in_chunks_and_restores() {
    let (mut net, meta) = behind_a_snapshot(|_| {});
    net.tick(&[1], 1);
    assert_eq!(net.chunks_to(3), [(6, 0, 4), (6, 4, 4), (6, 8, 2)]);
    assert!(net
        .sent
        .iter()
        .all(|m| !matches!(&m.body, MessageBody::Snapshot(c) if c.data.len() as u64 > MAX_MSG)));
    assert_restored(&net, &meta, DATA);
    assert_eq!(net.commit(3), 6);
    assert_eq!(net.raw(3).status().last, meta.last);
    let pr = &net.raft(1).progress[&3];
    assert_eq!((pr.state, pr.matched), (ProgressState::Replicate, 6));
    assert_replicates_after(&mut net, 1);
}

/// §7 with chunks: a lost chunk (in the middle, or the last one) does not
/// break the transfer: the follower takes chunks only in order and says which
/// offset it expects, or the leader resends from the last acknowledged offset
/// when the transfer stalls; the snapshot is installed once, intact.
#[test]
fn a_lost_chunk_is_sent_again_from_where_the_follower_stopped() {
    for (lost, ticks, resent) in [(4, 1, vec![4, 8]), (8, 2, vec![8])] {
        let (mut net, meta) = behind_a_snapshot(|_| {});
        let mut dropped = false;
        net.filter = Some(Box::new(move |m| match &m.body {
            MessageBody::Snapshot(c) if c.offset == lost && !dropped => {
                dropped = true;
                false
            }
            _ => true,
        }));
        net.tick(&[1], ticks);
        let offsets: Vec<u64> = net.chunks_to(3).iter().map(|c| c.1).collect();
        let expected: Vec<u64> = [0, 4, 8].into_iter().chain(resent).collect();
        assert_eq!(offsets, expected, "chunk at {lost} lost");
        assert_restored(&net, &meta, DATA);
        assert_replicates_after(&mut net, 1);
    }
}

/// §7 with chunks: a follower that crashes halfway through a transfer has
/// lost what it received; it refuses the next chunk, asking for offset 0, and
/// the leader starts over.
#[test]
fn a_follower_restarted_mid_transfer_gets_the_snapshot_from_the_start() {
    let (mut net, meta) = behind_a_snapshot(|_| {});
    net.filter = Some(Box::new(
        |m| !matches!(&m.body, MessageBody::Snapshot(c) if c.offset > 0),
    ));
    net.tick(&[1], 1);
    assert_eq!(net.nodes[&3].staging, &DATA[..4], "first chunk written");
    net.restart(3);
    net.heal();
    net.tick(&[1], 1);
    let offsets: Vec<u64> = net.chunks_to(3).iter().map(|c| c.1).collect();
    assert_eq!(offsets, [0, 4, 8, 4, 8, 0, 4, 8]);
    assert_restored(&net, &meta, DATA);
    assert_replicates_after(&mut net, 1);
}

/// §7 with chunks: when the leader changes mid-transfer, the new leader sends
/// its own snapshot from offset 0, and the follower drops the half-received
/// one and installs the new leader's.
#[test]
fn a_new_leader_mid_transfer_sends_its_own_snapshot_from_the_start() {
    let (mut net, _) = behind_a_snapshot(|_| {});
    net.filter = Some(Box::new(
        |m| !matches!(&m.body, MessageBody::Snapshot(c) if c.offset > 0),
    ));
    net.tick(&[1], 1);
    assert_eq!(net.chunks_to(3), [(6, 0, 4), (6, 4, 4), (6, 8, 2)]);
    assert_eq!(net.nodes[&3].staging.len(), 4, "a transfer half done");
    // Node 2 snapshots the same state differently (another encoding).
    let data2 = b"abcdefghijklmnopq";
    let meta2 = net.compact(2, data2);
    net.heal();
    net.isolate(1);
    // Node 3 stops hearing from node 1 and lets its leader lease run out.
    net.tick(&[3], election_tick());
    net.sent.clear();
    net.elect(2);
    let from_2: Vec<(Index, u64, usize)> = net.chunks_to(3);
    assert_eq!(
        from_2,
        [(6, 0, 4), (6, 4, 4), (6, 8, 4), (6, 12, 4), (6, 16, 1)]
    );
    assert_restored(&net, &meta2, data2);
    assert_replicates_after(&mut net, 2);
}

/// §7 receiver rule 6 ("If existing log entry has same index and term as
/// snapshot's last included entry, retain log entries following it and
/// reply"): a follower that already holds the snapshot's last entry takes no
/// data, keeps its log, commits through it and acknowledges it, and the
/// leader, told so, stops the transfer and replicates.
#[test]
fn a_snapshot_whose_last_entry_the_follower_holds_is_acknowledged_without_data() {
    let mut net = Network::with_logs(&[(1, &[1, 1, 1, 1, 1][..]); 3], |_| {});
    let chunk = SnapshotChunk {
        meta: SnapshotMeta {
            last: EntryId { term: 1, index: 4 },
            conf_state: ConfState::with_voters(&[1, 2, 3]),
            size: 100,
        },
        offset: 0,
        data: Bytes::from_static(&[1; 10]),
    };
    net.step(msg(2, 1, 1, MessageBody::Snapshot(chunk)))
        .unwrap();
    let rd = net.ready(1);
    assert!(rd.snapshot_chunks.is_empty(), "no data written");
    assert!(rd.snapshot.is_none(), "nothing installed");
    assert_eq!(append_answer(&rd), Accepted { index: 4 });
    assert_eq!(rd.hard_state.map(|hs| hs.commit), Some(4));
    assert_eq!(net.log(1), [1, 1, 1, 1, 1], "entry 5 is kept");

    // The leader's side: an acknowledgement covering the snapshot ends the
    // transfer after its first chunk.
    let (mut net, _) = behind_a_snapshot(|_| {});
    net.filter = Some(Box::new(|m| match &m.body {
        MessageBody::Snapshot(c) => c.offset == 0,
        MessageBody::SnapshotResponse { .. } => false,
        _ => true,
    }));
    net.tick(&[1], 1);
    assert_eq!(net.raft(1).progress[&3].state, ProgressState::Snapshot);
    net.heal();
    net.sent.clear();
    let term = net.term(1);
    net.step(msg(
        3,
        1,
        term,
        MessageBody::AppendResponse(Accepted { index: 6 }),
    ))
    .unwrap();
    net.process(1);
    let pr = &net.raft(1).progress[&3];
    assert_eq!(
        (pr.state, pr.matched, pr.next),
        (ProgressState::Replicate, 6, 7)
    );
    assert!(net.chunks_to(3).is_empty(), "no more chunks");
}

/// §7 receiver rules: a snapshot that covers nothing new — its last index is
/// at or below the follower's commit index (a delayed or duplicated chunk) —
/// is answered with the follower's commit index, and nothing is restored.
#[test]
fn a_stale_snapshot_is_answered_without_restoring() {
    let mut net = stable_cluster(|_| {});
    net.fill_to(1, 4);
    assert_eq!(net.commit(2), 4);
    let before = net.log(2);
    for (index, offset) in [(3, 0), (3, 4), (4, 0), (4, 4)] {
        let chunk = SnapshotChunk {
            meta: SnapshotMeta {
                last: EntryId { term: 1, index },
                conf_state: ConfState::with_voters(&[1, 2, 3]),
                size: 10,
            },
            offset,
            data: Bytes::from_static(b"abcd"),
        };
        net.step(msg(1, 2, 1, MessageBody::Snapshot(chunk)))
            .unwrap();
        let rd = net.ready(2);
        assert!(rd.snapshot_chunks.is_empty() && rd.snapshot.is_none());
        assert_eq!(
            append_answer(&rd),
            Accepted { index: 4 },
            "snapshot at {index}, chunk at {offset}"
        );
        assert_eq!((net.log(2), net.commit(2)), (before.clone(), 4));
    }
    assert!(net.nodes[&2].installed.is_empty());
}

/// Never trust input: a chunk whose data runs past the snapshot's declared
/// size (or whose end overflows) is refused with InvalidMessage, and changes
/// nothing — not even the term, when it claims a newer one.
#[test]
fn a_chunk_running_past_the_snapshot_size_is_refused() {
    let mut net = stable_cluster(|_| {});
    let chunk = |offset, len| {
        MessageBody::Snapshot(SnapshotChunk {
            meta: SnapshotMeta {
                last: EntryId { term: 1, index: 9 },
                conf_state: ConfState::with_voters(&[1, 2, 3]),
                size: 10,
            },
            offset,
            data: Bytes::from(vec![0; len]),
        })
    };
    for (term, offset, len) in [(1, 8, 3), (1, 0, 11), (1, u64::MAX, 1), (5, 8, 3)] {
        let before = net.snapshot(2);
        let got = net.step(msg(1, 2, term, chunk(offset, len)));
        assert!(
            matches!(got, Err(StepError::InvalidMessage { .. })),
            "term {term}, offset {offset}, {len} bytes: {got:?}"
        );
        assert_eq!(net.snapshot(2), before);
        assert!(!net.raw(2).has_ready());
    }
}

/// §7 with snapshots taken while one is being sent: when storage replaces
/// the snapshot under transfer with a newer one, reading the next chunk
/// fails with SnapshotOutOfDate, and the leader starts over with the newer
/// snapshot from offset 0; the follower installs only that one.
#[test]
fn a_snapshot_replaced_mid_transfer_is_restarted_with_the_newer_one() {
    // One chunk in flight at a time, so that the transfer pauses after one.
    let (mut net, old) = behind_a_snapshot(|c| c.max_inflight_msgs = 1);
    let mut held = false;
    net.filter = Some(Box::new(move |m| {
        let answer = matches!(m.body, MessageBody::SnapshotResponse { .. });
        let drop = answer && !held;
        held |= answer;
        !drop
    }));
    net.tick(&[1], 1);
    assert_eq!(net.chunks_to(3), [(6, 0, 4)], "paused after one chunk");
    net.fill_to(1, 8);
    let data2 = b"newer snapshot";
    let newer = net.compact(1, data2);
    assert_eq!(newer.last.index, 8);
    assert_eq!(
        net.nodes[&1].storage.snapshot_chunk(&old, 4, MAX_MSG),
        Err(crate::error::StorageError::SnapshotOutOfDate(6))
    );
    net.heal();
    net.tick(&[1], 1);
    net.stabilize();
    let chunks = net.chunks_to(3);
    assert_eq!(chunks[0], (6, 0, 4));
    assert_eq!(
        chunks[1..],
        [(8, 0, 4), (8, 4, 4), (8, 8, 4), (8, 12, 2)],
        "the newer snapshot, from the start"
    );
    assert_restored(&net, &newer, data2);
    assert_replicates_after(&mut net, 1);
}
