//! The store as keel-node's state machine: each Ready's committed commands
//! go to keel-mvcc as one write batch; once it is committed, its events go
//! to the [`EventSink`]s (the watch hub's seam), member records keep the
//! peer addresses current, and lease grants, renewals and ends set this
//! member's [`LeaseClock`] as they are applied.

use std::io::{self, Read, Write};
use std::sync::Arc;

use keel_api::keelpb::command::Op;
use keel_api::mvccpb::Event;
use keel_mvcc::{Command, MvccError, Store, StoreView, WriteResponse};
use keel_node::{Index, StateMachine};

use crate::cluster::Peers;
use crate::leases::LeaseClock;

/// Told of every change to the key space, batch by batch, in revision
/// order, after the batch and its applied index are committed to the store
/// (so a reader told of an event finds it in the store). Called on the
/// apply path: it must not block.
pub(crate) trait EventSink: Send + Sync {
    /// The events of one applied batch (never empty).
    fn publish(&self, events: &[Event]);

    /// The store was replaced by a snapshot: changes since the last batch
    /// published were not (and will not be) told.
    fn restored(&self);
}

/// keel's replicated state machine: a [`Store`], the peer address book it
/// keeps up to date, and who is told of changes.
pub(crate) struct MvccStateMachine {
    store: Store,
    peers: Peers,
    sinks: Vec<Arc<dyn EventSink>>,
    leases: LeaseClock,
}

impl MvccStateMachine {
    /// Applies to `store`; member records update `peers`; every batch's
    /// events go to each of `sinks`; lease changes set `leases` (which
    /// starts from the store's leases, each with its full TTL from now).
    pub(crate) fn new(
        store: Store,
        peers: Peers,
        sinks: Vec<Arc<dyn EventSink>>,
        leases: LeaseClock,
    ) -> Self {
        leases.reset(store.leases(), leases.now());
        MvccStateMachine {
            store,
            peers,
            sinks,
            leases,
        }
    }

    /// Sets the lease clock for the leases the batch's successful commands
    /// touched (one list per command, as `responses`).
    fn clock_leases(
        &self,
        touched: Vec<Vec<(i64, bool)>>,
        responses: &[Result<WriteResponse, MvccError>],
    ) {
        let now = self.leases.now();
        for (leases, response) in touched.into_iter().zip(responses) {
            if !matches!(response, Ok(r) if *r != WriteResponse::AlreadyApplied) {
                continue;
            }
            for (id, renewed) in leases {
                match self.store.lease(id) {
                    Some(lease) if renewed => self.leases.renewed(id, lease, now),
                    Some(_) => {}
                    None => self.leases.ended(id),
                }
            }
        }
    }
}

/// The leases a command grants or renews (`true`) or may end (`false`).
fn leases_touched(command: &Command) -> Vec<(i64, bool)> {
    match &command.0.op {
        Some(Op::LeaseGrant(grant)) => vec![(grant.id, true)],
        Some(Op::LeaseRenew(renew)) => renew.ids.iter().map(|id| (*id, true)).collect(),
        Some(Op::LeaseRevoke(revoke)) => vec![(revoke.id, false)],
        Some(Op::LeaseExpire(expire)) => vec![(expire.id, false)],
        _ => Vec::new(),
    }
}

impl StateMachine for MvccStateMachine {
    type Command = Command;
    type Response = Result<WriteResponse, MvccError>;
    type Snapshot = StoreView;

    fn apply(&mut self, index: Index, command: Command) -> Self::Response {
        self.apply_batch(vec![(index, command)])
            .pop()
            .unwrap_or(Err(MvccError::Storage("no response from the store".into())))
    }

    fn apply_batch(&mut self, commands: Vec<(Index, Command)>) -> Vec<Self::Response> {
        let members_changed = commands
            .iter()
            .any(|(_, c)| matches!(c.0.op, Some(Op::SetMember(_)) | Some(Op::RemoveMember(_))));
        let touched: Vec<Vec<(i64, bool)>> =
            commands.iter().map(|(_, c)| leases_touched(c)).collect();
        let any_lease = touched.iter().any(|t| !t.is_empty());
        let applied = self.store.apply_batch(commands);
        if any_lease {
            self.clock_leases(touched, &applied.responses);
        }
        if !applied.events.is_empty() {
            for sink in &self.sinks {
                sink.publish(&applied.events);
            }
        }
        if members_changed {
            self.peers.update(&self.store.members());
        }
        applied.responses
    }

    fn snapshot(&self) -> StoreView {
        self.store.view()
    }

    fn write_snapshot(view: StoreView, out: &mut dyn Write) -> io::Result<()> {
        Store::write_snapshot(view, out)
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), String> {
        self.store.restore(snapshot).map_err(|e| e.to_string())?;
        self.leases.reset(self.store.leases(), self.leases.now());
        for sink in &self.sinks {
            sink.restored();
        }
        self.peers.update(&self.store.members());
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.store.applied_index()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use bytes::Bytes;
    use keel_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
    use keel_api::keelpb;
    use keel_mvcc::StoreOptions;
    use keel_node::GrpcTransport;

    use super::*;

    /// Records what it is told, and what the store held when it was told.
    struct Recorder {
        store: Store,
        seen: Mutex<Vec<(Vec<Event>, i64)>>,
    }

    impl EventSink for Recorder {
        fn publish(&self, events: &[Event]) {
            let held = self.store.revision();
            self.seen.lock().unwrap().push((events.to_vec(), held));
        }

        fn restored(&self) {}
    }

    fn command(op: Op) -> Command {
        Command(keelpb::Command {
            op: Some(op),
            auth: None,
        })
    }

    #[tokio::test]
    async fn each_batch_is_published_once_committed_and_failed_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let recorder = Arc::new(Recorder {
            store: store.clone(),
            seen: Mutex::default(),
        });
        let peers = Peers::new(
            GrpcTransport::new(1, BTreeMap::new()),
            crate::tls::Dialer::default(),
            BTreeMap::new(),
        );
        let mut sm = MvccStateMachine::new(
            store.clone(),
            peers,
            vec![recorder.clone()],
            LeaseClock::default(),
        );
        let put = |key: &'static [u8]| {
            command(Op::Put(PutRequest {
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            }))
        };
        let responses = sm.apply_batch(vec![(1, put(b"a")), (2, put(b"b"))]);
        assert!(responses.iter().all(Result::is_ok));
        // A batch that changes nothing is not published.
        let nothing = command(Op::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"missing"),
            ..Default::default()
        }));
        sm.apply_batch(vec![(3, nothing)]);
        sm.apply_batch(vec![(4, put(b"a"))]);

        let seen = recorder.seen.lock().unwrap().clone();
        let revisions: Vec<(Vec<i64>, i64)> = seen
            .iter()
            .map(|(events, held)| {
                let revisions = events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision)
                    .collect();
                (revisions, *held)
            })
            .collect();
        // Told after the store holds the batch: its revision is the last event's.
        assert_eq!(revisions, vec![(vec![2, 3], 3), (vec![4], 4)]);
        let a = store
            .range(&RangeRequest {
                key: Bytes::from_static(b"a"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(seen[1].0[0].kv.as_ref(), a.kvs.first());
    }
}
