//! Leadership transfer (thesis §3.10).

use super::*;

/// The TimeoutNow messages node `from` sent, by recipient.
fn timeout_nows(net: &Network, from: NodeId) -> Vec<NodeId> {
    net.sent
        .iter()
        .filter(|m| m.from == from && m.body == MessageBody::TimeoutNow)
        .map(|m| m.to)
        .collect()
}

/// Thesis §3.10: "the prior leader stops accepting new client requests",
/// brings the target's log up to date ("sends it AppendEntries requests"),
/// and only then sends TimeoutNow; the target campaigns at once and wins.
#[test]
fn the_leader_stops_taking_proposals_and_brings_a_lagging_target_up_to_date() {
    let mut net = stable_cluster(|_| {});
    net.isolate(3);
    net.fill_to(1, 5);
    net.raw(1).transfer_leader(3).unwrap();
    let refused = Err(ProposeError::TransferInProgress { to: 3 });
    assert_eq!(net.propose(1, 1), refused);
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::add_learner(4)),
        refused
    );
    net.stabilize();
    assert!(
        timeout_nows(&net, 1).is_empty(),
        "not while the target lags"
    );
    net.heal();
    net.sent.clear();
    net.tick(&[1], 1);
    assert_eq!(timeout_nows(&net, 1), [3]);
    // Every entry reached node 3 before TimeoutNow was sent.
    let timeout_at = net
        .sent
        .iter()
        .position(|m| m.body == MessageBody::TimeoutNow)
        .unwrap();
    let caught_up_at = net
        .sent
        .iter()
        .position(|m| m.from == 3 && m.body == MessageBody::AppendResponse(Accepted { index: 5 }))
        .expect("node 3 acknowledged the last entry");
    assert!(caught_up_at < timeout_at);
    assert_eq!((net.role(3), net.term(3)), (Role::Leader, 2));
    assert_eq!(net.role(1), Role::Follower);
    assert_eq!(net.log(3)[..5], net.log(1)[..5]);
}

/// Thesis §3.10 with §4.2.3: voters that heard from the leader within the
/// election timeout ignore vote requests (the leader lease) — except those of
/// a campaign started by TimeoutNow, which carry the transfer flag. So the
/// target wins at once, where its own campaign would get nowhere.
#[test]
fn the_target_wins_at_once_though_the_voters_are_within_the_leader_lease() {
    let mut net = stable_cluster(|_| {});
    net.campaign(3);
    assert_eq!(net.role(1), Role::Leader, "a plain campaign is ignored");
    assert_eq!(net.term(3), 1);
    net.raw(1).transfer_leader(3).unwrap();
    net.stabilize();
    let votes: Vec<bool> = net
        .sent
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Vote(v) if m.from == 3 && !v.pre_vote => Some(v.transfer),
            _ => None,
        })
        .collect();
    assert_eq!(votes, [true, true], "no pre-vote, the transfer flag set");
    assert_eq!((net.role(3), net.term(3)), (Role::Leader, 2));
    assert_eq!(net.raft(2).leader, Some(3));
}

/// Thesis §3.10: the target must be a voter of the configuration (a learner
/// or a stranger could never win); the refusal changes nothing.
#[test]
fn a_transfer_to_a_non_voter_is_refused() {
    let mut net = stable_cluster(|_| {});
    net.raw(1)
        .propose_conf_change(ConfChange::add_learner(4))
        .unwrap();
    net.stabilize();
    for target in [4, 9] {
        assert_eq!(
            net.raw(1).transfer_leader(target),
            Err(TransferError::NotAVoter(target))
        );
    }
    assert!(net.propose(1, 1).is_ok(), "no transfer under way");
    assert_eq!(
        net.raw(1).transfer_leader(1),
        Ok(()),
        "to itself: nothing to do"
    );
    assert!(net.propose(1, 1).is_ok());
}

/// Thesis §3.10: "If the transfer does not complete within an election
/// timeout, the prior leader aborts the transfer and resumes accepting client
/// requests" — and not a tick earlier.
#[test]
fn a_transfer_aborts_after_an_election_timeout() {
    let mut net = stable_cluster(|_| {});
    net.isolate(3);
    let last = net.raw(1).status().last.index;
    net.fill_to(1, last + 1);
    net.raw(1).transfer_leader(3).unwrap();
    net.tick(&[1], election_tick() - 1);
    assert_eq!(
        net.propose(1, 1),
        Err(ProposeError::TransferInProgress { to: 3 })
    );
    net.tick(&[1], 1);
    assert_eq!(net.role(1), Role::Leader);
    assert!(net.propose(1, 1).is_ok(), "accepted again");
    assert!(timeout_nows(&net, 1).is_empty());
    // The target catching up later does not revive the aborted transfer.
    net.heal();
    net.tick(&[1], 1);
    assert_eq!(net.role(1), Role::Leader);
    assert!(timeout_nows(&net, 1).is_empty());
}

/// Thesis §3.10: only the leader can hand leadership over; a follower says
/// who the leader is.
#[test]
fn a_transfer_on_a_follower_is_refused_naming_the_leader() {
    let mut net = stable_cluster(|_| {});
    assert_eq!(
        net.raw(2).transfer_leader(3),
        Err(TransferError::NotLeader { leader: Some(1) })
    );
    let mut fresh = Network::new(3);
    assert_eq!(
        fresh.raw(1).transfer_leader(2),
        Err(TransferError::NotLeader { leader: None })
    );
}
