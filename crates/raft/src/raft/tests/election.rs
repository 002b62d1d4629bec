//! Terms (§5.1), elections (§5.2), the election restriction (§5.4.1),
//! PreVote and CheckQuorum.

use super::*;

// ----- §5.1 terms ----------------------------------------------------------------

/// §5.1: "If a server receives a request or response with a term greater than
/// its own, it updates its term and converts to follower" — whatever the
/// message kind and whatever its role. The new term is persisted. (A pre-vote
/// request is the one exception; see the PreVote tests.)
#[test]
fn higher_term_in_any_message_makes_the_receiver_a_follower_in_that_term() {
    for role in ROLES {
        for body in every_kind() {
            if matches!(&body, MessageBody::Vote(v) if v.pre_vote) {
                continue;
            }
            // Without CheckQuorum, so that no leader lease hides vote requests.
            let mut net = in_role(role, |c| c.check_quorum = false);
            let term = net.term(1) + 1;
            let from_leader = matches!(body, MessageBody::Append(_) | MessageBody::Heartbeat(_));
            let m = msg(2, 1, term, body);
            let what = format!("{role:?} given a {}", m.kind_name());
            net.step(m).unwrap();
            assert_eq!((net.role(1), net.term(1)), (Role::Follower, term), "{what}");
            assert_eq!(net.raft(1).leader, from_leader.then_some(2), "{what}");
            let hs = net.ready(1).hard_state.expect("the new term is persisted");
            assert_eq!(hs.term, term, "{what}");
        }
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects
/// the request." Nothing changes. A stale leader's Append or Heartbeat, and a
/// stale pre-vote, are answered with the current term so that the sender
/// catches up; everything else stale is dropped silently.
#[test]
fn stale_term_messages_change_nothing_and_stale_leaders_hear_the_current_term() {
    for role in ROLES {
        for body in every_kind() {
            let mut net = in_role(role, |_| {});
            let term = net.term(1);
            let expected = match &body {
                MessageBody::Append(_) | MessageBody::Heartbeat(_) => {
                    vec![msg(
                        1,
                        2,
                        term,
                        MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
                    )]
                }
                MessageBody::Vote(v) if v.pre_vote => {
                    vec![msg(1, 2, term, vote_response(true, false))]
                }
                MessageBody::Propose { request, .. } => {
                    let result = Err(ProposeError::NotLeader {
                        leader: net.raft(1).leader,
                    });
                    let request = *request;
                    vec![msg(
                        1,
                        2,
                        term,
                        MessageBody::ProposeResponse { request, result },
                    )]
                }
                _ => vec![],
            };
            let m = msg(2, 1, term - 2, body);
            let what = format!("{role:?} given a stale {}", m.kind_name());
            let before = net.snapshot(1);
            net.step(m).unwrap();
            assert_eq!(net.snapshot(1), before, "{what}");
            let rd = net.ready(1);
            assert_eq!(rd.hard_state, None, "{what}");
            let replies: Vec<Message> = rd
                .messages
                .into_iter()
                .chain(rd.persisted_messages)
                .collect();
            assert_eq!(replies, expected, "{what}");
        }
    }
}

/// §5.1: a leader cut off while the others elected a new one learns the
/// higher term from the answer to its first heartbeat, and steps down.
#[test]
fn stale_leader_steps_down_when_answered_with_a_higher_term() {
    let mut net = Network::new(3);
    net.elect(1);
    net.isolate(1);
    net.tick(&[2, 3], 2 * election_tick());
    let new_leader = [2, 3]
        .into_iter()
        .find(|&id| net.role(id) == Role::Leader)
        .expect("nodes 2 and 3 elect a leader");
    assert_eq!(net.term(new_leader), 2);
    assert_eq!(
        (net.role(1), net.term(1)),
        (Role::Leader, 1),
        "still leads, unaware"
    );
    net.heal();
    net.tick(&[1], 1);
    assert_eq!((net.role(1), net.term(1)), (Role::Follower, 2));
}

// ----- §5.2 elections ------------------------------------------------------------

/// §5.2: "Each server will vote for at most one candidate in a given term, on
/// a first-come-first-served basis." The same candidate asking again (its
/// answer may have been lost) is granted again.
#[test]
fn one_vote_per_term_first_come_first_served() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    let mut ask = |from| {
        net.step(msg(from, 1, 1, vote((0, 0), false))).unwrap();
        vote_granted(&net.ready(1))
    };
    assert!(ask(2), "first come");
    assert!(!ask(3), "a second candidate in the same term");
    assert!(ask(2), "the same candidate again");
    assert_eq!(net.raft(1).vote, Some(2));
}

/// §5.2 with Figure 2 ("updated on stable storage before responding to RPCs"):
/// a vote, granted or cast for oneself, is in the Ready's hard state, and the
/// message it concerns is among those that leave only once that is durable.
#[test]
fn votes_are_persisted_before_the_messages_that_depend_on_them_leave() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.step(msg(2, 1, 1, vote((0, 0), false))).unwrap();
    let rd = net.ready(1);
    let voted_for = |id| HardState {
        term: 1,
        vote: Some(id),
        commit: 0,
    };
    assert_eq!(rd.hard_state, Some(voted_for(2)));
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.persisted_messages,
        [msg(1, 2, 1, vote_response(false, true))]
    );
    assert_eq!(net.nodes[&1].storage.hard_state(), voted_for(2));

    net.raw(3).campaign();
    let rd = net.ready(3);
    assert_eq!(rd.hard_state, Some(voted_for(3)));
    assert!(rd.messages.is_empty());
    let requests: Vec<NodeId> = rd.persisted_messages.iter().map(|m| m.to).collect();
    assert_eq!(requests, [1, 2]);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of
