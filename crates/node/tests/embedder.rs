//! The traps a new embedder fell into, each now closed: honest outcomes
//! for a proposal on a stopping node, a stopped leader that no longer says
//! it leads, a leadership stream that is quiet while commits go on, the
//! one-call start on either transport, members' addresses carried in the
//! replicated membership, initial members read only for a new node, and a
//! data directory two nodes cannot share.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Add, Counters};
use keel_node::{LocalNetwork, NodeConfig, Outcome, ProposeError, RaftNode, Role, StartError};

const PATIENCE: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path, id: u64, members: &BTreeMap<u64, String>) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir.join(id.to_string()));
    config.initial_members = members.clone();
    config.tick_interval = Duration::from_millis(10);
    config
}

/// Three nodes on one in-process network, each started in one call.
fn local_cluster(dir: &std::path::Path) -> (LocalNetwork, Vec<RaftNode<Counters>>) {
    let network = LocalNetwork::new();
    let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
    let nodes = (1..=3)
        .map(|id| {
            RaftNode::start_local(config(dir, id, &members), Counters::default(), &network)
                .expect("starts")
        })
        .collect();
    (network, nodes)
}

/// The node that says it leads. A node's view of the leader can be a term
/// old under a loaded machine (10 ms ticks), so this asks the node itself.
async fn leader_of(nodes: &[RaftNode<Counters>]) -> RaftNode<Counters> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(leader) = nodes.iter().find(|n| n.status().is_leader()) {
            return leader.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        let _ = nodes[0].wait_for_leader(Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A follower of `leader` that has learned who leads.
async fn follower_of(
    nodes: &[RaftNode<Counters>],
    leader: &RaftNode<Counters>,
) -> RaftNode<Counters> {
    let follower = nodes
        .iter()
        .find(|n| n.status().id != leader.status().id)
        .expect("three nodes")
        .clone();
    assert_eq!(
        follower.wait_for_leader(PATIENCE).await,
        Some(leader.status().id)
    );
    follower
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_in_the_log_of_a_stopping_leader_is_indeterminate_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    leader.propose(Add("k".into(), 1)).await.unwrap();
    // The proposal is queued before the stop: it reaches the log (and the
    // followers), then the node stops before it is applied there.
    let proposing = {
        let leader = leader.clone();
        tokio::spawn(async move { leader.propose(Add("k".into(), 10)).await })
    };
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    leader.stop().await;
    match proposing.await.unwrap() {
        // It was applied before the stop took effect: fine.
        Ok(total) => assert_eq!(total, 11),
        Err(e) => {
            assert_eq!(e, ProposeError::Indeterminate, "{e}");
            assert_eq!(e.outcome(), Outcome::Unknown);
        }
    }
    // A proposal made after the stop never reaches any log.
    let after = leader.propose(Add("k".into(), 100)).await.unwrap_err();
    assert_eq!(after, ProposeError::Stopped);
    assert_eq!(after.outcome(), Outcome::NotApplied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_no_longer_reports_leading() {
    let dir = tempfile::tempdir().unwrap();
    let (_network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    leader.stop().await;
    let status = leader.status();
    assert!(!status.running);
    assert_ne!(status.role, Role::Leader);
    assert_eq!(status.leader, None);
    assert!(!status.is_leader());
    let leadership = *leader.leadership().borrow();
    assert!(!leadership.running && leadership.leader.is_none());
    // The others elect a new leader among themselves.
    let survivors: Vec<_> = nodes
        .iter()
        .filter(|n| n.status().id != leader.status().id)
        .cloned()
        .collect();
    let mut next = survivors[0].wait_for_leader(PATIENCE).await;
    for _ in 0..500 {
        if next.is_some_and(|id| id != leader.status().id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        next = survivors[0].status().leader;
    }
    assert!(next.is_some_and(|id| id != leader.status().id), "{next:?}");
    for node in &nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leadership_stream_is_quiet_while_commits_go_on_and_tells_of_a_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (_network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    let follower = follower_of(&nodes, &leader).await;
    let mut leadership = follower.leadership();
    leadership.borrow_and_update();
    let mut status = follower.watch();
    status.borrow_and_update();
    for _ in 0..20 {
        leader.propose(Add("k".into(), 1)).await.unwrap();
    }
    follower.read(|_| ()).await.unwrap();
    assert!(status.has_changed().unwrap(), "status changes with commits");
    assert!(
        !leadership.has_changed().unwrap(),
        "leadership did not change: {:?}",
        *leadership.borrow()
    );
    let target = follower.status().id;
    leader.transfer_leader(target).await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        leadership.wait_for(|l| l.role == Role::Leader && l.leader == Some(target)),
    )
    .await
    .expect("the transfer is told")
    .unwrap();
    for node in &nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_grpc_nodes_start_in_one_call_each_and_stop_freeing_their_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        members.insert(id, l.local_addr().unwrap().to_string());
    }
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let node = RaftNode::start_grpc(
            config(dir.path(), id, &members),
            Counters::default(),
            7,
            &members[&id],
        )
        .await
        .expect("starts");
        nodes.push(node);
    }
    let leader = leader_of(&nodes).await;
    assert_eq!(leader.propose(Add("g".into(), 2)).await.unwrap(), 2);
    // A second node on a taken port is refused at once.
    let mut busy = config(dir.path(), 9, &BTreeMap::new());
    busy.data_dir = dir.path().join("busy");
    let taken = RaftNode::start_grpc(busy, Counters::default(), 7, &members[&1]).await;
    assert!(
        matches!(taken, Err(StartError::Bind(..))),
        "{:?}",
        taken.err()
    );
    for node in &nodes {
        node.stop().await;
    }
    for address in members.values() {
        std::net::TcpListener::bind(address).expect("the port is free after stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_members_are_read_only_for_a_new_node() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::new();
    let alone: BTreeMap<u64, String> = [(1, "node-1".to_string())].into();
    // A new node must be among the initial members.
    let others: BTreeMap<u64, String> = [(2, "node-2".to_string())].into();
    let refused = RaftNode::start_local(
        config(dir.path(), 1, &others),
        Counters::default(),
        &network,
    );
    assert!(
        matches!(&refused, Err(StartError::Config(why)) if why.contains("does not include this node")),
        "{:?}",
        refused.err()
    );
    let node = RaftNode::start_local(config(dir.path(), 1, &alone), Counters::default(), &network)
        .expect("starts");
    node.wait_for_leader(PATIENCE).await.expect("leads itself");
    assert_eq!(node.propose(Add("x".into(), 5)).await.unwrap(), 5);
    node.stop().await;
    // Restarted with whatever initial members: its state decides.
    let node = RaftNode::start_local(
        config(dir.path(), 1, &others),
        Counters::default(),
        &network,
    )
    .expect("a restart ignores initial_members");
    node.wait_for_leader(PATIENCE).await.expect("leads itself");
    assert_eq!(node.propose(Add("x".into(), 1)).await.unwrap(), 6);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_cannot_share_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::new();
    let alone: BTreeMap<u64, String> = [(1, "node-1".to_string())].into();
    let first = RaftNode::start_local(config(dir.path(), 1, &alone), Counters::default(), &network)
        .expect("starts");
    let second = RaftNode::start(
        config(dir.path(), 1, &alone),
        Counters::default(),
        network.transport(1),
    );
    match second {
        Err(StartError::Locked(path)) => assert_eq!(path, dir.path().join("1")),
        other => panic!("a second node on a live directory: {:?}", other.err()),
    }
    first.stop().await;
    let again = RaftNode::start_local(config(dir.path(), 1, &alone), Counters::default(), &network)
        .expect("the directory is free once the first node stopped");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_voter_joins_in_one_call_even_on_a_leader_elected_a_moment_ago() {
    let dir = tempfile::tempdir().unwrap();
    let (network, mut nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    leader.propose(Add("k".into(), 1)).await.unwrap();
    // A fresh node: no initial members, it joins.
    let joining = RaftNode::start_local(
        config(dir.path(), 4, &BTreeMap::new()),
        Counters::default(),
        &network,
    )
    .expect("starts");
    nodes.push(joining.clone());
    // Leadership moves, and the new leader is asked at once, before the
    // first entry of its term is applied.
    let next = nodes
        .iter()
        .find(|n| n.status().id != leader.status().id && n.status().id != 4)
        .unwrap()
        .clone();
    leader.transfer_leader(next.status().id).await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        next.leadership().wait_for(|l| l.role == Role::Leader),
    )
    .await
    .unwrap()
    .unwrap();
    let conf = next
        .add_voter(4, "node-4", PATIENCE)
        .await
        .expect("joins as a voter");
    assert!(conf.voters.contains(&4), "{conf:?}");
    // It has the log, and votes.
    assert_eq!(
        joining.read(|c| c.0.get("k").copied()).await.unwrap(),
        Some(1)
    );
    for node in &nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_later_is_reachable_by_all_through_the_address_in_the_membership() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = BTreeMap::new();
    for id in 1..=4u64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        members.insert(id, l.local_addr().unwrap().to_string());
    }
    let initial: BTreeMap<u64, String> =
        members.range(1..=3).map(|(i, a)| (*i, a.clone())).collect();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let mut c = config(dir.path(), id, &initial);
        c.snapshot_threshold = 5;
        nodes.push(
            RaftNode::start_grpc(c, Counters::default(), 7, &members[&id])
                .await
                .expect("starts"),
        );
    }
    let leader = leader_of(&nodes).await;
    for _ in 0..12 {
        leader.propose(Add("k".into(), 1)).await.unwrap();
    }
    // Node 4 knows nobody; nobody's transport knows node 4. Adding it with
    // its address is all it takes: the members learn the address from the
    // change, node 4 learns theirs from the log (or snapshot) it receives.
    let mut c = config(dir.path(), 4, &BTreeMap::new());
    c.snapshot_threshold = 5;
    let joining = RaftNode::start_grpc(c, Counters::default(), 7, &members[&4])
        .await
        .expect("starts");
    leader
        .add_voter(4, members[&4].clone(), PATIENCE)
        .await
        .expect("joins as a voter");
    nodes.push(joining.clone());
    for node in &nodes {
        for (id, address) in &members {
            let mut known = node.address_of(*id);
            for _ in 0..500 {
                if known.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                known = node.address_of(*id);
            }
            assert_eq!(
                known.as_ref(),
                Some(address),
                "node {} on {id}",
                node.status().id
            );
        }
    }
    // The newcomer leads: it reaches every member, they reach it. (Once it
    // knows it votes: a learner ignores the leader's TimeoutNow.)
    let mut status = joining.watch();
    tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| s.conf_state.voters.contains(&4)),
    )
    .await
    .expect("node 4 applies its promotion")
    .unwrap();
    leader.transfer_leader(4).await.unwrap();
    let mut leadership = joining.leadership();
    tokio::time::timeout(PATIENCE, leadership.wait_for(|l| l.role == Role::Leader))
        .await
        .expect("node 4 leads")
        .unwrap();
    assert_eq!(joining.propose(Add("k".into(), 1)).await.unwrap(), 13);
    // A follower passes its proposal on to the new leader, at the address
    // it learned from the membership.
    assert_eq!(leader.propose(Add("k".into(), 1)).await.unwrap(), 14);
    // A restart keeps the book (from the snapshot and the log).
    let first = nodes[0].clone();
    first.stop().await;
    let mut c = config(dir.path(), 1, &BTreeMap::new());
    c.forward_proposals = false;
    let restarted = RaftNode::start_grpc(c, Counters::default(), 7, &members[&1])
        .await
        .expect("restarts");
    for (id, address) in &members {
        let mut known = restarted.address_of(*id);
        for _ in 0..500 {
            if known.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            known = restarted.address_of(*id);
        }
        assert_eq!(known.as_ref(), Some(address), "restarted, on {id}");
    }
    // Not passing proposals on, it names the leader and its address.
    assert_eq!(restarted.wait_for_leader(PATIENCE).await, Some(4));
    match restarted.propose(Add("k".into(), 1)).await {
        Err(ProposeError::NotLeader {
            leader: Some(4),
            address,
        }) => {
            assert_eq!(address.as_ref(), Some(&members[&4]))
        }
        other => panic!("{other:?}"),
    }
    restarted.stop().await;
    for node in &nodes[1..] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_added_and_waited_for_until_it_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let (network, mut nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    for _ in 0..50 {
        leader.propose(Add("k".into(), 1)).await.unwrap();
    }
    let follower = nodes
        .iter()
        .find(|n| n.status().id != leader.status().id)
        .unwrap();
    assert_eq!(follower.replication().await, None, "only the leader knows");
    let learner = RaftNode::start_local(
        config(dir.path(), 4, &BTreeMap::new()),
        Counters::default(),
        &network,
    )
    .expect("starts");
    nodes.push(learner.clone());
    let conf = leader
        .add_learner_caught_up(4, "node-4", PATIENCE)
        .await
        .expect("caught up");
    assert!(
        conf.learners.contains(&4) && !conf.voters.contains(&4),
        "{conf:?}"
    );
    let replication = leader.replication().await.expect("the leader knows");
    assert!(replication.matched[&4] > 50, "{replication:?}");
    assert_eq!(
        learner.read(|c| c.0.get("k").copied()).await.unwrap(),
        Some(50)
    );
    for node in &nodes {
        node.stop().await;
    }
}

/// Proposals made on followers reach the leader through the transport and
/// are answered with the follower's own response, each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_pass_proposals_on_to_the_leader_each_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    let followers: Vec<_> = nodes
        .iter()
        .filter(|n| n.status().id != leader.status().id)
        .cloned()
        .collect();
    let mut proposals = Vec::new();
    for i in 0..50 {
        let node = followers[i % 2].clone();
        proposals.push(tokio::spawn(async move {
            node.propose(Add("k".into(), 1)).await
        }));
    }
    let mut totals = Vec::new();
    for p in proposals {
        totals.push(p.await.unwrap().expect("applied"));
    }
    totals.sort();
    assert_eq!(totals, (1..=50).collect::<Vec<u64>>(), "each applied once");
    for node in &nodes {
        let read = node.read(|c| c.0.get("k").copied()).await.unwrap();
        assert_eq!(read, Some(50));
    }
    for node in &nodes {
        node.stop().await;
    }
}

/// A proposal made before any leader is elected waits for one (a bounded
/// number of retries) and goes through; with no retries it is refused at
/// once, as never applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_before_the_first_election_waits_for_a_leader_within_its_retries() {
    let dir = tempfile::tempdir().unwrap();
    let network = LocalNetwork::new();
    let members: BTreeMap<u64, String> = (1..=3).map(|id| (id, format!("node-{id}"))).collect();
    let nodes: Vec<RaftNode<Counters>> = (1..=3)
        .map(|id| {
            let mut c = config(dir.path(), id, &members);
            if id == 1 {
                c.propose_retries = 0;
            }
            RaftNode::start_local(c, Counters::default(), &network).expect("starts")
        })
        .collect();
    // No leader yet: elections take at least an election timeout.
    let refused = nodes[0].propose(Add("k".into(), 1)).await.unwrap_err();
    assert_eq!(
        refused,
        ProposeError::NotLeader {
            leader: None,
            address: None
        }
    );
    assert_eq!(refused.outcome(), Outcome::NotApplied);
    assert_eq!(nodes[1].propose(Add("k".into(), 1)).await, Ok(1));
    for node in &nodes {
        node.stop().await;
    }
}

/// The leader's answer to a forwarded proposal is lost: the follower
/// cannot know whether it was appended, and says so. It was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_proposal_whose_answer_is_lost_is_indeterminate_never_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    let follower = follower_of(&nodes, &leader).await;
    network.cut_one_way(leader.status().id, follower.status().id);
    let outcome = follower.propose(Add("k".into(), 7)).await.unwrap_err();
    assert_eq!(outcome, ProposeError::Indeterminate);
    assert_eq!(outcome.outcome(), Outcome::Unknown);
    let read = leader.read(|c| c.0.get("k").copied()).await.unwrap();
    assert_eq!(read, Some(7), "it was applied all the same");
    network.heal();
    for node in &nodes {
        node.stop().await;
    }
}

/// Once a membership change is answered, `status()` shows it: a caller
/// that lists the members right after adding one finds it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_is_in_the_status_once_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (_network, nodes) = local_cluster(dir.path());
    let leader = leader_of(&nodes).await;
    for id in 10..60 {
        let answered = leader
            .add_learner(id, format!("node-{id}"))
            .await
            .expect("added");
        assert!(answered.learners.contains(&id), "{answered:?}");
        let shown = leader.status().conf_state;
        assert!(
            shown.learners.contains(&id),
            "learner {id} was answered as added but the status shows {shown:?}"
        );
    }
    for node in &nodes {
        node.stop().await;
    }
}
