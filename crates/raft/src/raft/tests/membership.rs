//! Membership: learners (thesis §4.2.1, non-voting members), single-voter
//! changes (thesis §4.1) and joint consensus (thesis §4.3).

use super::*;

use ConfChangeOp::{AddVoter, Remove};

/// Voters 1, 2, 3 led by node 1, and the given nodes (running, started from
/// the bootstrap membership) added one by one as learners and caught up.
fn with_learners(learners: &[NodeId], tweak: impl Fn(&mut Config)) -> Network {
    let mut net = Network::with_config(3, &tweak);
    for &id in learners {
        net.add_node(id, &[1, 2, 3], &tweak);
    }
    net.elect(1);
    for &id in learners {
        net.raw(1)
            .propose_conf_change(ConfChange::add_learner(id))
            .unwrap();
        net.stabilize();
    }
    let last = net.raw(1).status().last;
    for id in net.ids() {
        assert_eq!(net.raw(id).status().last, last, "node {id} caught up");
        assert_eq!(net.conf(id).learners, learners, "node {id}");
    }
    net.sent.clear();
    net
}

fn joint(voters: &[NodeId], outgoing: &[NodeId]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        voters_outgoing: outgoing.to_vec(),
        ..ConfState::default()
    }
}

/// The membership change carried by entry `index` of node `id`'s log.
fn conf_change_at(net: &mut Network, id: NodeId, index: Index) -> Option<ConfChange> {
    let entry = net.raw(id).entries(index, index + 1).unwrap().remove(0);
    (entry.kind == EntryKind::ConfChange).then(|| ConfChange::decode(&entry.data).unwrap())
}

/// Freezes a joint configuration: appends carrying entries past `index` from
/// node 1 to `blocked` are lost (heartbeats and commit news still flow).
fn block_entries_past(net: &mut Network, index: Index, blocked: &'static [NodeId]) {
    net.filter = Some(Box::new(move |m| match &m.body {
        MessageBody::Append(a) if m.from == 1 && blocked.contains(&m.to) => {
            a.entries.last().is_none_or(|e| e.index <= index)
        }
        _ => true,
    }));
}

// ----- learners ----------------------------------------------------------------------

/// Learners (thesis §4.2.1): a learner receives the log like any follower,
/// but its copy never counts towards the commit quorum: with both other
/// voters cut off, an entry held by the leader and the learner (two of four
/// members) is not committed; it commits once a voter has it.
#[test]
fn a_learner_receives_the_log_but_never_counts_towards_commit() {
    let mut net = with_learners(&[4], |_| {});
    assert_eq!(net.log(4), net.log(1));
    assert_eq!(net.commit(4), net.commit(1));
    let committed = net.commit(1);
    for voter in [2, 3] {
        net.cut.insert((1, voter));
        net.cut.insert((voter, 1));
    }
    let id = net.propose(1, 5).unwrap();
    net.stabilize();
    assert_eq!(net.raw(4).status().last, id, "the learner has the entry");
    assert_eq!(net.commit(1), committed, "leader + learner is no quorum");
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.commit(1), id.index);
    assert_eq!(net.commit(4), id.index);
}

