//! Log replication (§5.3), the commit index, flow control and batching.

use super::*;

// ----- §5.3 log replication ------------------------------------------------------

/// §5.3: "If the follower does not find an entry in its log with the same
/// index and term, then it refuses the new entries." Once it does, it deletes
/// a conflicting suffix and appends (Figure 2, receiver rules 2–4). A refusal
/// hints at the last entry that can match.
#[test]
fn append_is_refused_unless_the_follower_holds_the_previous_entry() {
    let logs = [(3, &[1, 1, 2][..]), (3, &[]), (3, &[])];
    let mut net = Network::with_logs(&logs, |_| {});
    let send = |net: &mut Network, prev, terms: &[Term]| {
        net.step(msg(2, 1, 3, append(prev, terms, 0))).unwrap();
        append_answer(&net.ready(1))
    };
    let refused_at = |rejected_index| Rejected {
        rejected_index,
        hint_index: 3,
        hint_term: 2,
    };
    assert_eq!(
        send(&mut net, (3, 3), &[3]),
        refused_at(3),
        "entry 3 has term 2"
    );
    assert_eq!(
        send(&mut net, (5, 3), &[3]),
        refused_at(5),
        "there is no entry 5"
    );
    assert_eq!(net.log(1), [1, 1, 2], "refusals change nothing");
    assert_eq!(send(&mut net, (2, 1), &[3, 3]), Accepted { index: 4 });
    assert_eq!(
        net.log(1),
        [1, 1, 3, 3],
        "the conflicting entry 3 was replaced"
    );
}

/// §5.3, Figure 7: whatever a follower's log looks like — missing entries
/// (a, b), extra uncommitted entries (c, d), or both (e, f) — once the leader
/// of term 8 is elected, replication makes it equal to the leader's.
///
/// Fast backtracking (the follower's hint names the last index whose term is
/// at most the refused prev_term, and the leader skips its own entries of
/// terms the follower lacks) needs at most one refusal per follower here;
/// stepping back one entry per round trip would take seven for (f).
#[test]
fn figure_7_every_follower_log_converges_to_the_leaders() {
    const LEADER: &[Term] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[Term], usize); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6], 1),
        ("b", &[1, 1, 1, 4], 1),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0),
        ("e", &[1, 1, 1, 4, 4, 4, 4], 1),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 1),
    ];
    let logs: Vec<(Term, &[Term])> = std::iter::once((7, LEADER))
        .chain(followers.iter().map(|f| (7, f.1)))
        .collect();
    let mut net = Network::with_logs(&logs, |_| {});
    net.elect(1); // with votes from a, b, e and f: c and d are more up to date
    assert_eq!(net.term(1), 8);

    let expected = [LEADER, &[8]].concat();
    assert_eq!(net.log(1), expected);
    assert_eq!(net.commit(1), 11);
    for (id, (name, _, refusals)) in (2..).zip(followers) {
        assert_eq!(net.log(id), expected, "follower ({name})");
        assert_eq!(net.commit(id), 11, "follower ({name})");
        let sent = net.sent.iter().filter(|m| {
            m.from == id && matches!(m.body, MessageBody::AppendResponse(Rejected { .. }))
        });
        assert_eq!(sent.count(), refusals, "refusals from follower ({name})");
    }
}

