//! etcd's Lock and Election services on real members: waiters are served
//! in order, a holder whose lease ends loses the lock or leadership to the
//! next, observers see every leader, and bad requests get clear errors.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use keel_api::etcdserverpb::lease_client::LeaseClient;
use keel_api::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
use keel_api::v3electionpb::election_client::ElectionClient;
use keel_api::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use keel_api::v3lockpb::lock_client::LockClient;
use keel_api::v3lockpb::{LockRequest, UnlockRequest};

async fn grant(cluster: &Cluster, i: usize, ttl: i64) -> i64 {
    LeaseClient::new(cluster.channel(i).await)
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id
}

async fn revoke(cluster: &Cluster, i: usize, id: i64) {
    LeaseClient::new(cluster.channel(i).await)
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("revoke");
}

/// Waits until `n` keys (holder and waiters) are under the lock `jobs`.
async fn waiting(cluster: &Cluster, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys = common::read_prefix(cluster, 0, "jobs/", false)
            .await
            .map_or(0, |r| r.kvs.len());
        if keys == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{keys} of {n} waiters"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_go_to_waiters_in_order_and_end_with_the_holders_lease() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let leases = [
        grant(&cluster, leader, 30).await,
        grant(&cluster, follower, 30).await,
        grant(&cluster, follower, 30).await,
    ];
    let name = Bytes::from_static(b"jobs");
    let mut first = LockClient::new(cluster.channel(leader).await);
    let held = first
        .lock(LockRequest {
            name: name.clone(),
            lease: leases[0],
        })
        .await
        .expect("the free lock")
        .into_inner();
    assert_eq!(held.key, format!("jobs/{:x}", leases[0]));

    // Two waiters through a follower, the second queued after the first.
    let channel = cluster.channel(follower).await;
    let waiter = |lease: i64| {
        let (channel, name) = (channel.clone(), name.clone());
        async move {
            let mut client = LockClient::new(channel);
            client.lock(LockRequest { name, lease }).await
        }
    };
    let second = tokio::spawn(waiter(leases[1]));
    waiting(&cluster, 2).await;
    let third = tokio::spawn(waiter(leases[2]));
    waiting(&cluster, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished() && !third.is_finished(),
        "the lock is held"
    );

    // The holder's lease ends: the next waiter, and only it, gets the lock.
    revoke(&cluster, leader, leases[0]).await;
    let got = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second waiter never got the lock")
        .unwrap()
        .expect("lock")
        .into_inner();
    assert_eq!(got.key, format!("jobs/{:x}", leases[1]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "two holders at once");

    // Unlocking hands it on.
    first
        .unlock(UnlockRequest { key: got.key })
        .await
        .expect("unlock");
    let got = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the third waiter never got the lock")
        .unwrap()
        .expect("lock")
        .into_inner();
    assert_eq!(got.key, format!("jobs/{:x}", leases[2]));

    // A lock with a lease that does not exist.
    let status = first
        .lock(LockRequest { name, lease: 12345 })
        .await
        .expect_err("an unknown lease");
    assert_eq!(status.message(), "etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_elect_in_order_proclaim_observe_and_resign() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_for_leader().await;
    let member = (leader + 1) % 3;
    let mut election = ElectionClient::new(cluster.channel(member).await);
    let name = Bytes::from_static(b"controller");

    let status = election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .expect_err("nobody leads yet");
    assert_eq!(status.message(), "election: no leader");
    let status = election
        .campaign(CampaignRequest {
            name: Bytes::new(),
            lease: 1,
            value: Bytes::new(),
        })
        .await
        .expect_err("an empty name");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let mut observer = election
        .observe(LeaderRequest { name: name.clone() })
        .await
        .expect("observe")
        .into_inner();

    let alice = grant(&cluster, member, 30).await;
    let bob = grant(&cluster, member, 30).await;
    let elected = election
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: alice,
            value: Bytes::from_static(b"alice"),
        })
        .await
        .expect("campaign")
        .into_inner()
        .leader
        .unwrap();
    // Each change reaches the observer, in order.
    let mut next_seen = async || -> Bytes {
        tokio::time::timeout(Duration::from_secs(10), observer.message())
            .await
            .expect("the observer saw no change")
            .expect("observe")
            .expect("observe")
            .kv
            .unwrap()
            .value
    };
    assert_eq!(next_seen().await, "alice");
    let channel = cluster.channel(leader).await;
    let bob_campaign = tokio::spawn({
        let name = name.clone();
        async move {
            ElectionClient::new(channel)
                .campaign(CampaignRequest {
                    name,
                    lease: bob,
                    value: Bytes::from_static(b"bob"),
                })
                .await
        }
    });
    election
        .proclaim(ProclaimRequest {
            leader: Some(elected.clone()),
            value: Bytes::from_static(b"alice, again"),
        })
        .await
        .expect("proclaim");
    let now = election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .expect("leader")
        .into_inner();
    assert_eq!(now.kv.unwrap().value, "alice, again");
    assert_eq!(next_seen().await, "alice, again");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bob_campaign.is_finished(), "two leaders");

    election
        .resign(ResignRequest {
            leader: Some(elected.clone()),
        })
        .await
        .expect("resign");
    let bob_leads = tokio::time::timeout(Duration::from_secs(10), bob_campaign)
        .await
        .expect("bob was never elected")
        .unwrap()
        .expect("campaign")
        .into_inner();
    assert_eq!(bob_leads.leader.unwrap().lease, bob);
    assert_eq!(next_seen().await, "bob");
    // A resigned leader cannot proclaim.
    let status = election
        .proclaim(ProclaimRequest {
            leader: Some(elected),
            value: Bytes::from_static(b"still me"),
        })
        .await
        .expect_err("no longer the leader");
    assert_eq!(status.message(), "election: not leader");
}
