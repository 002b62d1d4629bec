//! Leases in the store: granting, attaching keys (in puts and txns),
//! detaching, renewing, revoking and expiring, and what snapshots and
//! reopening keep.

use bytes::Bytes;
use keel_api::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use keel_api::keelpb::{self, command::Op, LeaseExpire, LeaseRenew};
use keel_api::mvccpb::event::EventType;
use keel_mvcc::{Command, Lease, MvccError, Store, StoreOptions, WriteResponse};

mod common;
use common::Harness;

impl Harness {
    fn grant(&mut self, id: i64, ttl: i64) -> Result<WriteResponse, MvccError> {
        self.apply(Op::LeaseGrant(LeaseGrantRequest { ttl, id }))
    }

    fn put(&mut self, key: &str, lease: i64) -> Result<WriteResponse, MvccError> {
        self.apply(Op::Put(put(key, lease)))
    }

    fn lease_of(&self, key: &str) -> Option<i64> {
        self.store
            .range(&RangeRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                ..Default::default()
            })
            .unwrap()
            .kvs
            .first()
            .map(|kv| kv.lease)
    }
}

fn put(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        lease,
        ..Default::default()
    }
}

fn keys(store: &Store, id: i64) -> Vec<String> {
    store
        .lease_keys(id)
        .unwrap()
        .into_iter()
        .map(|k| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

#[test]
fn keys_attach_and_detach_and_revoking_deletes_them_at_one_revision() {
    let mut h = Harness::new();
    h.grant(7, 60).unwrap();
    assert_eq!(h.grant(7, 30), Err(MvccError::LeaseExists));
    assert_eq!(
        h.store.lease(7),
        Some(Lease {
            ttl: 60,
            renewals: 0
        })
    );
    assert_eq!(h.put("a", 8), Err(MvccError::LeaseNotFound));
    h.put("a", 7).unwrap();
    h.put("b", 7).unwrap();
    h.put("c", 7).unwrap();
    // In a txn too.
    h.apply(Op::Txn(TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put("d", 7))),
        }],
        ..Default::default()
    }))
    .unwrap();
    // Put again without a lease: detached. ignore_lease keeps it.
    h.put("c", 0).unwrap();
    h.apply(Op::Put(PutRequest {
        ignore_lease: true,
        ..put("b", 0)
    }))
    .unwrap();
    assert_eq!(h.lease_of("b"), Some(7));
    assert_eq!(h.lease_of("c"), Some(0));
    // A deleted key leaves the lease.
    h.apply(Op::DeleteRange(DeleteRangeRequest {
        key: Bytes::from_static(b"d"),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(keys(&h.store, 7), ["a", "b"]);

    let revision = h.store.revision();
    let index = h.index + 1;
    h.index = index;
    let applied = h.store.apply_batch(vec![(
        index,
        Command(keelpb::Command {
            op: Some(Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
            auth: None,
        }),
    )]);
    assert!(matches!(
        applied.responses[0],
        Ok(WriteResponse::LeaseRevoke(_))
    ));
    assert_eq!(h.store.revision(), revision + 1, "one revision for all");
    let deleted: Vec<_> = applied
        .events
        .iter()
        .map(|e| {
            assert_eq!(e.r#type, EventType::Delete as i32);
            assert_eq!(e.kv.as_ref().unwrap().mod_revision, revision + 1);
            String::from_utf8(e.kv.as_ref().unwrap().key.to_vec()).unwrap()
        })
        .collect();
    assert_eq!(deleted, ["a", "b"]);
    assert_eq!(h.lease_of("a"), None);
    assert_eq!(h.lease_of("c"), Some(0), "a detached key stays");
    assert_eq!(h.store.lease(7), None);
    assert!(keys(&h.store, 7).is_empty());
    assert_eq!(
        h.apply(Op::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        Err(MvccError::LeaseNotFound)
    );
    assert_eq!(h.put("e", 7), Err(MvccError::LeaseNotFound));
}

#[test]
fn an_expiry_decided_before_a_renewal_does_not_take_the_lease() {
    let mut h = Harness::new();
    h.grant(5, 10).unwrap();
    h.put("k", 5).unwrap();
    assert_eq!(
        h.apply(Op::LeaseRenew(LeaseRenew { ids: vec![5, 6] })),
        Ok(WriteResponse::LeaseRenew(vec![10, 0]))
    );
    assert_eq!(h.store.lease(5).unwrap().renewals, 1);
    // The leader looked when it had seen no renewal: too late.
    assert_eq!(
        h.apply(Op::LeaseExpire(LeaseExpire { id: 5, renewals: 0 })),
        Ok(WriteResponse::LeaseExpire(false))
    );
    assert_eq!(h.lease_of("k"), Some(5));
    assert_eq!(
        h.apply(Op::LeaseExpire(LeaseExpire { id: 5, renewals: 1 })),
        Ok(WriteResponse::LeaseExpire(true))
    );
    assert_eq!(h.lease_of("k"), None);
    assert_eq!(h.store.lease(5), None);
}

#[test]
fn a_batch_that_grants_attaches_and_revokes_sees_its_own_writes() {
    let h = Harness::new();
    let commands = [
        Op::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 9 }),
        Op::Put(put("x", 9)),
        Op::Put(put("y", 9)),
        Op::LeaseRevoke(LeaseRevokeRequest { id: 9 }),
        Op::Put(put("z", 9)),
    ]
    .into_iter()
    .zip(1..)
    .map(|(op, i)| {
        (
            i,
            Command(keelpb::Command {
                op: Some(op),
                auth: None,
            }),
        )
    })
    .collect();
    let applied = h.store.apply_batch(commands);
    assert_eq!(applied.responses[4], Err(MvccError::LeaseNotFound));
    assert_eq!(applied.events.len(), 4, "two puts, two deletes");
    assert!(h.store.lease(9).is_none());
    assert!(keys(&h.store, 9).is_empty());
}

#[test]
fn leases_and_attachments_survive_snapshots_and_reopening() {
    let mut h = Harness::new();
    h.grant(1, 60).unwrap();
    h.grant(2, 90).unwrap();
    h.put("one", 1).unwrap();
    h.put("two", 2).unwrap();
    h.apply(Op::LeaseRenew(LeaseRenew { ids: vec![2] }))
        .unwrap();
    let mut stream = Vec::new();
    Store::write_snapshot(h.store.view(), &mut stream).unwrap();
    let copy = Harness::new();
    copy.store.restore(&mut stream.as_slice()).unwrap();
    for store in [&h.store, &copy.store] {
        assert_eq!(
            store.leases(),
            vec![
                (
                    1,
                    Lease {
                        ttl: 60,
                        renewals: 0
                    }
                ),
                (
                    2,
                    Lease {
                        ttl: 90,
                        renewals: 1
                    }
                )
            ]
        );
        assert_eq!(keys(store, 1), ["one"]);
        assert_eq!(keys(store, 2), ["two"]);
    }
    let dir = h.dir;
    drop(h.store);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.leases().len(), 2);
    assert_eq!(keys(&store, 2), ["two"]);
}