/// Figure 8 at (c): S1, leader of term 4, has its term-2 entry on a majority
/// (S1, S2, S3) while its term-4 entry reaches no one. S4 and S5 are down.
fn figure_8() -> Network {
    let logs = [
        (3, &[1, 2][..]), // S1 led term 2 and reached S2 only
        (3, &[1, 2]),
        (3, &[1]),
        (3, &[1]),
        (3, &[1, 3]), // S5 led term 3 and reached no one
    ];
    let mut net = Network::with_logs(&logs, |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.isolate(4);
    net.isolate(5);
    // Appends carry nothing past index 2.
    net.filter = Some(Box::new(|m| {
        if let MessageBody::Append(a) = &mut m.body {
            a.entries.retain(|e| e.index <= 2);
        }
        true
    }));
    net.elect(1);
    assert_eq!(net.term(1), 4);
    assert_eq!(net.log(1), [1, 2, 4]);
    for id in [2, 3] {
        assert_eq!(net.log(id), [1, 2]);
    }
    let matched = [1, 2, 3].map(|id| net.raft(1).progress[&id].matched);
    assert_eq!(matched, [3, 2, 2], "index 2 is on a majority");
    net
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by
/// counting replicas." At (c) the term-2 entry is on a majority, yet S1 does
/// not commit it — rightly, since at (d) S5 is elected with votes from S2, S3
/// and S4 and overwrites it.
#[test]
fn figure_8_leader_never_commits_an_old_term_entry_by_counting_replicas() {
    let mut net = figure_8();
    assert_eq!(net.commit(1), 0);
    for id in [2, 3] {
        assert_eq!(net.commit(id), 0);
    }

    // (d): S1 crashes; S4 and S5 come back.
    net.heal();
    net.isolate(1);
    net.campaign(5);
    assert_eq!(
        net.role(5),
        Role::Candidate,
        "term 4: S2 and S3 already voted for S1"
    );
    net.campaign(5);
    assert_eq!((net.role(5), net.term(5)), (Role::Leader, 5));
    for id in [2, 3, 4, 5] {
        assert_eq!(net.log(id), [1, 3, 5], "S{id}: the term-2 entry is gone");
    }
    assert_eq!(net.commit(5), 3);
}

/// §5.4.2, Figure 8 (e): once S1 replicates an entry of its own term to a
/// majority, that entry commits, and with it the term-2 entry before it. S5
/// can then no longer be elected.
#[test]
fn figure_8_old_entry_commits_once_an_entry_of_the_current_term_reaches_a_majority() {
    let mut net = figure_8();
    net.filter = None;
    net.tick(&[1], 1); // a heartbeat round: S2 and S3 answer, S1 resends what they lack
    for id in [1, 2, 3] {
        assert_eq!(net.log(id), [1, 2, 4]);
        assert_eq!(net.commit(id), 3, "S{id}");
    }

    net.heal();
    net.isolate(1);
    net.campaign(5); // term 4
    net.campaign(5); // term 5: S2 and S3 hold a more up-to-date log
    assert_eq!(net.role(5), Role::Candidate);
    for id in [2, 3] {
        assert_eq!(net.log(id), [1, 2, 4]);
    }
}

// ----- commit index ---------------------------------------------------------------

/// §5.3: an entry is committed once "the leader ... has replicated it on a
/// majority of the servers" — of durable logs: the leader's own copy counts
/// only once the caller has persisted it and called advance().
#[test]
fn leader_counts_its_own_entry_towards_commit_only_after_persisting_it() {
    let mut net = stable_cluster(|_| {});
    let before = net.commit(1);
    let id = net.propose(1, 8).unwrap();
    let rd = net.raw(1).ready();
    // The appends may leave before the leader's own write completes.
    for m in rd.messages.iter().filter(|m| m.to == 2) {
        net.step(m.clone()).unwrap();
    }
    for ack in net.ready(2).persisted_messages {
        net.step(ack).unwrap();
    }
    assert_eq!(net.raft(1).progress[&2].matched, id.index);
    assert_eq!(
        net.commit(1),
        before,
        "one follower of three is no majority while the leader's write is pending"
    );
    net.persist(1, &rd);
    net.raw(1).advance();
    assert_eq!(net.commit(1), id.index);
}

/// §5.3: "The leader keeps track of the highest index it knows to be
/// committed, and it includes that index in future AppendEntries RPCs
/// (including heartbeats) so that the other servers eventually find out."
#[test]
fn followers_learn_the_commit_index_from_appends_and_heartbeats() {
    let mut net = stable_cluster(|_| {});
    // Node 3 receives the entry but not the empty append announcing its commit.
    net.filter = Some(Box::new(|m| {
        !(m.to == 3 && matches!(&m.body, MessageBody::Append(a) if a.entries.is_empty()))
    }));
    let id = net.propose(1, 8).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    assert_eq!(net.commit(2), id.index, "learned from an append");
    assert_eq!(net.log(3).len() as u64, id.index);
    assert!(net.commit(3) < id.index);
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.commit(3), id.index, "learned from a heartbeat");
}

/// Followers never commit beyond what they hold: a heartbeat announces at
/// most the index the follower acknowledged, and an append's commit index
/// counts only up to the last entry that append verified (Figure 2:
/// "min(leaderCommit, index of last new entry)").
#[test]
fn followers_never_commit_beyond_what_they_are_known_to_hold() {
    let mut net = stable_cluster(|_| {});
    net.isolate(3);
    let id = net.propose(1, 8).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    let acked = net.raft(1).progress[&3].matched;
    assert!(acked < id.index);
    net.heal();
    net.raw(1).tick();
    net.process(1);
    let to_3: Vec<&MessageBody> = net
        .queue
        .iter()
        .filter(|m| m.to == 3)
        .map(|m| &m.body)
        .collect();
    assert_eq!(to_3, [&heartbeat(acked)]);
    net.stabilize();
    assert_eq!(net.commit(3), id.index);

    // Node 1 holds three entries of term 1; the leader's append verifies only the first.
    let logs = [(1, &[1, 1, 1][..]), (1, &[1]), (1, &[])];
    let mut net = Network::with_logs(&logs, |_| {});
    net.step(msg(2, 1, 1, append((1, 1), &[], 3))).unwrap();
    assert_eq!(append_answer(&net.ready(1)), Accepted { index: 1 });
    assert_eq!(net.commit(1), 1);
}

// ----- flow control -----------------------------------------------------------------

/// Flow control, probe state: while the leader does not know where a
/// follower's log matches, it sends one append and waits for its answer (or a
/// heartbeat answer) before sending another.
#[test]
fn probe_state_sends_one_append_per_round_trip() {
    let mut net = Network::new(3);
    net.isolate(2);
    net.elect(1);
    let appends_to_2 = |net: &Network| {
        let appends = net.sent.iter().filter(|m| m.to == 2);
        appends
            .filter(|m| matches!(m.body, MessageBody::Append(_)))
            .count()
    };
    assert_eq!(net.raft(1).progress[&2].state, ProgressState::Probe);
    assert_eq!(appends_to_2(&net), 1, "the first probe, lost");
    for _ in 0..3 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert_eq!(
        appends_to_2(&net),
        1,
        "nothing while the probe is unanswered"
    );
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(
        appends_to_2(&net),
        2,
        "the heartbeat answer allows one more"
    );
    assert_eq!(net.raft(1).progress[&2].state, ProgressState::Replicate);
    assert_eq!(net.log(2), net.log(1));
}

/// Flow control, replicate state: once logs match, the leader streams appends
/// without waiting for answers, up to max_inflight_msgs unacknowledged ones.
#[test]
fn replicate_state_pipelines_up_to_max_inflight_msgs() {
    let mut net = stable_cluster(|c| c.max_inflight_msgs = 3);
    net.cut.insert((2, 1)); // node 2's acknowledgements are lost
    for _ in 0..5 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert_eq!(net.entry_appends_to(2), [1, 1, 1]);
    assert_eq!(net.entry_appends_to(3), [1; 5]);
    assert_eq!(net.raft(1).progress[&2].inflights.count(), 3);
}

/// Flow control, replicate state: the window is also bounded in bytes.
#[test]
fn replicate_state_stops_at_max_inflight_bytes() {
    let entry = 100 + ENTRY_OVERHEAD_BYTES;
    let mut net = stable_cluster(|c| c.max_inflight_bytes = 2 * entry);
    net.cut.insert((2, 1));
    for _ in 0..5 {
        net.propose(1, 100).unwrap();
        net.stabilize();
    }
    assert_eq!(net.entry_appends_to(2), [1, 1]);
    assert_eq!(net.entry_appends_to(3), [1; 5]);
}

/// max_size_per_msg bounds the entries of one append; a backlog leaves as
/// several appends (pipelined, in replicate state).
#[test]
fn max_size_per_msg_bounds_the_entries_of_one_append() {
    let entry = 10 + ENTRY_OVERHEAD_BYTES;
    let mut net = stable_cluster(|c| c.max_size_per_msg = 3 * entry);
    for _ in 0..10 {
        net.propose(1, 10).unwrap();
    }
    net.stabilize();
    for id in [2, 3] {
        assert_eq!(net.entry_appends_to(id), [3, 3, 3, 1]);
        assert_eq!(net.log(id), net.log(1));
    }
}

/// A full window whose acknowledgements were lost would stall the follower
/// for good; a heartbeat answer proves the follower alive and frees a slot.
#[test]
fn heartbeat_response_unblocks_a_full_window() {
    let mut net = stable_cluster(|c| c.max_inflight_msgs = 2);
    net.cut.insert((2, 1));
    for _ in 0..3 {
        net.propose(1, 8).unwrap();
        net.stabilize();
    }
    assert!(net.raft(1).progress[&2].inflights.full());
    assert_eq!(net.log(2).len() + 1, net.log(1).len(), "the third waits");
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.log(2), net.log(1));
}