/// the servers in the full cluster for the same term." Two of five is not
/// enough; three is.
#[test]
fn candidate_wins_with_votes_from_a_majority_of_the_full_cluster() {
    let mut net = Network::with_config(5, |c| c.pre_vote = false);
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.campaign(1);
    assert_eq!((net.role(1), net.term(1)), (Role::Candidate, 1));
    net.heal();
    net.isolate(4);
    net.isolate(5);
    net.campaign(1);
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 2));
    for id in [2, 3] {
        assert_eq!(net.raft(id).leader, Some(1));
    }
}

/// §5.2: a candidate refused by a majority has lost; it returns to follower
/// (in its term) and waits for the next timeout.
#[test]
fn candidate_refused_by_a_majority_steps_down() {
    let mut net = Network::with_config(3, |c| c.pre_vote = false);
    net.raw(1).campaign();
    let refusal = |from| msg(from, 1, 1, vote_response(false, false));
    net.step(refusal(2)).unwrap();
    assert_eq!(
        net.role(1),
        Role::Candidate,
        "one refusal of three decides nothing"
    );
    net.step(refusal(3)).unwrap();
    assert_eq!((net.role(1), net.term(1)), (Role::Follower, 1));
}

/// §5.2: "If the AppendEntries RPC is from another server claiming to be
/// leader and its term is at least as large as the candidate's current term,
/// then the candidate recognizes the leader as legitimate and returns to
/// follower state." Heartbeats count too, and so do pre-candidates.
#[test]
fn candidate_steps_down_on_append_or_heartbeat_from_a_leader_of_its_term() {
    for role in [Role::PreCandidate, Role::Candidate] {
        for body in [append((0, 0), &[], 0), heartbeat(0)] {
            let mut net = in_role(role, |_| {});
            let term = net.term(1);
            net.step(msg(2, 1, term, body)).unwrap();
            assert_eq!(
                (net.role(1), net.term(1), net.raft(1).leader),
                (Role::Follower, term, Some(2)),
                "{role:?}"
            );
        }
    }
}

