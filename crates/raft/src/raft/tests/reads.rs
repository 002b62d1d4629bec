//! Linearizable reads (thesis §6.4): ReadIndex, batched heartbeat rounds,
//! forwarded reads, and lease reads (§6.4.1).

use super::*;

/// The heartbeats node `from` sent.
fn heartbeats_from(net: &Network, from: NodeId) -> usize {
    net.sent
        .iter()
        .filter(|m| m.from == from && matches!(m.body, MessageBody::Heartbeat(_)))
        .count()
}

fn read_states(net: &Network, id: NodeId) -> &[ReadState] {
    &net.nodes[&id].read_states
}

fn rs(request: u64, index: Index) -> ReadState {
    ReadState { request, index }
}

/// Thesis §6.4 steps 1–3: the leader records its commit index as the read
/// index, then "sends a new round of heartbeats and waits for their
/// acknowledgments from a majority"; only then is the read released. With
/// five voters, one echo is not enough; the second is.
#[test]
fn read_index_is_released_at_the_commit_index_once_a_quorum_echoes_the_round() {
    let mut net = Network::new(5);
    net.elect(1);
    net.sent.clear();
    let commit = net.commit(1);
    net.raw(1).read_index(7).unwrap();
    net.process(1);
    assert!(read_states(&net, 1).is_empty());
    let heartbeats: Vec<Message> = std::mem::take(&mut net.queue).into();
    assert_eq!(heartbeats.len(), 4);
    assert!(heartbeats
        .iter()
        .all(|m| matches!(&m.body, MessageBody::Heartbeat(h) if h.read_round > 0)));
    for (n, hb) in heartbeats.into_iter().enumerate() {
        let follower = hb.to;
        net.step(hb).unwrap();
        net.process(follower);
        let echo = net.queue.pop_front().expect("the echo");
        net.queue.clear();
        net.step(echo).unwrap();
        net.process(1);
        net.queue.clear();
        let expected: &[ReadState] = if n == 0 { &[] } else { &[rs(7, commit)] };
        assert_eq!(read_states(&net, 1), expected, "after {} echoes", n + 1);
    }
}

/// Thesis §6.4 ("the leader can amortize the cost of confirming its
/// leadership: it can use a single round of heartbeats for any number of
/// read-only queries that it has accumulated"): every read waiting at one
/// moment is confirmed by one heartbeat per follower.
#[test]
fn one_heartbeat_round_confirms_every_read_waiting_at_that_moment() {
    let mut net = stable_cluster(|_| {});
    let commit = net.commit(1);
    for request in 1..=10 {
        net.raw(1).read_index(request).unwrap();
    }
    net.stabilize();
    assert_eq!(heartbeats_from(&net, 1), 2, "one per follower");
    let expected: Vec<ReadState> = (1..=10).map(|r| rs(r, commit)).collect();
    assert_eq!(read_states(&net, 1), expected);
    // The next batch is confirmed by a new round.
    net.raw(1).read_index(11).unwrap();
    net.raw(1).read_index(12).unwrap();
    net.stabilize();
    assert_eq!(heartbeats_from(&net, 1), 4);
    assert_eq!(read_states(&net, 1).len(), 12);
}

/// Thesis §6.4 step 1: "If the leader has not yet marked an entry from its
/// current term committed, it waits until it has done so" — a new leader's
/// commit index may lag its predecessor's. Reads asked for meanwhile are
/// released at the index of its first committed entry, not before.
#[test]
fn a_new_leader_serves_no_read_until_it_commits_an_entry_of_its_term() {
    let mut net = Network::with_config(3, |c| c.check_quorum = false);
    net.elect(1);
    net.fill_to(1, 3);
    // Node 2 wins, but hears no acknowledgement of its first entry.
    net.filter = Some(Box::new(|m| {
        !(m.to == 2 && matches!(m.body, MessageBody::AppendResponse(_)))
    }));
    net.elect(2);
    assert_eq!(net.commit(2), 3);
    net.raw(2).read_index(5).unwrap();
    net.stabilize();
    net.tick(&[2], 2);
    assert!(
        read_states(&net, 2).is_empty(),
        "not before its noop commits"
    );
    assert_eq!(
        net.raft(2).read_only.pending(),
        0,
        "no round started either"
    );
    net.heal();
    net.tick(&[2], 1);
    assert_eq!(net.commit(2), 4, "its noop");
    assert_eq!(read_states(&net, 2), [rs(5, 4)]);
}

/// Thesis §6.4: a follower forwards the read to the leader, which confirms
/// it with a heartbeat round and answers with the read index; the read state
/// appears on the follower, not on the leader.
#[test]
fn a_read_forwarded_by_a_follower_comes_back_as_a_read_state_there() {
    let mut net = stable_cluster(|_| {});
    let commit = net.commit(1);
    net.raw(2).read_index(9).unwrap();
    net.stabilize();
    assert_eq!(heartbeats_from(&net, 1), 2, "confirmed by a round");
    assert_eq!(read_states(&net, 2), [rs(9, commit)]);
    assert!(read_states(&net, 1).is_empty());
}