/// The leader's cap on uncommitted payload bytes refuses proposals beyond it
/// (instead of growing its log without bound while it cannot commit), and
/// accepts again once entries commit.
#[test]
fn uncommitted_size_cap_refuses_proposals_until_entries_commit() {
    let mut net = stable_cluster(|c| c.max_uncommitted_size = 100);
    net.isolate(2);
    net.isolate(3);
    let first = net.propose(1, 60).unwrap();
    net.stabilize();
    let refused = ProposeError::UncommittedSizeExceeded {
        pending: 60,
        limit: 100,
    };
    assert_eq!(net.propose(1, 60), Err(refused));
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.commit(1), first.index);
    assert!(net.propose(1, 60).is_ok());
}

// ----- batching and proposals --------------------------------------------------------

/// Batching: proposals made between two Readys leave as one append per
/// follower, not one per proposal.
#[test]
fn proposals_between_two_readys_leave_as_one_append_per_peer() {
    let mut net = stable_cluster(|_| {});
    for _ in 0..100 {
        net.propose(1, 8).unwrap();
    }
    let rd = net.ready(1);
    assert_eq!(rd.entries.len(), 100);
    let appends: Vec<(NodeId, usize)> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append(a) => Some((m.to, a.entries.len())),
            _ => None,
        })
        .collect();
    assert_eq!(appends, [(2, 100), (3, 100)]);
}

/// §8: only the leader takes client commands; the others refuse and name the
/// leader they know, if any.
#[test]
fn proposals_on_a_non_leader_are_refused_naming_the_leader() {
    let mut net = Network::new(3);
    net.elect(1);
    let not_leader = |leader| Err(ProposeError::NotLeader { leader });
    assert_eq!(net.propose(2, 1), not_leader(Some(1)));
    let mut net = in_role(Role::Candidate, |_| {});
    assert_eq!(net.propose(1, 1), not_leader(None));
}
