//! The metrics that follow the raft node's status: whether a leader is
//! known and whether it is this member, leader changes seen, and the commit
//! and applied indexes (etcd's proposals committed and applied).

use keel_node::{Role, Status};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::{
    HAS_LEADER, IS_LEADER, LEADER_CHANGES, PROPOSALS_APPLIED, PROPOSALS_COMMITTED,
};

/// Runs until the node stops or `stop`.
pub(crate) async fn track_node(mut status: watch::Receiver<Status>, stop: CancellationToken) {
    let mut last_leader = None;
    loop {
        let (running, leader) = {
            let s = status.borrow_and_update();
            metrics::gauge!(HAS_LEADER).set(f64::from(u8::from(s.leader.is_some())));
            metrics::gauge!(IS_LEADER).set(f64::from(u8::from(s.role == Role::Leader)));
            metrics::gauge!(PROPOSALS_COMMITTED).set(s.commit as f64);
            metrics::gauge!(PROPOSALS_APPLIED).set(s.applied as f64);
            (s.running, s.leader)
        };
        if leader.is_some() && leader != last_leader {
            metrics::counter!(LEADER_CHANGES).increment(1);
        }
        if leader.is_some() {
            last_leader = leader;
        }
        if !running {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}