/// Thesis §6.4: a read needs a leader to confirm it; a node that knows of
/// none refuses it at once, so the caller can retry after an election.
#[test]
fn a_read_without_a_known_leader_is_refused() {
    let mut net = Network::new(3);
    assert_eq!(net.raw(1).read_index(1), Err(ReadIndexError::NoLeader));
    let mut net = in_role(Role::Candidate, |_| {});
    assert_eq!(net.raw(1).read_index(1), Err(ReadIndexError::NoLeader));
}

/// Thesis §6.4: in a cluster of one voter the leader's own confirmation is a
/// quorum: reads are released at once, with no message — learners never
/// count.
#[test]
fn a_single_voter_serves_reads_at_once() {
    let mut net = Network::new(1);
    net.tick(&[1], 2 * election_tick());
    net.add_node(2, &[1], |_| {});
    net.raw(1)
        .propose_conf_change(ConfChange::add_learner(2))
        .unwrap();
    net.stabilize();
    assert_eq!(net.conf(1).learners, [2]);
    let commit = net.commit(1);
    net.raw(1).read_index(4).unwrap();
    let rd = net.ready(1);
    assert_eq!(rd.read_states, [rs(4, commit)]);
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
}

/// Three lease-reading voters led by node 1. (A node in lease mode votes only
/// an election timeout after it starts; let that pass first.)
fn lease_cluster() -> Network {
    let mut net = Network::with_config(3, |c| c.read_mode = ReadMode::Lease);
    for id in [1, 2, 3] {
        net.isolate(id);
    }
    net.tick(&[1, 2, 3], election_tick());
    net.heal();
    net.elect(1);
    net
}

/// Releases a read on node 1 and tells whether it came out at once, in the
/// very next Ready and with no heartbeat round.
fn served_at_once(net: &mut Network, request: u64) -> bool {
    net.raw(1).read_index(request).unwrap();
    let rd = net.ready(1);
    let at_once = rd.read_states.iter().any(|r| r.request == request);
    let round = rd
        .messages
        .iter()
        .any(|m| matches!(&m.body, MessageBody::Heartbeat(h) if h.read_round > 0));
    assert_ne!(at_once, round, "one or the other");
    net.queue.extend(rd.messages);
    net.queue.extend(rd.persisted_messages);
    net.stabilize();
    at_once
}

/// Thesis §6.4.1 (lease reads): once a quorum has answered a heartbeat of the
/// current CheckQuorum period, no other leader can be elected before the
/// period ends, so the leader serves reads at once. Before that — just
/// elected, or in a period no quorum has answered yet — it falls back to a
/// heartbeat round.
#[test]
fn lease_reads_are_served_at_once_only_while_a_quorum_answered_this_period() {
    let mut net = lease_cluster();
    assert!(!served_at_once(&mut net, 1), "just elected: no lease yet");
    net.tick(&[1], election_tick());
    assert!(served_at_once(&mut net, 2), "the lease holds");
    assert!(served_at_once(&mut net, 3));
    // A new period starts while nobody answers: no lease in it.
    net.isolate(2);
    net.isolate(3);
    net.tick(&[1], election_tick());
    assert_eq!(
        net.role(1),
        Role::Leader,
        "CheckQuorum passed for the last period"
    );
    assert!(
        !served_at_once(&mut net, 4),
        "nobody answered in this period"
    );
    assert!(read_states(&net, 1).iter().all(|r| r.request != 4));
}

/// Thesis §6.4.1 with §3.10: TimeoutNow lets the target win an election at
/// once, ignoring the leases voters granted, so from the moment it is sent
/// the leader must not serve lease reads for the rest of its term — even
/// once the transfer was aborted and a quorum answered a newer period.
#[test]
fn after_sending_timeout_now_the_leader_reads_by_heartbeat_round() {
    let mut net = lease_cluster();
    net.tick(&[1], election_tick());
    assert!(served_at_once(&mut net, 1));
    // Node 2 is caught up: TimeoutNow goes out at once, and is lost.
    net.raw(1).transfer_leader(2).unwrap();
    let rd = net.ready(1);
    assert!(rd
        .messages
        .iter()
        .any(|m| m.body == MessageBody::TimeoutNow));
    assert!(!served_at_once(&mut net, 2), "during the transfer");
    net.tick(&[1], election_tick());
    assert_eq!(net.role(1), Role::Leader);
    assert!(net.propose(1, 1).is_ok(), "the transfer was aborted");
    net.stabilize();
    assert!(!served_at_once(&mut net, 3), "the lease stays revoked");
    assert!(read_states(&net, 1).iter().any(|r| r.request == 3));
}

/// Thesis §6.4.1: lease reads rely on leaders stepping down once a quorum
/// stops answering, so the configuration refuses them without CheckQuorum.
#[test]
fn lease_reads_require_check_quorum() {
    let mut config = Config::new(1);
    config.read_mode = ReadMode::Lease;
    config.check_quorum = false;
    assert_eq!(
        config.validate(),
        Err(crate::error::ConfigError::LeaseWithoutCheckQuorum)
    );
    let started = RawNode::new(
        config,
        MemStorage::with_voters(&[1]),
        Box::new(rand::rngs::StdRng::seed_from_u64(1)),
    );
    assert!(matches!(
        started,
        Err(crate::error::ConfigError::LeaseWithoutCheckQuorum)
    ));
}