/// Learners (thesis §4.2.1): candidates ask only voters, and a learner's
/// granted vote does not count.
#[test]
fn a_learner_never_counts_in_elections() {
    let mut net = with_learners(&[4], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    for other in [1, 3] {
        net.cut.insert((2, other));
        net.cut.insert((other, 2));
    }
    net.campaign(2);
    assert_eq!(net.role(2), Role::Candidate);
    assert!(
        net.sent.iter().all(|m| m.to != 4),
        "no vote request to a learner"
    );
    let term = net.term(2);
    net.step(msg(4, 2, term, vote_response(false, true)))
        .unwrap();
    assert_eq!(
        net.role(2),
        Role::Candidate,
        "a learner's vote is not counted"
    );
}

/// Learners (thesis §4.2.1): a learner never campaigns — not when its
/// election timeout passes, not when asked to, not on TimeoutNow.
#[test]
fn a_learner_never_campaigns_even_on_timeout_now() {
    let mut net = with_learners(&[4], |_| {});
    let term = net.term(4);
    net.isolate(4);
    net.tick(&[4], 5 * election_tick());
    net.raw(4).campaign();
    net.heal();
    let leader_term = net.term(1);
    net.step(msg(1, 4, leader_term, MessageBody::TimeoutNow))
        .unwrap();
    net.stabilize();
    assert_eq!((net.role(4), net.term(4)), (Role::Follower, term));
    assert!(
        net.sent
            .iter()
            .all(|m| m.from != 4 || !matches!(m.body, MessageBody::Vote(_))),
        "no vote requests from a learner"
    );
    assert_eq!(net.role(1), Role::Leader);
}

/// Promotion (thesis §4.2.1): a learner becomes a voter only once it has
/// caught up — at most max_promotion_lag entries behind the leader — so that
/// a promotion never leaves the cluster waiting for a slow new voter. A
/// node that is not a learner at all is "not caught up" either.
#[test]
fn promotion_is_refused_while_the_learner_lags_and_accepted_once_caught_up() {
    let lag = 3;
    let mut net = with_learners(&[4], |c| c.max_promotion_lag = lag);
    let start = net.raw(1).status().last.index;
    net.isolate(4);
    net.fill_to(1, start + lag + 1);
    let before = net.raw(1).status().last;
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::add_voter(4)),
        Err(ProposeError::NotCaughtUp {
            id: 4,
            matched: start,
            last: start + lag + 1
        })
    );
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::add_voter(5)),
        Err(ProposeError::NotCaughtUp {
            id: 5,
            matched: 0,
            last: start + lag + 1
        })
    );
    assert_eq!(net.raw(1).status().last, before, "nothing proposed");
    net.heal();
    net.tick(&[1], 1);
    net.raw(1)
        .propose_conf_change(ConfChange::add_voter(4))
        .unwrap();
    net.stabilize();
    for id in [1, 2, 3, 4] {
        assert_eq!(net.conf(id), ConfState::with_voters(&[1, 2, 3, 4]));
    }

    // Exactly max_promotion_lag behind is caught up enough.
    let mut net = with_learners(&[4], |c| c.max_promotion_lag = lag);
    let start = net.raw(1).status().last.index;
    net.isolate(4);
    net.fill_to(1, start + lag);
    assert!(net
        .raw(1)
        .propose_conf_change(ConfChange::add_voter(4))
        .is_ok());
}

/// Learners (thesis §4.2.1): adding a learner never stalls commits, even if
/// the learner is down: it does not count towards any quorum.
#[test]
fn adding_a_learner_that_is_down_never_stalls_commits() {
    let mut net = stable_cluster(|_| {});
    // Node 4 never runs: everything sent to it is lost.
    let change = net
        .raw(1)
        .propose_conf_change(ConfChange::add_learner(4))
        .unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), change.index);
    assert_eq!(net.conf(1).learners, [4]);
    for _ in 0..3 {
        let id = net.propose(1, 4).unwrap();
        net.stabilize();
        for voter in [1, 2, 3] {
            assert_eq!(net.commit(voter), id.index);
        }
    }
}

/// Promotion: a learner that never answered (a wrong address, a node that
/// never started) is not caught up even while the whole log is shorter than
/// max_promotion_lag; promoting it would make a quorum it can never join.
#[test]
fn a_learner_that_never_answered_is_not_caught_up_however_short_the_log() {
    let mut net = stable_cluster(|_| {});
    // Node 4 never runs: everything sent to it is lost.
    net.raw(1)
        .propose_conf_change(ConfChange::add_learner(4))
        .unwrap();
    net.stabilize();
    let last = net.raw(1).status().last.index;
    assert!(last < Config::new(1).max_promotion_lag);
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::add_voter(4)),
        Err(ProposeError::NotCaughtUp {
            id: 4,
            matched: 0,
            last
        })
    );
}