/// §5.2: "election timeouts are chosen randomly from a fixed interval" — here
/// [election_tick, 2 * election_tick) — so that split votes are rare. The draw
/// covers the interval across seeds, differs between the nodes of a cluster,
/// and a follower campaigns exactly when its draw runs out.
#[test]
fn randomized_election_timeouts_cover_election_tick_to_twice_that() {
    let et = election_tick();
    let draws: BTreeSet<u32> = (0..200)
        .map(|seed| {
            let node = new_node(Config::new(1), MemStorage::with_voters(&[1, 2, 3]), seed);
            node.raft().randomized_election_timeout
        })
        .collect();
    assert_eq!(draws, (et..2 * et).collect());

    let net = Network::new(5);
    let per_node: BTreeSet<u32> = net
        .ids()
        .into_iter()
        .map(|id| net.raft(id).randomized_election_timeout)
        .collect();
    assert!(per_node.len() > 1, "five nodes, one draw: {per_node:?}");

    let mut net = Network::new(3);
    let timeout = net.raft(1).randomized_election_timeout;
    for _ in 1..timeout {
        net.raw(1).tick();
    }
    assert_eq!(net.role(1), Role::Follower);
    net.raw(1).tick();
    assert_eq!(net.role(1), Role::PreCandidate);
}

/// §5.2 in a cluster of one: its own vote is a majority, so it leads after its
/// first timeout, and commits alone.
#[test]
fn single_node_cluster_elects_itself_and_commits_alone() {
    let mut net = Network::new(1);
    net.tick(&[1], 2 * election_tick());
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 1));
    let id = net.propose(1, 3).unwrap();
    net.stabilize();
    assert_eq!(net.commit(1), id.index);
    assert_eq!(net.nodes[&1].applied.last().map(Entry::id), Some(id));
}

// ----- §5.4.1 election restriction -----------------------------------------------

/// §5.4.1: "If the logs have last entries with different terms, then the log
/// with the later term is more up-to-date. If the logs end with the same term,
/// then whichever log is longer is more up-to-date." A voter refuses a
/// candidate whose log is less up to date than its own.
#[test]
fn vote_is_granted_only_to_a_candidate_at_least_as_up_to_date() {
    // The voter's log ends with (index 3, term 2).
    let logs = [(2, &[1, 1, 2][..]), (2, &[]), (2, &[])];
    let mut net = Network::with_logs(&logs, |c| c.pre_vote = false);
    let cases = [
        ((9, 1), false, "lower last term, however long"),
        ((2, 2), false, "same last term, shorter"),
        ((3, 2), true, "same last term, as long"),
        ((4, 2), true, "same last term, longer"),
        ((1, 3), true, "higher last term, however short"),
    ];
    // A new term for each request, so that every one finds the vote free.
    for (term, (last, granted, why)) in (3..).zip(cases) {
        net.step(msg(2, 1, term, vote(last, false))).unwrap();
        assert_eq!(vote_granted(&net.ready(1)), granted, "{why}");
        assert_eq!(net.raft(1).vote, granted.then_some(2), "{why}");
    }
}

// ----- PreVote ----------------------------------------------------------------------

/// PreVote (thesis §9.6): a node cut off from the cluster polls with pre-votes
/// nobody grants, so its term does not grow, and when it rejoins the leader
/// keeps leading in the same term. Without PreVote its term runs away.
#[test]
fn prevote_rejoining_node_does_not_disrupt_a_stable_leader() {
    for pre_vote in [true, false] {
        let mut net = Network::with_config(3, |c| c.pre_vote = pre_vote);
        let ids = net.ids();
        net.elect(1);
        net.isolate(3);
        net.tick(&ids, 5 * election_tick());
        if !pre_vote {
            assert!(
                net.term(3) > 1,
                "without PreVote, the cut-off node's term grows"
            );
            continue;
        }
        assert_eq!(net.term(3), 1);
        net.heal();
        net.tick(&ids, election_tick());
        for id in ids {
            assert_eq!(
                (net.term(id), net.raft(id).leader),
                (1, Some(1)),
                "node {id}"
            );
        }
    }
}

