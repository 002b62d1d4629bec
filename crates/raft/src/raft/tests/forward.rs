//! Proposals forwarded from followers to the leader: the follower learns
//! the entry its command became before it can apply it, and every refusal
//! says the command was never appended.

use super::*;

fn forwarded(net: &Network, id: NodeId) -> &[ForwardedProposal] {
    &net.nodes[&id].forwarded
}

fn command(byte: u8) -> Bytes {
    Bytes::from(vec![byte; 3])
}

/// A follower's proposal goes to the leader, which appends it and answers
/// with its entry id; the follower hears of the id before the entry is
/// committed, then applies the very entry.
#[test]
fn a_followers_proposal_is_appended_by_the_leader_and_answered_with_its_entry() {
    let mut net = stable_cluster(|_| {});
    net.raw(2).forward_proposal(41, command(9)).unwrap();
    net.process(2);
    let sent: Vec<Message> = net.queue.iter().cloned().collect();
    assert!(
        matches!(&sent[..], [m] if m.to == 1 && matches!(&m.body, MessageBody::Propose { request: 41, .. })),
        "{sent:?}"
    );
    net.deliver_round(); // The leader appends; its answer and appends go out.
    let expected = EntryId {
        term: net.term(1),
        index: net.raft(1).log.last_index(),
    };
    // Delivered in the leader's order: the answer first.
    net.deliver_round();
    assert_eq!(
        forwarded(&net, 2),
        [ForwardedProposal {
            request: 41,
            result: Ok(expected),
        }]
    );
    assert!(
        net.nodes[&2].applied_index < expected.index,
        "answered before it can be applied"
    );
    net.stabilize();
    for id in [1, 2, 3] {
        let last = net.nodes[&id].applied.last().unwrap();
        assert_eq!(
            (last.id(), &last.data),
            (expected, &command(9)),
            "node {id}"
        );
    }
}

/// On the leader the answer comes at once, from the next Ready.
#[test]
fn the_leader_answers_its_own_forwarded_proposal_in_the_next_ready() {
    let mut net = stable_cluster(|_| {});
    net.raw(1).forward_proposal(7, command(1)).unwrap();
    let rd = net.ready(1);
    let index = net.raft(1).log.last_index();
    assert_eq!(
        rd.forwarded,
        [ForwardedProposal {
            request: 7,
            result: Ok(EntryId {
                term: net.term(1),
                index
            }),
        }]
    );
}

/// With no leader known there is nowhere to send it: refused at once.
#[test]
fn without_a_known_leader_a_proposal_is_refused_at_once() {
    let mut net = Network::new(3);
    let refused = net.raw(2).forward_proposal(1, command(1)).unwrap_err();
    assert_eq!(refused, ProposeError::NotLeader { leader: None });
}

/// A follower that receives a forwarded proposal (its sender's view of the
/// leader is stale) appends nothing and names the leader it knows.
#[test]
fn a_follower_given_a_proposal_refuses_it_and_names_the_leader() {
    let mut net = stable_cluster(|_| {});
    let term = net.term(2);
    let last = net.raft(2).log.last_index();
    let body = MessageBody::Propose {
        request: 5,
        data: command(2),
    };
    net.step(msg(3, 2, term, body)).unwrap();
    assert_eq!(net.raft(2).log.last_index(), last);
    let rd = net.ready(2);
    let result = Err(ProposeError::NotLeader { leader: Some(1) });
    assert_eq!(
        rd.messages,
        [msg(
            2,
            3,
            term,
            MessageBody::ProposeResponse { request: 5, result }
        )]
    );
}

/// A leader handing over leadership refuses forwarded proposals as it
/// refuses its own, and the refusal travels back intact.
#[test]
fn a_leader_transferring_leadership_refuses_a_forwarded_proposal() {
    let mut net = stable_cluster(|_| {});
    // Hold the transfer's TimeoutNow back so the transfer stays in progress.
    net.filter = Some(Box::new(|m| !matches!(m.body, MessageBody::TimeoutNow)));
    net.raw(1).transfer_leader(3).unwrap();
    net.stabilize();
    net.raw(2).forward_proposal(8, command(3)).unwrap();
    net.stabilize();
    assert_eq!(
        forwarded(&net, 2),
        [ForwardedProposal {
            request: 8,
            result: Err(ProposeError::TransferInProgress { to: 3 }),
        }]
    );
}

/// An empty command would be a leader's no-op, never applied: a peer that
/// sends one is refused.
#[test]
fn an_empty_forwarded_proposal_is_refused_as_invalid() {
    let mut net = stable_cluster(|_| {});
    let term = net.term(1);
    let body = MessageBody::Propose {
        request: 1,
        data: Bytes::new(),
    };
    let refused = net.step(msg(2, 1, term, body)).unwrap_err();
    assert!(
        matches!(refused, StepError::InvalidMessage { .. }),
        "{refused}"
    );
}

/// Only members forward proposals.
#[test]
fn a_proposal_from_a_stranger_is_refused() {
    let mut net = stable_cluster(|_| {});
    let term = net.term(1);
    let body = MessageBody::Propose {
        request: 1,
        data: command(1),
    };
    let refused = net.step(msg(9, 1, term, body)).unwrap_err();
    assert_eq!(refused, StepError::UnknownPeer(9));
}