/// Learners and snapshots (§7): a learner that joins after the leader
/// compacted its log gets the snapshot, membership included, and then the
/// log — even starting with no membership at all.
#[test]
fn a_learner_that_joins_late_receives_a_snapshot() {
    let mut net = stable_cluster(|_| {});
    net.raw(1)
        .propose_conf_change(ConfChange::add_learner(4))
        .unwrap();
    net.fill_to(1, 5);
    let meta = net.compact(1, b"state");
    net.add_node(4, &[], |_| {});
    net.tick(&[1], 1);
    let node = &net.nodes[&4];
    assert_eq!(
        node.installed,
        [(meta.clone(), Bytes::from_static(b"state"))]
    );
    assert_eq!(net.conf(4).learners, [4]);
    let id = net.propose(1, 1).unwrap();
    net.stabilize();
    assert_eq!((net.raw(4).status().last, net.commit(4)), (id, id.index));
}

// ----- single-voter changes --------------------------------------------------------------

/// Thesis §4.1: a change of a single voter is safe in one step: it takes
/// effect at once, with no joint configuration and no second entry, and each
/// change shows in a Ready's conf_state.
#[test]
fn single_voter_changes_apply_in_one_step() {
    let mut net = with_learners(&[4], |_| {});
    let reported = net.nodes[&2].conf_states.len();
    let add = net
        .raw(1)
        .propose_conf_change(ConfChange::add_voter(4))
        .unwrap();
    net.stabilize();
    let remove = net
        .raw(1)
        .propose_conf_change(ConfChange::remove(3))
        .unwrap();
    net.stabilize();
    assert_eq!(remove.index, add.index + 1, "no LeaveJoint in between");
    assert_eq!(net.raw(1).status().last, remove, "nor after");
    assert_eq!(
        net.nodes[&2].conf_states[reported..],
        [
            ConfState::with_voters(&[1, 2, 3, 4]),
            ConfState::with_voters(&[1, 2, 4])
        ]
    );
    // A three-voter cluster again: two of {1, 2, 4} commit.
    net.isolate(2);
    let id = net.propose(1, 1).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
}

/// Thesis §4.1: "the leader ... steps down once the Cnew entry is
/// committed" — a leader that removes itself in one step stops leading once
/// the change applies, and stops taking proposals.
#[test]
fn a_leader_removing_itself_in_one_step_steps_down_once_applied() {
    let mut net = stable_cluster(|_| {});
    net.raw(1)
        .propose_conf_change(ConfChange::remove(1))
        .unwrap();
    net.stabilize();
    assert_eq!(net.conf(1), ConfState::with_voters(&[2, 3]));
    assert_eq!(net.role(1), Role::Follower);
    assert!(net.propose(1, 1).is_err());
    let leader = [2, 3].into_iter().find(|&id| net.role(id) == Role::Leader);
    assert!(leader.is_some(), "handed over with TimeoutNow");
}

/// etcd's strict reconfiguration check: with two of five voters down, the
/// leader refuses to remove one that is up (the four left would need three,
/// and only two of them answer), but removes one that is down, and the
/// check counts the configuration after the change.
#[test]
fn a_change_that_would_leave_no_quorum_of_live_voters_is_refused() {
    let mut net = Network::new(5);
    net.elect(1);
    net.isolate(4);
    net.isolate(5);
    // Two election timeouts: 4 and 5 are no longer heard from lately.
    net.tick(&[1, 2, 3], 2 * election_tick() + 1);
    assert_eq!(net.role(1), Role::Leader);
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::remove(2)),
        Err(ProposeError::NoActiveQuorum)
    );
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::remove(1)),
        Err(ProposeError::NoActiveQuorum),
        "the leader removing itself counts the same"
    );
    net.raw(1)
        .propose_conf_change(ConfChange::remove(4))
        .unwrap();
    net.stabilize();
    assert_eq!(net.conf(1), ConfState::with_voters(&[1, 2, 3, 5]));
    // Of {1, 2, 3, 5}, three are up: removing one that is up leaves two of
    // three, still a quorum.
    net.raw(1)
        .propose_conf_change(ConfChange::remove(3))
        .unwrap();
    net.stabilize();
    assert_eq!(net.conf(1), ConfState::with_voters(&[1, 2, 5]));
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::remove(2)),
        Err(ProposeError::NoActiveQuorum),
        "1 alone is not a quorum of {{1, 5}}"
    );
}