/// PreVote: granting a pre-vote changes nothing durable — neither the voter's
/// term nor its vote — and a pre-candidate keeps its own term and vote until
/// it has won the poll.
#[test]
fn prevote_changes_neither_term_nor_vote() {
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    let before = net.raft(2).hard_state();
    assert_eq!(before.vote, Some(1));
    let last = net.raw(3).status().last;
    net.step(msg(3, 2, 2, vote((last.index, last.term), true)))
        .unwrap();
    let rd = net.ready(2);
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.persisted_messages,
        [msg(2, 3, 2, vote_response(true, true))],
        "granted, in the term asked for"
    );
    assert_eq!(net.raft(2).hard_state(), before);
    assert_eq!(net.raft(2).leader, Some(1));

    net.isolate(3);
    net.campaign(3);
    assert_eq!(net.role(3), Role::PreCandidate);
    assert_eq!(net.raft(3).hard_state(), before);
    assert_eq!(net.nodes[&3].storage.hard_state(), before);
}

/// PreVote: a pre-vote is a question about the *next* term. A voter that
/// already follows a leader, or has voted, in the term asked about refuses it.
#[test]
fn prevote_for_a_term_the_voter_already_settled_is_refused() {
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    let last = net.raw(3).status().last;
    let pre_vote = |term| msg(3, 2, term, vote((last.index, last.term), true));
    net.step(pre_vote(1)).unwrap();
    assert!(!vote_granted(&net.ready(2)), "term 1 has a leader");
    net.step(pre_vote(2)).unwrap();
    assert!(vote_granted(&net.ready(2)), "term 2 is open");
}

/// PreVote: a pre-candidate that a majority would vote for runs a real
/// election, in the next term, and wins it.
#[test]
fn precandidate_that_wins_the_prevote_runs_a_real_election() {
    let mut net = Network::new(3);
    net.raw(1).campaign();
    net.process(1);
    assert_eq!((net.role(1), net.term(1)), (Role::PreCandidate, 0));
    net.deliver_round(); // pre-votes granted
    assert_eq!([2, 3].map(|id| net.term(id)), [0, 0]);
    net.deliver_round(); // grants counted
    assert_eq!((net.role(1), net.term(1)), (Role::Candidate, 1));
    assert!(net
        .queue
        .iter()
        .all(|m| m.term == 1 && matches!(&m.body, MessageBody::Vote(v) if !v.pre_vote)));
    net.stabilize();
    assert_eq!((net.role(1), net.term(1)), (Role::Leader, 1));
}

// ----- CheckQuorum ------------------------------------------------------------------

/// CheckQuorum (thesis §6.2): a leader that hears from no majority during a
/// whole election timeout steps down (keeping its term). Here it last heard
/// from its followers just before the first check, so it passes that one and
/// steps down at the second, and not a tick earlier. Without CheckQuorum it
/// leads on.
#[test]
fn checkquorum_leader_steps_down_after_an_election_timeout_without_a_quorum() {
    let et = election_tick();
    for check_quorum in [true, false] {
        let mut net = Network::with_config(3, |c| c.check_quorum = check_quorum);
        net.elect(1);
        net.isolate(1);
        net.tick(&[1], 2 * et - 1);
        assert_eq!(net.role(1), Role::Leader);
        net.tick(&[1], 1);
        let expected = if check_quorum {
            Role::Follower
        } else {
            Role::Leader
        };
        assert_eq!((net.role(1), net.term(1)), (expected, 1));
    }
}

/// CheckQuorum's leader lease (thesis §4.2.3): a follower that heard from a
/// leader within the election timeout ignores vote requests, even of a higher
/// term, so a rejoining node cannot depose a healthy leader. Past the timeout
/// it votes as usual.
#[test]
fn followers_within_the_leader_lease_ignore_higher_term_vote_requests() {
    let mut net = Network::new(3);
    net.elect(1);
    let last = net.raw(3).status().last;
    let request = msg(3, 2, 2, vote((last.index, last.term), false));
    net.step(request.clone()).unwrap();
    assert_eq!(net.term(2), 1);
    assert!(!net.raw(2).has_ready(), "not even a refusal goes back");

    net.isolate(1);
    net.tick(&[2], election_tick());
    net.step(request).unwrap();
    assert_eq!(net.term(2), 2);
    assert!(vote_granted(&net.ready(2)));
}