// ----- joint consensus ---------------------------------------------------------------

/// Thesis §4.3: a change of more than one voter goes through the joint
/// configuration C(old,new); once that is applied, the leader proposes
/// leaving it by itself, and every member reports both steps in its Readys.
#[test]
fn a_change_of_several_voters_goes_through_joint_and_the_leader_leaves_by_itself() {
    let mut net = with_learners(&[4, 5], |_| {});
    let reported: BTreeMap<NodeId, usize> = net
        .ids()
        .into_iter()
        .map(|id| (id, net.nodes[&id].conf_states.len()))
        .collect();
    let change = ConfChange::many(vec![AddVoter(4), AddVoter(5), Remove(2), Remove(3)]);
    let j = net.raw(1).propose_conf_change(change).unwrap();
    net.stabilize();
    assert_eq!(
        conf_change_at(&mut net, 1, j.index + 1),
        Some(ConfChange::LeaveJoint),
        "proposed by the leader, unasked"
    );
    let expected = [
        joint(&[1, 4, 5], &[1, 2, 3]),
        ConfState::with_voters(&[1, 4, 5]),
    ];
    for id in [1, 4, 5] {
        assert_eq!(
            net.nodes[&id].conf_states[reported[&id]..],
            expected,
            "node {id}"
        );
        assert_eq!(net.commit(id), j.index + 1);
    }
    assert_eq!(net.role(1), Role::Leader);
    // The new configuration commits with {1, 4, 5} alone.
    net.isolate(2);
    net.isolate(3);
    let id = net.propose(1, 1).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
}

/// Thesis §4.3: in C(old,new), "agreement (for elections and entry
/// commitment) requires separate majorities from both the old and new
/// configurations". An entry held by a majority of the new voters only, or
/// of the old voters only, is not committed.
#[test]
fn in_joint_an_entry_commits_only_with_majorities_of_both_configurations() {
    let change = ConfChange::many(vec![AddVoter(4), AddVoter(5), Remove(2), Remove(3)]);
    let cases: [(&'static [NodeId], &str); 2] = [
        (&[2, 3], "held by {1, 4, 5}: a new majority only"),
        (&[4, 5], "held by {1, 2, 3}: an old majority only"),
    ];
    for (blocked, what) in cases {
        let mut net = with_learners(&[4, 5], |_| {});
        let j = net.raw(1).propose_conf_change(change.clone()).unwrap();
        block_entries_past(&mut net, j.index, blocked);
        net.stabilize();
        assert_eq!(net.commit(1), j.index, "{what}: the joint entry commits");
        assert_eq!(net.conf(1), joint(&[1, 4, 5], &[1, 2, 3]));
        let id = net.propose(1, 1).unwrap();
        net.stabilize();
        for holder in (1..=5).filter(|id| !blocked.contains(id)) {
            assert_eq!(
                net.raw(holder).status().last,
                id,
                "{what}: node {holder} has it"
            );
        }
        assert_eq!(net.commit(1), j.index, "{what}: LeaveJoint not committed");
        assert_eq!(
            net.conf(1),
            joint(&[1, 4, 5], &[1, 2, 3]),
            "{what}: still joint"
        );
        net.heal();
        net.tick(&[1], 1);
        assert_eq!(net.commit(1), id.index, "{what}: both majorities now");
        assert_eq!(net.conf(1), ConfState::with_voters(&[1, 4, 5]));
    }
}

/// Thesis §4.3: elections in C(old,new) also need majorities of both: a
/// candidate with votes from a majority of only one configuration does not
/// win; with both it does.
#[test]
fn in_joint_an_election_needs_majorities_of_both_configurations() {
    let tweak = |c: &mut Config| {
        c.pre_vote = false;
        c.check_quorum = false;
    };
    let change = ConfChange::many(vec![AddVoter(4), AddVoter(5), Remove(2), Remove(3)]);
    let setup = || {
        let mut net = with_learners(&[4, 5], tweak);
        let j = net.raw(1).propose_conf_change(change.clone()).unwrap();
        block_entries_past(&mut net, j.index, &[2, 3]);
        net.stabilize();
        for id in 1..=5 {
            assert_eq!(net.conf(id), joint(&[1, 4, 5], &[1, 2, 3]), "node {id}");
        }
        net.heal();
        net.isolate(1);
        net
    };
    // Node 4 with node 5: a majority of {1, 4, 5}, but no old voter.
    let mut net = setup();
    net.isolate(2);
    net.isolate(3);
    net.campaign(4);
    assert_eq!(net.role(4), Role::Candidate, "new majority only");
    // Node 4 with nodes 2 and 3: an old majority, but only 4 of {1, 4, 5}.
    let mut net = setup();
    net.isolate(5);
    net.campaign(4);
    assert_eq!(net.role(4), Role::Candidate, "old majority only");
    // Both.
    let mut net = setup();
    net.campaign(4);
    assert_eq!(net.role(4), Role::Leader, "majorities of both");
}

/// Thesis §4.3 / §4.1: one membership change at a time: a second one while
/// one is not yet applied — including the LeaveJoint of a joint change — is
/// refused with ConfChangeInProgress, and nothing is appended.
#[test]
fn a_second_change_while_one_is_pending_is_refused() {
    let mut net = with_learners(&[4, 5], |_| {});
    let first = net
        .raw(1)
        .propose_conf_change(ConfChange::remove(5))
        .unwrap();
    let in_progress = |index| Err(ProposeError::ConfChangeInProgress { index });
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::remove(4)),
        in_progress(first.index)
    );
    assert_eq!(net.raw(1).status().last, first, "nothing appended");
    net.stabilize();
    // Joint, frozen before LeaveJoint commits.
    let j = net
        .raw(1)
        .propose_conf_change(ConfChange::many(vec![AddVoter(4), Remove(3)]))
        .unwrap();
    block_entries_past(&mut net, j.index, &[2, 3]);
    net.stabilize();
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::remove(2)),
        in_progress(j.index + 1),
        "waits for the leader's own LeaveJoint"
    );
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.conf(1), ConfState::with_voters(&[1, 2, 4]));
    assert!(net
        .raw(1)
        .propose_conf_change(ConfChange::remove(2))
        .is_ok());
}

/// A leader just elected does not know whether its log holds an unapplied
/// membership change, so it takes none until the first entry of its term is
/// applied; it says so with its own error (not ConfChangeInProgress, as no
/// change was proposed), and takes the change once that entry is applied.
#[test]
fn a_new_leader_takes_membership_changes_once_its_first_entry_is_applied() {
    let mut net = Network::new(3);
    net.elect(1);
    // Leadership moves to node 2, but its appends carrying entries are
    // lost for now.
    net.filter = Some(Box::new(
        |m| !matches!(&m.body, MessageBody::Append(a) if m.from == 2 && !a.entries.is_empty()),
    ));
    net.raw(1).transfer_leader(2).unwrap();
    net.stabilize();
    assert_eq!(net.role(2), Role::Leader);
    let first = net.raw(2).status().last.index;
    assert_eq!(
        net.raw(2).propose_conf_change(ConfChange::add_learner(4)),
        Err(ProposeError::NewLeader { index: first })
    );
    net.heal();
    net.tick(&[2], 1);
    net.stabilize();
    assert!(net
        .raw(2)
        .propose_conf_change(ConfChange::add_learner(4))
        .is_ok());
}

/// Membership validation: a change that cannot apply to the current
/// configuration — removing the last voter, an empty change, leaving a joint
/// configuration that is not in effect — is refused with InvalidConfChange,
/// and nothing is appended.
#[test]
fn an_invalid_change_is_refused() {
    let mut net = Network::new(1);
    net.tick(&[1], 2 * election_tick());
    assert_eq!(net.role(1), Role::Leader);
    let last = net.raw(1).status().last;
    let invalid = |e| Err(ProposeError::InvalidConfChange(e));
    for (change, error) in [
        (ConfChange::remove(1), ConfChangeError::NoVoters),
        (ConfChange::many(vec![]), ConfChangeError::Empty),
        (ConfChange::LeaveJoint, ConfChangeError::NotJoint),
        (ConfChange::add_learner(0), ConfChangeError::ZeroId),
    ] {
        assert_eq!(net.raw(1).propose_conf_change(change), invalid(error));
    }
    assert_eq!(net.raw(1).status().last, last);
    let not_leader = Err(ProposeError::NotLeader { leader: Some(1) });
    let mut net = stable_cluster(|_| {});
    assert_eq!(
        net.raw(2).propose_conf_change(ConfChange::add_learner(4)),
        not_leader
    );
}

/// Thesis §4.2.2 with §4.3: a leader that is not part of C(new) keeps leading
/// (and counting itself in the old majority only) through the joint phase,
/// and steps down once C(new) is applied — handing over with TimeoutNow to a
/// caught-up voter of C(new), which wins at once.
#[test]
fn a_removed_leader_leads_through_joint_then_steps_down_and_hands_over() {
    let mut net = with_learners(&[4], |_| {});
    let j = net
        .raw(1)
        .propose_conf_change(ConfChange::many(vec![Remove(1), AddVoter(4)]))
        .unwrap();
    block_entries_past(&mut net, j.index, &[2, 3]);
    net.stabilize();
    assert_eq!(net.conf(1), joint(&[2, 3, 4], &[1, 2, 3]));
    assert_eq!(net.role(1), Role::Leader, "still leads in C(old,new)");
    let id = net.propose(1, 1).expect("and takes proposals");
    net.heal();
    net.sent.clear();
    net.tick(&[1], 1);
    assert_eq!(net.conf(1), ConfState::with_voters(&[2, 3, 4]));
    assert_eq!(net.role(1), Role::Follower, "stepped down after C(new)");
    let handed: Vec<NodeId> = net
        .sent
        .iter()
        .filter(|m| m.from == 1 && m.body == MessageBody::TimeoutNow)
        .map(|m| m.to)
        .collect();
    assert_eq!(handed.len(), 1, "one TimeoutNow");
    let successor = handed[0];
    assert!([2, 3, 4].contains(&successor));
    assert_eq!(net.role(successor), Role::Leader, "won without a timeout");
    assert_eq!(net.term(successor), 2);
    assert!(net.commit(successor) >= id.index);
    // The old leader never campaigns again.
    net.tick(&[1], 3 * election_tick());
    assert_eq!(net.role(1), Role::Follower);
    assert_eq!(net.role(successor), Role::Leader);
}

/// Persistence of membership: a node restarted mid-change, or after it,
/// re-reads its membership from storage (persisted from Ready.conf_state).
#[test]
fn a_restarted_node_rereads_its_membership_from_storage() {
    let mut net = with_learners(&[4, 5], |_| {});
    let change = ConfChange::many(vec![AddVoter(4), AddVoter(5), Remove(3)]);
    let j = net.raw(1).propose_conf_change(change).unwrap();
    block_entries_past(&mut net, j.index, &[2, 3]);
    net.stabilize();
    let mid = joint(&[1, 2, 4, 5], &[1, 2, 3]);
    net.restart(2);
    assert_eq!(net.conf(2), mid, "restarted in the joint configuration");
    assert!(net.raft(2).membership.is_joint());
    net.heal();
    net.tick(&[1], 1);
    let done = ConfState::with_voters(&[1, 2, 4, 5]);
    for id in [2, 4] {
        net.restart(id);
        assert_eq!(net.conf(id), done, "node {id}");
    }
    net.restart(1);
    assert_eq!(net.conf(1), done);
    // And the cluster works on with it: 3 of {1, 2, 4, 5}.
    net.isolate(5);
    net.tick(&[1, 2, 4], 3 * election_tick());
    let leader = [1, 2, 4]
        .into_iter()
        .find(|&id| net.role(id) == Role::Leader);
    let leader = leader.expect("a leader among 1, 2, 4");
    let id = net.propose(leader, 1).unwrap();
    net.stabilize();
    assert_eq!(net.commit(leader), id.index);
}
