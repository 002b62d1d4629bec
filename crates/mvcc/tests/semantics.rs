//! Deterministic tests of keel-mvcc against etcd 3.4's key-value semantics.
//!
//! Each test opens a fresh store in a temporary directory, applies commands
//! through [`Store::apply_batch`] as the raft apply loop would (with an
//! increasing log index), and checks what etcd 3.4 would answer: revisions
//! and key versions, range reads (forms, limits, counts, sorting, filters,
//! past revisions), puts, deletes, transactions (compares, branches, nested
//! transactions), compaction, the NOSPACE alarm, member records, durability
//! across reopening, log replay, snapshots, the KV hash, and the request
//! validation the server runs before proposing.

use bytes::Bytes;
use keel_api::etcdserverpb::{
    alarm_request::AlarmAction,
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, LeaseGrantRequest, Member, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use keel_api::keelpb::{self, command::Op};
use keel_api::mvccpb::KeyValue;
use keel_mvcc::{validate, Command, MvccError, Store, StoreOptions, WriteResponse};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Harness and request builders
// ---------------------------------------------------------------------------

/// A store in a temporary directory plus the raft index of the last command
/// handed to it.
struct Harness {
    store: Store,
    index: u64,
    dir: TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("opening the store");
        Harness {
            store,
            index: 0,
            dir,
        }
    }

    /// Drops the store and opens it again from its directory.
    fn reopen(self) -> Harness {
        let Harness { store, index, dir } = self;
        drop(store);
        let store = Store::open(dir.path(), StoreOptions::default()).expect("reopening the store");
        Harness { store, index, dir }
    }

    /// Applies `ops` as one batch at the next log indexes.
    fn batch(&mut self, ops: Vec<Op>) -> Vec<Result<WriteResponse, MvccError>> {
        let commands: Vec<(u64, Command)> = ops
            .into_iter()
            .map(|op| {
                self.index += 1;
                (self.index, cmd(op))
            })
            .collect();
        let n = commands.len();
        let results = self.store.apply_batch(commands).responses;
        assert_eq!(results.len(), n, "one result per command");
        results
    }

    fn apply(&mut self, op: Op) -> Result<WriteResponse, MvccError> {
        self.batch(vec![op]).pop().unwrap()
    }

    fn try_put(&mut self, request: PutRequest) -> Result<PutResponse, MvccError> {
        match self.apply(Op::Put(request))? {
            WriteResponse::Put(r) => Ok(r),
            other => panic!("a put answered {other:?}"),
        }
    }

    fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.try_put(put(key, value))
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
    }

    fn try_delete(
        &mut self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        match self.apply(Op::DeleteRange(request))? {
            WriteResponse::DeleteRange(r) => Ok(r),
            other => panic!("a delete answered {other:?}"),
        }
    }

    fn delete(&mut self, key: &str, end: &str) -> DeleteRangeResponse {
        self.try_delete(delete(key, end))
            .unwrap_or_else(|e| panic!("delete {key:?}..{end:?}: {e:?}"))
    }

    fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, MvccError> {
        match self.apply(Op::Txn(request))? {
            WriteResponse::Txn(r) => Ok(r),
            other => panic!("a txn answered {other:?}"),
        }
    }

    fn compact(&mut self, revision: i64) -> Result<(), MvccError> {
        match self.apply(Op::Compact(CompactionRequest {
            revision,
            physical: false,
        }))? {
            WriteResponse::Compact(_) => Ok(()),
            other => panic!("a compaction answered {other:?}"),
        }
    }

    fn alarm(&mut self, action: AlarmAction, member_id: u64, alarm: AlarmType) -> Vec<AlarmMember> {
        match self.apply(Op::Alarm(AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        })) {
            Ok(WriteResponse::Alarm(r)) => r.alarms,
            other => panic!("an alarm request answered {other:?}"),
        }
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(request)
    }

    /// The live version of `key` now.
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.get_at(key, 0)
    }

    fn get_at(&self, key: &str, revision: i64) -> Option<KeyValue> {
        let mut r = self
            .range(&RangeRequest {
                revision,
                ..range(key, "")
            })
            .expect("reading one key");
        assert!(r.kvs.len() <= 1, "one key read returned {:?}", r.kvs);
        r.kvs.pop()
    }

    /// The keys a range returns, in order.
    fn keys(&self, request: &RangeRequest) -> Vec<String> {
        keys_of(&self.range(request).expect("range"))
    }
}

fn cmd(op: Op) -> Command {
    Command(keelpb::Command {
        op: Some(op),
        auth: None,
    })
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: b(key),
        range_end: b(end),
        ..Default::default()
    }
}

/// Every key, at the current revision.
fn all() -> RangeRequest {
    range("\0", "\0")
}

fn delete(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b(key),
        range_end: b(end),
        prev_kv: false,
    }
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: b(key),
        create_revision: create,
        mod_revision: modified,
        version,
        value: b(value),
        lease: 0,
    }
}

fn keys_of(r: &RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn header_revision(r: &RangeResponse) -> i64 {
    r.header.as_ref().expect("range header").revision
}

fn cmp(
    key: &str,
    end: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        range_end: b(end),
        target_union: Some(union),
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put(key, value))),
    }
}

fn range_op(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(request)),
    }
}

fn delete_op(request: DeleteRangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(request)),
    }
}

fn txn_op(request: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(request)),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

fn member(id: u64, name: &str) -> Member {
    Member {
        id,
        name: name.to_string(),
        peer_ur_ls: vec![format!("http://{name}:2380")],
        client_ur_ls: vec![format!("http://{name}:2379")],
        is_learner: false,
    }
}

/// Every key at each revision from `from` to the current one.
fn history(store: &Store, from: i64) -> Vec<(i64, Result<RangeResponse, MvccError>)> {
    (from..=store.revision())
        .map(|rev| {
            (
                rev,
                store.range(&RangeRequest {
                    revision: rev,
                    ..all()
                }),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Revisions and key versions
// ---------------------------------------------------------------------------

#[test]
fn a_fresh_store_is_empty_at_revision_one() {
    let h = Harness::new();
    assert_eq!(h.store.revision(), 1);
    assert_eq!(h.store.compact_revision(), 0);
    assert_eq!(h.store.applied_index(), 0);
    assert!(h.store.members().is_empty());
    assert!(h.store.alarms().is_empty());
    let r = h.range(&all()).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
    assert!(!r.more);
    assert_eq!(header_revision(&r), 1);
}

#[test]
fn only_writes_that_change_keys_bump_the_revision_by_one() {
    let mut h = Harness::new();
    assert_eq!(h.put("a", "1").header.unwrap().revision, 2);
    assert_eq!(h.store.revision(), 2);
    assert_eq!(h.put("b", "1").header.unwrap().revision, 3);

    // Deleting nothing changes nothing.
    let d = h.delete("nothing", "");
    assert_eq!(d.deleted, 0);
    assert_eq!(d.header.unwrap().revision, 3);
    assert_eq!(h.store.revision(), 3);

    let d = h.delete("a", "");
    assert_eq!(d.deleted, 1);
    assert_eq!(d.header.unwrap().revision, 4);
    assert_eq!(h.store.revision(), 4);

    // A read-only txn.
    let t = h
        .txn(txn(vec![], vec![range_op(range("b", ""))], vec![]))
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.header.unwrap().revision, 4);
    assert_eq!(h.store.revision(), 4);

    // A txn's writes share one revision.
    let t = h
        .txn(txn(
            vec![],
            vec![
                put_op("c", "1"),
                put_op("d", "1"),
                delete_op(delete("b", "")),
            ],
            vec![],
        ))
        .unwrap();
    assert_eq!(t.header.unwrap().revision, 5);
    assert_eq!(h.store.revision(), 5);
    assert_eq!(h.get("c").unwrap().mod_revision, 5);
    assert_eq!(h.get("d").unwrap().mod_revision, 5);
    assert_eq!(h.get("b"), None);
    assert_eq!(h.get_at("b", 4).unwrap().mod_revision, 3);

    // A txn that only deletes nothing, and one whose failure branch is empty.
    let t = h
        .txn(txn(vec![], vec![delete_op(delete("zz", ""))], vec![]))
        .unwrap();
    assert_eq!(t.header.unwrap().revision, 5);
    let failing = cmp(
        "c",
        "",
        CompareTarget::Value,
        CompareResult::Equal,
        TargetUnion::Value(b("other")),
    );
    let t = h
        .txn(txn(vec![failing], vec![put_op("e", "1")], vec![]))
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.header.unwrap().revision, 5);
    assert_eq!(h.store.revision(), 5);

    // Compaction, members and alarms are not key writes.
    h.compact(5).unwrap();
    h.apply(Op::SetMember(member(1, "m1"))).unwrap();
    h.apply(Op::RemoveMember(1)).unwrap();
    h.alarm(AlarmAction::Activate, 1, AlarmType::Nospace);
    h.alarm(AlarmAction::Deactivate, 1, AlarmType::Nospace);
    assert_eq!(h.store.revision(), 5);
    assert_eq!(header_revision(&h.range(&all()).unwrap()), 5);
}

#[test]
fn keys_track_create_revision_mod_revision_and_version() {
    let mut h = Harness::new();
    h.put("k", "v1"); // 2
    assert_eq!(h.get("k"), Some(kv("k", "v1", 2, 2, 1)));
    h.put("k", "v2"); // 3
    assert_eq!(h.get("k"), Some(kv("k", "v2", 2, 3, 2)));
    h.put("other", "x"); // 4
    h.put("k", "v3"); // 5
    assert_eq!(h.get("k"), Some(kv("k", "v3", 2, 5, 3)));
    h.delete("k", ""); // 6
    assert_eq!(h.get("k"), None);
    h.put("k", "v4"); // 7: a new generation
    assert_eq!(h.get("k"), Some(kv("k", "v4", 7, 7, 1)));
    h.put("k", "v5"); // 8
    assert_eq!(h.get("k"), Some(kv("k", "v5", 7, 8, 2)));

    // The past keeps each version as it was.
    assert_eq!(h.get_at("k", 1), None);
    assert_eq!(h.get_at("k", 2), Some(kv("k", "v1", 2, 2, 1)));
    assert_eq!(h.get_at("k", 3), Some(kv("k", "v2", 2, 3, 2)));
    assert_eq!(h.get_at("k", 4), Some(kv("k", "v2", 2, 3, 2)));
    assert_eq!(h.get_at("k", 5), Some(kv("k", "v3", 2, 5, 3)));
    assert_eq!(h.get_at("k", 6), None);
    assert_eq!(h.get_at("k", 7), Some(kv("k", "v4", 7, 7, 1)));
    assert_eq!(h.get_at("other", 8), Some(kv("other", "x", 4, 4, 1)));
}

// ---------------------------------------------------------------------------
// Range reads
// ---------------------------------------------------------------------------

/// Keys a, ab, b, c, d at revisions 2..=6 (in this order of creation).
fn five_keys() -> Harness {
    let mut h = Harness::new();
    for k in ["a", "ab", "b", "c", "d"] {
        h.put(k, &format!("value of {k}"));
    }
    h
}

#[test]
fn range_forms_select_the_right_keys_in_ascending_order() {
    let h = five_keys();
    // A single key.
    let r = h.range(&range("ab", "")).unwrap();
    assert_eq!(r.kvs, vec![kv("ab", "value of ab", 3, 3, 1)]);
    assert_eq!(r.count, 1);
    assert!(h.keys(&range("abc", "")).is_empty());
    // Half-open intervals; a prefix is [p, p+1).
    assert_eq!(h.keys(&range("a", "b")), ["a", "ab"]);
    assert_eq!(h.keys(&range("ab", "c")), ["ab", "b"]);
    assert_eq!(h.keys(&range("aa", "cc")), ["ab", "b", "c"]);
    // From a key on.
    assert_eq!(h.keys(&range("b", "\0")), ["b", "c", "d"]);
    assert_eq!(h.keys(&range("bb", "\0")), ["c", "d"]);
    // Everything.
    assert_eq!(h.keys(&all()), ["a", "ab", "b", "c", "d"]);
    assert_eq!(h.range(&all()).unwrap().count, 5);
    // An end at or below the key holds nothing.
    let r = h.range(&range("b", "b")).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
    assert!(h.keys(&range("c", "b")).is_empty());
    assert!(h.keys(&range("d", "a")).is_empty());
}

#[test]
fn limit_sets_more_and_count_ignores_the_limit() {
    let h = five_keys();
    let r = h.range(&RangeRequest { limit: 2, ..all() }).unwrap();
    assert_eq!(keys_of(&r), ["a", "ab"]);
    assert!(r.more);
    assert_eq!(r.count, 5);

    for limit in [0, 5, 6, 100] {
        let r = h.range(&RangeRequest { limit, ..all() }).unwrap();
        assert_eq!(r.kvs.len(), 5, "limit {limit}");
        assert!(!r.more, "limit {limit}");
        assert_eq!(r.count, 5, "limit {limit}");
    }
    let r = h.range(&RangeRequest { limit: 4, ..all() }).unwrap();
    assert!(r.more);
    assert_eq!(r.kvs.len(), 4);

    let r = h
        .range(&RangeRequest {
            limit: 1,
            ..range("b", "\0")
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["b"]);
    assert!(r.more);
    assert_eq!(r.count, 3);
}

#[test]
fn count_only_and_keys_only() {
    let h = five_keys();
    let r = h
        .range(&RangeRequest {
            count_only: true,
            ..all()
        })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 5);
    assert!(!r.more);
    assert_eq!(header_revision(&r), 6);

    let r = h
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..range("a", "b")
        })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 2);

    let r = h
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", "b")
        })
        .unwrap();
    assert_eq!(
        r.kvs,
        vec![kv("a", "", 2, 2, 1), kv("ab", "", 3, 3, 1)],
        "keys_only keeps everything but the value"
    );
    assert_eq!(r.count, 2);
}

#[test]
fn reads_at_past_revisions_and_future_revisions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("a", "2"); // 4
    h.delete("b", ""); // 5
    let at = |rev: i64| {
        h.range(&RangeRequest {
            revision: rev,
            ..all()
        })
    };
    let r = at(1).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
    assert_eq!(
        header_revision(&r),
        5,
        "the header carries the current revision"
    );
    assert_eq!(at(2).unwrap().kvs, vec![kv("a", "1", 2, 2, 1)]);
    assert_eq!(
        at(3).unwrap().kvs,
        vec![kv("a", "1", 2, 2, 1), kv("b", "1", 3, 3, 1)]
    );
    let r = at(4).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "2", 2, 4, 2), kv("b", "1", 3, 3, 1)]);
    assert_eq!(r.count, 2);
    assert_eq!(header_revision(&r), 5);
    assert_eq!(at(5).unwrap().kvs, vec![kv("a", "2", 2, 4, 2)]);
    assert_eq!(at(0).unwrap().kvs, at(5).unwrap().kvs);
    assert_eq!(at(6), Err(MvccError::FutureRevision));
    assert_eq!(at(100), Err(MvccError::FutureRevision));
}

/// a, b and c with no ties on any sort target:
///
/// | key | version | create | mod | value |
/// |-----|---------|--------|-----|-------|
/// | a   | 2       | 3      | 5   | w     |
/// | b   | 1       | 4      | 4   | x     |
/// | c   | 3       | 2      | 7   | u     |
fn sortable() -> Harness {
    let mut h = Harness::new();
    h.put("c", "y"); // 2
    h.put("a", "z"); // 3
    h.put("b", "x"); // 4
    h.put("a", "w"); // 5
    h.put("c", "v"); // 6
    h.put("c", "u"); // 7
    assert_eq!(h.get("a"), Some(kv("a", "w", 3, 5, 2)));
    assert_eq!(h.get("b"), Some(kv("b", "x", 4, 4, 1)));
    assert_eq!(h.get("c"), Some(kv("c", "u", 2, 7, 3)));
    h
}

#[test]
fn sorting_by_each_target_and_order() {
    let h = sortable();
    let sorted = |order: SortOrder, target: SortTarget| {
        h.keys(&RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..all()
        })
    };
    let ascending = [
        (SortTarget::Key, ["a", "b", "c"]),
        (SortTarget::Version, ["b", "a", "c"]),
        (SortTarget::Create, ["c", "a", "b"]),
        (SortTarget::Mod, ["b", "a", "c"]),
        (SortTarget::Value, ["c", "a", "b"]),
    ];
    for (target, expected) in ascending {
        assert_eq!(
            sorted(SortOrder::Ascend, target),
            expected,
            "ascend by {target:?}"
        );
        // No order means ascending by the target (by key for the key).
        assert_eq!(
            sorted(SortOrder::None, target),
            expected,
            "no order, by {target:?}"
        );
        let mut descending = expected.to_vec();
        descending.reverse();
        assert_eq!(
            sorted(SortOrder::Descend, target),
            descending,
            "descend by {target:?}"
        );
    }

    // Sorting happens before the limit.
    let r = h
        .range(&RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            limit: 2,
            ..all()
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["c", "b"]);
    assert!(r.more);
    assert_eq!(r.count, 3);
    let r = h
        .range(&RangeRequest {
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Mod as i32,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!(r.kvs, vec![kv("b", "x", 4, 4, 1)]);
    assert!(r.more);
}

#[test]
fn revision_filters_apply_before_the_limit_and_not_to_count() {
    let h = sortable();
    let filtered = |f: RangeRequest| {
        let r = h.range(&f).unwrap();
        assert_eq!(r.count, 3, "count ignores filters: {f:?}");
        keys_of(&r)
    };
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 5,
            ..all()
        }),
        ["a", "c"]
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 5,
            ..all()
        }),
        ["a", "b"]
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            ..all()
        }),
        ["a", "b"]
    );
    assert_eq!(
        filtered(RangeRequest {
            max_create_revision: 3,
            ..all()
        }),
        ["a", "c"]
    );
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 5,
            max_mod_revision: 6,
            ..all()
        }),
        ["a"]
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            max_mod_revision: 4,
            ..all()
        }),
        ["b"]
    );
    assert!(filtered(RangeRequest {
        min_mod_revision: 8,
        ..all()
    })
    .is_empty());

    let r = h
        .range(&RangeRequest {
            min_mod_revision: 5,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["a"]);
    assert!(r.more, "two keys pass the filter, one is returned");
    let r = h
        .range(&RangeRequest {
            max_mod_revision: 4,
            limit: 1,
            ..all()
        })
        .unwrap();
    assert_eq!(keys_of(&r), ["b"], "the filter runs before the limit");
    assert!(!r.more, "one key passes the filter");
}

// ---------------------------------------------------------------------------
// Puts and deletes
// ---------------------------------------------------------------------------

#[test]
fn put_prev_kv_ignore_value_and_ignore_lease() {
    let mut h = Harness::new();
    let r = h
        .try_put(PutRequest {
            prev_kv: true,
            ..put("k", "v1")
        })
        .unwrap();
    assert_eq!(r.prev_kv, None);
    assert_eq!(r.header.unwrap().revision, 2);

    let r = h
        .try_put(PutRequest {
            prev_kv: true,
            ..put("k", "v2")
        })
        .unwrap();
    assert_eq!(r.prev_kv, Some(kv("k", "v1", 2, 2, 1)));
    assert_eq!(r.header.unwrap().revision, 3);

    let r = h.put("k", "v3");
    assert_eq!(r.prev_kv, None, "prev_kv only when asked");
    assert_eq!(r.header.unwrap().revision, 4);

    // ignore_value keeps the value and still writes a new version.
    let r = h
        .try_put(PutRequest {
            key: b("k"),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.prev_kv, Some(kv("k", "v3", 2, 4, 3)));
    assert_eq!(r.header.unwrap().revision, 5);
    assert_eq!(h.get("k"), Some(kv("k", "v3", 2, 5, 4)));

    // ... and needs the key to exist.
    let missing = PutRequest {
        key: b("missing"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(h.try_put(missing), Err(MvccError::KeyNotFound));
    assert_eq!(h.store.revision(), 5);
    assert_eq!(h.get("missing"), None);

    // ignore_lease keeps the lease (granting one writes no revision).
    h.apply(Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }))
        .unwrap();
    h.try_put(PutRequest {
        lease: 7,
        ..put("l", "x")
    })
    .unwrap(); // 6
    assert_eq!(h.get("l").unwrap().lease, 7);
    h.try_put(PutRequest {
        ignore_lease: true,
        ..put("l", "y")
    })
    .unwrap(); // 7
    let l = h.get("l").unwrap();
    assert_eq!((l.value, l.lease, l.version), (b("y"), 7, 2));
    h.put("l", "z"); // 8: no lease
    assert_eq!(h.get("l").unwrap().lease, 0);
    let missing = PutRequest {
        ignore_lease: true,
        ..put("missing", "v")
    };
    assert_eq!(h.try_put(missing), Err(MvccError::KeyNotFound));
    assert_eq!(h.store.revision(), 8);
}

#[test]
fn delete_range_counts_returns_prev_kvs_and_shares_one_revision() {
    let mut h = Harness::new();
    for k in ["a", "ab", "b", "c"] {
        h.put(k, k); // 2..=5
    }
    let r = h
        .try_delete(DeleteRangeRequest {
            prev_kv: true,
            ..delete("a", "b")
        })
        .unwrap();
    assert_eq!(r.deleted, 2);
    assert_eq!(
        r.prev_kvs,
        vec![kv("a", "a", 2, 2, 1), kv("ab", "ab", 3, 3, 1)]
    );
    assert_eq!(r.header.unwrap().revision, 6);
    assert_eq!(h.keys(&all()), ["b", "c"]);
    assert_eq!(
        h.keys(&RangeRequest {
            revision: 5,
            ..all()
        }),
        ["a", "ab", "b", "c"]
    );

    let r = h.delete("b", "\0");
    assert_eq!(r.deleted, 2);
    assert!(r.prev_kvs.is_empty(), "prev_kvs only when asked");
    assert_eq!(r.header.unwrap().revision, 7);
    assert!(h.keys(&all()).is_empty());

    let r = h
        .try_delete(DeleteRangeRequest {
            prev_kv: true,
            ..delete("a", "\0")
        })
        .unwrap();
    assert_eq!(r.deleted, 0);
    assert!(r.prev_kvs.is_empty());
    assert_eq!(r.header.unwrap().revision, 7);

    h.put("a", "again"); // 8
    h.put("z", "z"); // 9
    let r = h.delete("\0", "\0");
    assert_eq!(r.deleted, 2);
    assert_eq!(h.store.revision(), 10);
    // A delete with an end below its key deletes nothing.
    h.put("m", "m"); // 11
    assert_eq!(h.delete("n", "m").deleted, 0);
    assert_eq!(h.store.revision(), 11);
    assert_eq!(h.delete("m", "").deleted, 1);
}

// ---------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------

#[test]
fn txn_compares_on_every_target() {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    use TargetUnion as U;

    let mut h = Harness::new();
    h.put("a", "10"); // 2
    h.put("a", "20"); // 3: a is version 2, created 2, modified 3
    h.put("b", "5"); // 4: b is version 1, created 4, modified 4
    let cases: Vec<(Compare, bool)> = vec![
        (cmp("a", "", Version, Equal, U::Version(2)), true),
        (cmp("a", "", Version, NotEqual, U::Version(2)), false),
        (cmp("a", "", Version, Greater, U::Version(1)), true),
        (cmp("a", "", Version, Less, U::Version(2)), false),
        (cmp("a", "", Version, Less, U::Version(3)), true),
        (cmp("a", "", Create, Equal, U::CreateRevision(2)), true),
        (cmp("a", "", Create, Greater, U::CreateRevision(2)), false),
        (cmp("a", "", Create, Less, U::CreateRevision(3)), true),
        (cmp("a", "", Mod, Equal, U::ModRevision(3)), true),
        (cmp("a", "", Mod, Less, U::ModRevision(3)), false),
        (cmp("a", "", Mod, NotEqual, U::ModRevision(2)), true),
        (cmp("a", "", Value, Equal, U::Value(b("20"))), true),
        (cmp("a", "", Value, Equal, U::Value(b("2"))), false),
        (cmp("a", "", Value, NotEqual, U::Value(b("20"))), false),
        (cmp("a", "", Value, Greater, U::Value(b("1"))), true),
        (cmp("a", "", Value, Less, U::Value(b("3"))), true),
        (cmp("a", "", Value, Less, U::Value(b("20"))), false),
        (cmp("a", "", Lease, Equal, U::Lease(0)), true),
        (cmp("a", "", Lease, Greater, U::Lease(0)), false),
        // A missing key compares as zeros, except that value compares fail.
        (cmp("zz", "", Version, Equal, U::Version(0)), true),
        (cmp("zz", "", Version, Greater, U::Version(0)), false),
        (cmp("zz", "", Create, Equal, U::CreateRevision(0)), true),
        (cmp("zz", "", Mod, Less, U::ModRevision(1)), true),
        (cmp("zz", "", Lease, Equal, U::Lease(0)), true),
        (cmp("zz", "", Value, Equal, U::Value(b(""))), false),
        (cmp("zz", "", Value, NotEqual, U::Value(b("x"))), false),
        // A range compare must hold for every key in it.
        (cmp("a", "c", Version, Greater, U::Version(0)), true),
        (cmp("a", "c", Version, Equal, U::Version(2)), false),
        (cmp("a", "c", Mod, Greater, U::ModRevision(2)), true),
        (cmp("a", "c", Create, Less, U::CreateRevision(4)), false),
        (cmp("a", "\0", Create, Less, U::CreateRevision(5)), true),
        (cmp("b", "\0", Value, Equal, U::Value(b("5"))), true),
        (cmp("\0", "\0", Value, Equal, U::Value(b("5"))), false),
        // An empty range compares like a missing key.
        (cmp("x", "y", Version, Equal, U::Version(0)), true),
        (cmp("x", "y", Value, Equal, U::Value(b(""))), false),
    ];
    for (compare, expected) in cases {
        let t = h
            .txn(txn(
                vec![compare.clone()],
                vec![range_op(range("a", ""))],
                vec![],
            ))
            .unwrap();
        assert_eq!(t.succeeded, expected, "{compare:?}");
        assert_eq!(t.responses.len(), usize::from(expected), "{compare:?}");
    }
    // All compares must hold.
    let both = |second: Compare| vec![cmp("a", "", Version, Equal, U::Version(2)), second];
    let t = h
        .txn(txn(
            both(cmp("b", "", Version, Equal, U::Version(1))),
            vec![],
            vec![],
        ))
        .unwrap();
    assert!(t.succeeded);
    let t = h
        .txn(txn(
            both(cmp("b", "", Version, Equal, U::Version(2))),
            vec![],
            vec![],
        ))
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(h.store.revision(), 4, "read-only txns do not write");
}

#[test]
fn txn_runs_the_chosen_branch_in_order_and_sees_its_own_writes() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    let a_is_1 = || {
        cmp(
            "a",
            "",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("1")),
        )
    };
    let t = h
        .txn(txn(
            vec![a_is_1()],
            vec![
                put_op("b", "x"),
                range_op(range("b", "")),
                delete_op(DeleteRangeRequest {
                    prev_kv: true,
                    ..delete("a", "")
                }),
                range_op(all()),
            ],
            vec![put_op("c", "failure")],
        ))
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.header.as_ref().unwrap().revision, 3);
    assert_eq!(t.responses.len(), 4);
    let responses: Vec<&Response> = t
        .responses
        .iter()
        .map(|r| r.response.as_ref().expect("a response"))
        .collect();
    match responses[0] {
        Response::ResponsePut(p) => assert_eq!(p.prev_kv, None),
        other => panic!("expected a put response, got {other:?}"),
    }
    match responses[1] {
        Response::ResponseRange(r) => {
            assert_eq!(
                r.kvs,
                vec![kv("b", "x", 3, 3, 1)],
                "the range sees the put before it"
            );
            assert_eq!(r.count, 1);
        }
        other => panic!("expected a range response, got {other:?}"),
    }
    match responses[2] {
        Response::ResponseDeleteRange(d) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kvs, vec![kv("a", "1", 2, 2, 1)]);
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    match responses[3] {
        Response::ResponseRange(r) => assert_eq!(keys_of(r), ["b"]),
        other => panic!("expected a range response, got {other:?}"),
    }
    assert_eq!(h.store.revision(), 3);
    assert_eq!(h.keys(&all()), ["b"]);
    assert_eq!(h.get_at("a", 2), Some(kv("a", "1", 2, 2, 1)));

    // a is gone now: the compare fails and the failure branch runs.
    let t = h
        .txn(txn(
            vec![a_is_1()],
            vec![put_op("c", "success")],
            vec![put_op("d", "y"), range_op(range("d", ""))],
        ))
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.header.as_ref().unwrap().revision, 4);
    assert_eq!(t.responses.len(), 2);
    assert!(matches!(
        t.responses[0].response,
        Some(Response::ResponsePut(_))
    ));
    match &t.responses[1].response {
        Some(Response::ResponseRange(r)) => assert_eq!(r.kvs, vec![kv("d", "y", 4, 4, 1)]),
        other => panic!("expected a range response, got {other:?}"),
    }
    assert_eq!(h.get("c"), None);
    assert_eq!(h.keys(&all()), ["b", "d"]);

    // A delete and a put in one txn share one revision.
    let t = h
        .txn(txn(
            vec![],
            vec![
                delete_op(delete("b", "")),
                put_op("e", "1"),
                range_op(range("\0", "\0")),
            ],
            vec![],
        ))
        .unwrap();
    assert_eq!(t.header.unwrap().revision, 5);
    assert_eq!(h.get("e"), Some(kv("e", "1", 5, 5, 1)));
}

/// As in etcd 3.4 (checked with `etcdctl txn -w json` side by side): the
/// responses inside a transaction carry a header with only the revision as
/// of that operation, and a nested transaction's header is empty.
#[test]
fn responses_inside_a_txn_carry_the_revision_as_of_their_operation() {
    let mut h = Harness::new();
    h.put("a", "1");
    let nested = txn(vec![], vec![put_op("c", "1")], vec![]);
    let t = h
        .txn(txn(
            vec![],
            vec![
                delete_op(delete("missing", "")),
                range_op(range("a", "")),
                put_op("b", "1"),
                range_op(range("a", "")),
                delete_op(delete("a", "")),
                txn_op(nested),
            ],
            vec![],
        ))
        .unwrap();
    let only = |revision| {
        Some(ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    assert_eq!(t.header, only(3));
    let headers: Vec<Option<ResponseHeader>> = t
        .responses
        .iter()
        .map(|r| match r.response.as_ref().unwrap() {
            Response::ResponseRange(r) => r.header,
            Response::ResponsePut(r) => r.header,
            Response::ResponseDeleteRange(r) => r.header,
            Response::ResponseTxn(r) => r.header,
        })
        .collect();
    assert_eq!(
        headers,
        vec![
            only(2),
            only(2),
            only(3),
            only(3),
            only(3),
            Some(ResponseHeader::default())
        ]
    );
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut h = Harness::new();
    h.put("a", "old"); // 2
    let a_is_old = || {
        cmp(
            "a",
            "",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("old")),
        )
    };
    let t = h
        .txn(txn(
            vec![],
            vec![
                put_op("a", "new"),
                txn_op(txn(
                    vec![a_is_old()],
                    vec![put_op("b", "saw old")],
                    vec![put_op("b", "saw new")],
                )),
                range_op(range("a", "c")),
            ],
            vec![],
        ))
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.header.as_ref().unwrap().revision, 3);
    match &t.responses[1].response {
        Some(Response::ResponseTxn(nested)) => {
            assert!(
                nested.succeeded,
                "the nested compare sees a as it was before the txn"
            );
            assert_eq!(nested.responses.len(), 1);
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    match &t.responses[2].response {
        Some(Response::ResponseRange(r)) => assert_eq!(
            r.kvs,
            vec![kv("a", "new", 2, 3, 2), kv("b", "saw old", 3, 3, 1)]
        ),
        other => panic!("expected a range response, got {other:?}"),
    }
    assert_eq!(h.get("b"), Some(kv("b", "saw old", 3, 3, 1)));
    assert_eq!(
        h.store.revision(),
        3,
        "nested writes share the outer revision"
    );

    // A nested txn in the failure branch, two levels deep.
    let t = h
        .txn(txn(
            vec![a_is_old()],
            vec![put_op("x", "outer success")],
            vec![
                delete_op(delete("b", "")),
                txn_op(txn(
                    vec![cmp(
                        "b",
                        "",
                        CompareTarget::Version,
                        CompareResult::Equal,
                        TargetUnion::Version(1),
                    )],
                    vec![txn_op(txn(
                        vec![cmp(
                            "b",
                            "",
                            CompareTarget::Version,
                            CompareResult::Equal,
                            TargetUnion::Version(0),
                        )],
                        vec![put_op("c", "b was missing")],
                        vec![put_op("c", "b was there")],
                    ))],
                    vec![put_op("d", "inner failure")],
                )),
            ],
        ))
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(t.header.as_ref().unwrap().revision, 4);
    match &t.responses[1].response {
        Some(Response::ResponseTxn(inner)) => {
            assert!(inner.succeeded);
            match &inner.responses[0].response {
                Some(Response::ResponseTxn(innermost)) => assert!(!innermost.succeeded),
                other => panic!("expected a txn response, got {other:?}"),
            }
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert_eq!(h.keys(&all()), ["a", "c"]);
    assert_eq!(h.get("c"), Some(kv("c", "b was there", 4, 4, 1)));

    // Read-only nesting writes nothing.
    let t = h
        .txn(txn(
            vec![],
            vec![txn_op(txn(vec![], vec![range_op(all())], vec![]))],
            vec![],
        ))
        .unwrap();
    assert_eq!(t.header.unwrap().revision, 4);
    assert_eq!(h.store.revision(), 4);
}

// ---------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------

#[test]
fn compaction_keeps_reads_at_and_above_its_revision() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("a", "2"); // 4
    h.delete("b", ""); // 5
    h.put("c", "1"); // 6
    h.put("a", "3"); // 7
    let before = history(&h.store, 1);

    assert_eq!(h.compact(8), Err(MvccError::FutureRevision));
    h.compact(4).unwrap();
    assert_eq!(h.store.compact_revision(), 4);
    assert_eq!(h.store.revision(), 7);
    for (rev, expected) in &before {
        let got = h.range(&RangeRequest {
            revision: *rev,
            ..all()
        });
        if *rev < 4 {
            assert_eq!(got, Err(MvccError::Compacted), "revision {rev}");
        } else {
            assert_eq!(&got, expected, "revision {rev}");
        }
    }
    assert_eq!(h.range(&all()), before.last().unwrap().1);
    assert_eq!(h.compact(4), Err(MvccError::Compacted));
    assert_eq!(h.compact(3), Err(MvccError::Compacted));
    assert_eq!(h.store.compact_revision(), 4);

    // Past b's deletion.
    h.compact(5).unwrap();
    assert_eq!(
        h.range(&RangeRequest {
            revision: 5,
            ..all()
        }),
        before[4].1
    );
    assert_eq!(h.get_at("b", 5), None);
    h.compact(7).unwrap();
    assert_eq!(h.range(&all()), before[6].1);
    assert_eq!(
        h.range(&RangeRequest {
            revision: 6,
            ..all()
        }),
        Err(MvccError::Compacted)
    );
    assert_eq!(h.store.revision(), 7);

    // b starts a new life after its history is gone.
    h.put("b", "2"); // 8
    assert_eq!(h.get("b"), Some(kv("b", "2", 8, 8, 1)));
    h.put("a", "4"); // 9
    assert_eq!(h.get("a"), Some(kv("a", "4", 2, 9, 4)));

    // The compaction point survives a restart.
    let h = h.reopen();
    assert_eq!(h.store.compact_revision(), 7);
    assert_eq!(
        h.range(&RangeRequest {
            revision: 6,
            ..all()
        }),
        Err(MvccError::Compacted)
    );
    assert_eq!(
        h.keys(&RangeRequest {
            revision: 7,
            ..all()
        }),
        ["a", "c"]
    );
}

#[test]
fn compaction_inside_a_batch_sees_the_batch() {
    let mut h = Harness::new();
    let results = h.batch(vec![
        Op::Put(put("a", "1")), // 2
        Op::Compact(CompactionRequest {
            revision: 2,
            physical: false,
        }),
        Op::Put(put("a", "2")), // 3
        Op::Put(put("b", "1")), // 4
        Op::Compact(CompactionRequest {
            revision: 3,
            physical: false,
        }),
        Op::Compact(CompactionRequest {
            revision: 3,
            physical: false,
        }),
        Op::Compact(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    ]);
    assert!(
        matches!(results[0], Ok(WriteResponse::Put(_))),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(results[1], Ok(WriteResponse::Compact(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Ok(WriteResponse::Put(_))),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Ok(WriteResponse::Put(_))),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Ok(WriteResponse::Compact(_))),
        "{:?}",
        results[4]
    );
    assert_eq!(results[5], Err(MvccError::Compacted));
    assert_eq!(results[6], Err(MvccError::FutureRevision));
    assert_eq!(h.store.revision(), 4);
    assert_eq!(h.store.compact_revision(), 3);
    assert_eq!(h.get_at("a", 3), Some(kv("a", "2", 2, 3, 2)));
    assert_eq!(h.get_at("b", 3), None);
    assert_eq!(
        h.range(&RangeRequest {
            revision: 2,
            ..all()
        }),
        Err(MvccError::Compacted)
    );
    assert_eq!(h.keys(&all()), ["a", "b"]);
}

// ---------------------------------------------------------------------------
// Alarms and members
// ---------------------------------------------------------------------------

#[test]
fn nospace_alarm_refuses_puts_until_deactivated() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    let nospace = AlarmMember {
        member_id: 1,
        alarm: AlarmType::Nospace as i32,
    };
    assert_eq!(
        h.alarm(AlarmAction::Activate, 1, AlarmType::Nospace),
        vec![nospace]
    );
    assert_eq!(h.store.alarms(), vec![nospace]);
    assert_eq!(h.alarm(AlarmAction::Get, 0, AlarmType::None), vec![nospace]);

    assert_eq!(h.try_put(put("c", "1")), Err(MvccError::NoSpace));
    assert_eq!(h.try_put(put("a", "2")), Err(MvccError::NoSpace));
    assert_eq!(
        h.txn(txn(vec![], vec![put_op("c", "1")], vec![])),
        Err(MvccError::NoSpace)
    );
    // A put in the branch not taken counts too.
    assert_eq!(
        h.txn(txn(vec![], vec![range_op(all())], vec![put_op("c", "1")])),
        Err(MvccError::NoSpace)
    );
    assert_eq!(h.store.revision(), 3);
    assert_eq!(h.get("a"), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(h.get("c"), None);

    // Reads, deletes and compaction still work.
    assert_eq!(h.keys(&all()), ["a", "b"]);
    let t = h
        .txn(txn(
            vec![],
            vec![range_op(all()), delete_op(delete("b", ""))],
            vec![],
        ))
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(h.store.revision(), 4);
    assert_eq!(h.delete("a", "").deleted, 1);
    assert_eq!(h.store.revision(), 5);
    h.compact(5).unwrap();

    assert_eq!(
        h.alarm(AlarmAction::Deactivate, 1, AlarmType::Nospace),
        vec![nospace]
    );
    assert!(h.store.alarms().is_empty());
    assert!(h.alarm(AlarmAction::Get, 0, AlarmType::None).is_empty());
    assert_eq!(h.put("c", "1").header.unwrap().revision, 6);
}

#[test]
fn members_are_upserted_removed_and_listed_by_id() {
    let mut h = Harness::new();
    for m in [member(3, "c"), member(1, "a"), member(2, "b")] {
        assert_eq!(h.apply(Op::SetMember(m)), Ok(WriteResponse::Member));
    }
    assert_eq!(
        h.store.members(),
        vec![member(1, "a"), member(2, "b"), member(3, "c")]
    );

    let renamed = Member {
        is_learner: true,
        ..member(2, "b2")
    };
    h.apply(Op::SetMember(renamed.clone())).unwrap();
    assert_eq!(
        h.store.members(),
        vec![member(1, "a"), renamed.clone(), member(3, "c")]
    );

    assert_eq!(h.apply(Op::RemoveMember(1)), Ok(WriteResponse::Member));
    assert_eq!(h.store.members(), vec![renamed.clone(), member(3, "c")]);
    h.apply(Op::RemoveMember(9)).unwrap();
    assert_eq!(h.store.members(), vec![renamed, member(3, "c")]);
    assert_eq!(h.store.revision(), 1);
}

// ---------------------------------------------------------------------------
// Durability, replay, snapshots, hashes
// ---------------------------------------------------------------------------

#[test]
fn everything_survives_reopening_the_store() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("a", "2"); // 4
    h.delete("b", ""); // 5
    h.put("c", "1"); // 6
    h.compact(3).unwrap();
    h.apply(Op::SetMember(member(1, "one"))).unwrap();
    h.apply(Op::SetMember(member(2, "two"))).unwrap();
    h.alarm(AlarmAction::Activate, 2, AlarmType::Nospace);
    let index = h.store.applied_index();
    assert_eq!(index, h.index);
    let before = history(&h.store, 3);
    let hash = h.store.hash_kv(0).unwrap();

    let mut h = h.reopen();
    assert_eq!(h.store.revision(), 6);
    assert_eq!(h.store.applied_index(), index);
    assert_eq!(h.store.compact_revision(), 3);
    assert_eq!(history(&h.store, 3), before);
    assert_eq!(h.store.members(), vec![member(1, "one"), member(2, "two")]);
    assert_eq!(
        h.store.alarms(),
        vec![AlarmMember {
            member_id: 2,
            alarm: AlarmType::Nospace as i32
        }]
    );
    assert_eq!(h.store.hash_kv(0).unwrap(), hash);

    // The store carries on where it stopped.
    h.alarm(AlarmAction::Deactivate, 2, AlarmType::Nospace);
    assert_eq!(h.put("a", "3").header.unwrap().revision, 7);
    assert_eq!(h.get("a"), Some(kv("a", "3", 2, 7, 3)));
    let h = h.reopen();
    assert_eq!(h.store.revision(), 7);
    assert_eq!(h.get("a"), Some(kv("a", "3", 2, 7, 3)));
    assert!(h.store.alarms().is_empty());
}

#[test]
fn commands_at_or_below_the_applied_index_are_skipped() {
    let h = Harness::new();
    let puts = |from: u64, to: u64| -> Vec<(u64, Command)> {
        (from..=to)
            .map(|i| (i, cmd(Op::Put(put("a", &format!("v{i}"))))))
            .collect()
    };
    let results = h.store.apply_batch(puts(1, 5)).responses;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(WriteResponse::Put(_)))),
        "{results:?}"
    );
    assert_eq!(h.store.applied_index(), 5);
    assert_eq!(h.store.revision(), 6);

    let results = h.store.apply_batch(puts(3, 7)).responses;
    assert_eq!(
        results[..3],
        [
            Ok(WriteResponse::AlreadyApplied),
            Ok(WriteResponse::AlreadyApplied),
            Ok(WriteResponse::AlreadyApplied)
        ]
    );
    assert!(
        matches!(results[3], Ok(WriteResponse::Put(_))),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Ok(WriteResponse::Put(_))),
        "{:?}",
        results[4]
    );
    assert_eq!(h.store.applied_index(), 7);
    assert_eq!(h.get("a"), Some(kv("a", "v7", 2, 8, 7)));

    // A command that fails is still applied.
    let failing = PutRequest {
        key: b("missing"),
        ignore_value: true,
        ..Default::default()
    };
    let results = h
        .store
        .apply_batch(vec![(8, cmd(Op::Put(failing)))])
        .responses;
    assert_eq!(results, vec![Err(MvccError::KeyNotFound)]);
    assert_eq!(h.store.applied_index(), 8);

    // After a restart the whole log replays without effect.
    let h = h.reopen();
    let mut replay = puts(1, 7);
    // What the log holds there no longer matters.
    replay.push((8, cmd(Op::SetMember(member(1, "x")))));
    let results = h.store.apply_batch(replay).responses;
    assert!(
        results
            .iter()
            .all(|r| *r == Ok(WriteResponse::AlreadyApplied)),
        "{results:?}"
    );
    assert_eq!(h.store.applied_index(), 8);
    assert_eq!(h.store.revision(), 8);
    assert_eq!(h.get("a"), Some(kv("a", "v7", 2, 8, 7)));
    assert!(h.store.members().is_empty());
}

/// Applies a fixed mix of writes: puts, overwrites, deletes, a txn, a
/// compaction and member records.
fn some_history(h: &mut Harness) {
    for i in 0..12 {
        h.put(&format!("key{}", i % 5), &format!("value {i}"));
    }
    h.delete("key1", "");
    h.delete("key3", "key5");
    h.txn(txn(
        vec![],
        vec![put_op("t1", "x"), put_op("t2", "y")],
        vec![],
    ))
    .unwrap();
    h.compact(6).unwrap();
    h.put("key3", "back");
    h.apply(Op::SetMember(member(1, "one"))).unwrap();
    h.apply(Op::SetMember(member(2, "two"))).unwrap();
}

#[test]
fn a_snapshot_restores_the_state_at_its_view() {
    let mut source = Harness::new();
    some_history(&mut source);
    source.alarm(AlarmAction::Activate, 1, AlarmType::Nospace);

    let revision = source.store.revision();
    let applied = source.store.applied_index();
    let compacted = source.store.compact_revision();
    let hash = source.store.hash_kv(0).unwrap();
    let reads = history(&source.store, compacted);
    let members = source.store.members();
    let alarms = source.store.alarms();
    let view = source.store.view();

    // The source moves on after the view was taken.
    let later = vec![
        Op::Alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        }),
        Op::Put(put("after", "1")),
        Op::DeleteRange(delete("key0", "")),
        Op::RemoveMember(1),
        Op::Compact(CompactionRequest {
            revision,
            physical: false,
        }),
    ];
    let first_later_index = source.index + 1;
    source.batch(later.clone());
    assert_ne!(source.store.revision(), revision);

    let mut snapshot = Vec::new();
    Store::write_snapshot(view, &mut snapshot).unwrap();

    // The target has state of its own, which the restore replaces.
    let mut target = Harness::new();
    target.put("junk", "1");
    target.apply(Op::SetMember(member(9, "junk"))).unwrap();
    target.store.restore(&mut snapshot.as_slice()).unwrap();

    assert_eq!(target.store.revision(), revision);
    assert_eq!(target.store.applied_index(), applied);
    assert_eq!(target.store.compact_revision(), compacted);
    assert_eq!(target.store.hash_kv(0).unwrap(), hash);
    assert_eq!(history(&target.store, compacted), reads);
    assert_eq!(
        target.range(&RangeRequest {
            revision: compacted - 1,
            ..all()
        }),
        Err(MvccError::Compacted)
    );
    assert_eq!(target.store.members(), members);
    assert_eq!(target.store.alarms(), alarms);
    assert_eq!(target.get("junk"), None);

    // The same later commands at the same indexes bring it level again.
    let results = target
        .store
        .apply_batch(
            later
                .into_iter()
                .enumerate()
                .map(|(i, op)| (first_later_index + i as u64, cmd(op)))
                .collect(),
        )
        .responses;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(target.store.applied_index(), source.store.applied_index());
    assert_eq!(target.store.revision(), source.store.revision());
    assert_eq!(
        target.store.hash_kv(0).unwrap(),
        source.store.hash_kv(0).unwrap()
    );
    assert_eq!(target.range(&all()), source.range(&all()));
    assert_eq!(target.store.members(), source.store.members());

    // And the restored state is durable.
    let target = target.reopen();
    assert_eq!(
        target.store.hash_kv(0).unwrap(),
        source.store.hash_kv(0).unwrap()
    );
    assert_eq!(target.store.applied_index(), source.store.applied_index());
}

#[test]
fn a_reseeded_store_keeps_its_keys_and_starts_a_new_log_with_new_members() {
    let mut source = Harness::new();
    some_history(&mut source);
    source.alarm(AlarmAction::Activate, 1, AlarmType::Nospace);
    let hash = source.store.hash_kv(0).unwrap();
    let revision = source.store.revision();
    let mut snapshot = Vec::new();
    Store::write_snapshot(source.store.view(), &mut snapshot).unwrap();

    let target = Harness::new();
    target.store.restore(&mut snapshot.as_slice()).unwrap();
    target.store.reseed(&[member(7, "new")]).unwrap();
    // Reopened: what reseeding did is durable.
    let mut target = target.reopen();
    assert_eq!(target.store.applied_index(), 0);
    assert_eq!(target.store.hash_kv(0).unwrap(), hash);
    assert_eq!(target.store.revision(), revision);
    assert_eq!(target.store.members(), vec![member(7, "new")]);
    assert_eq!(target.store.alarms(), vec![]);
    // The new cluster's log applies from its first index on.
    target.index = 0;
    target.put("fresh", "1");
    assert_eq!(target.store.applied_index(), 1);
    assert_eq!(target.store.revision(), revision + 1);
    assert_eq!(target.get("fresh").map(|kv| kv.value), Some("1".into()));
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let mut source = Harness::new();
    some_history(&mut source);
    let hash = source.store.hash_kv(0).unwrap();
    let mut snapshot = Vec::new();
    Store::write_snapshot(source.store.view(), &mut snapshot).unwrap();
    let len = snapshot.len();
    assert!(len > 20, "a snapshot of {len} bytes");

    let target = Harness::new();
    for cut in [0, 1, 5, len / 3, len / 2, len - 5, len - 1] {
        let result = target.store.restore(&mut &snapshot[..cut]);
        assert!(
            matches!(result, Err(MvccError::Corrupt(_))),
            "snapshot cut to {cut} of {len} bytes: {result:?}"
        );
    }
    // Every byte position up to ~200 positions spread over the stream.
    let step = (len / 200).max(1);
    for (n, at) in (0..len).step_by(step).enumerate() {
        let mut damaged = snapshot.clone();
        damaged[at] ^= if n % 2 == 0 { 0x01 } else { 0x80 };
        let result = target.store.restore(&mut damaged.as_slice());
        assert!(
            matches!(result, Err(MvccError::Corrupt(_))),
            "snapshot with byte {at} of {len} flipped: {result:?}"
        );
    }
    // Garbage.
    let result = target.store.restore(&mut &b"definitely not a snapshot"[..]);
    assert!(matches!(result, Err(MvccError::Corrupt(_))), "{result:?}");
    // Until a restore completes, the half-replaced contents are not read.
    assert!(target.store.restoring());
    assert_eq!(target.store.range(&all()), Err(MvccError::Restoring));
    assert_eq!(target.store.hash_kv(0), Err(MvccError::Restoring));

    // The intact snapshot still restores.
    target.store.restore(&mut snapshot.as_slice()).unwrap();
    assert_eq!(target.store.hash_kv(0).unwrap(), hash);
    assert_eq!(target.store.applied_index(), source.store.applied_index());
    assert_eq!(target.range(&all()), source.range(&all()));
}

#[test]
fn hash_kv_agrees_for_equal_histories_only() {
    let mut one = Harness::new();
    let mut two = Harness::new();
    some_history(&mut one);
    some_history(&mut two);
    let h1 = one.store.hash_kv(0).unwrap();
    assert_eq!(h1, two.store.hash_kv(0).unwrap());
    assert_eq!(h1.revision, one.store.revision());
    assert_eq!(h1.compact_revision, 6);
    for rev in 6..=one.store.revision() {
        assert_eq!(
            one.store.hash_kv(rev).unwrap(),
            two.store.hash_kv(rev).unwrap(),
            "revision {rev}"
        );
    }
    assert_eq!(one.store.hash_kv(one.store.revision()).unwrap(), h1);

    one.put("diverge", "1");
    two.put("diverge", "2");
    assert_eq!(one.store.revision(), two.store.revision());
    assert_ne!(
        one.store.hash_kv(0).unwrap().hash,
        two.store.hash_kv(0).unwrap().hash
    );
    // The history before the divergence still agrees.
    let before = one.store.revision() - 1;
    assert_eq!(
        one.store.hash_kv(before).unwrap(),
        two.store.hash_kv(before).unwrap()
    );
    // Hashing the future is refused.
    assert_eq!(
        one.store.hash_kv(one.store.revision() + 1),
        Err(MvccError::FutureRevision)
    );
}

#[test]
fn db_size_grows_with_the_data() {
    let mut h = Harness::new();
    let empty = h.store.db_size();
    // Incompressible values: 64 KiB of xorshift output per key.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..8 {
        let value: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        h.try_put(PutRequest {
            key: b(&format!("big{i}")),
            value: Bytes::from(value),
            ..Default::default()
        })
        .unwrap();
    }
    let size = h.store.db_size();
    assert!(
        size >= empty + 512 * 1024,
        "db_size {size} after 512 KiB of values (empty: {empty})"
    );
}

// ---------------------------------------------------------------------------
// Validation before proposing
// ---------------------------------------------------------------------------

fn check(op: Op, max_txn_ops: usize) -> Result<(), MvccError> {
    validate::command(
        &keelpb::Command {
            op: Some(op),
            auth: None,
        },
        max_txn_ops,
    )
}

fn check_txn(success: Vec<RequestOp>) -> Result<(), MvccError> {
    check(Op::Txn(txn(vec![], success, vec![])), 128)
}

#[test]
fn validation_refuses_malformed_requests() {
    assert_eq!(check(Op::Put(put("a", "1")), 128), Ok(()));
    assert_eq!(check(Op::Put(put("", "1")), 128), Err(MvccError::EmptyKey));
    assert_eq!(
        check(Op::DeleteRange(delete("", "b")), 128),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(check(Op::DeleteRange(delete("a", "")), 128), Ok(()));
    assert_eq!(validate::range(&range("", "b")), Err(MvccError::EmptyKey));
    assert_eq!(validate::range(&all()), Ok(()));

    let ignore_value = PutRequest {
        key: b("a"),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(check(Op::Put(ignore_value.clone()), 128), Ok(()));
    let with_value = PutRequest {
        value: b("v"),
        ..ignore_value
    };
    assert_eq!(
        check(Op::Put(with_value), 128),
        Err(MvccError::ValueProvided)
    );
    let ignore_lease = PutRequest {
        ignore_lease: true,
        ..put("a", "v")
    };
    assert_eq!(check(Op::Put(ignore_lease.clone()), 128), Ok(()));
    let with_lease = PutRequest {
        lease: 5,
        ..ignore_lease
    };
    assert_eq!(
        check(Op::Put(with_lease.clone()), 128),
        Err(MvccError::LeaseProvided)
    );
    assert_eq!(
        check_txn(vec![RequestOp {
            request: Some(Request::RequestPut(with_lease))
        }]),
        Err(MvccError::LeaseProvided)
    );

    for (order, target) in [(7, 0), (0, 9), (-1, 0), (0, -1)] {
        let bad = RangeRequest {
            sort_order: order,
            sort_target: target,
            ..range("a", "")
        };
        let result = validate::range(&bad);
        assert!(
            matches!(&result, Err(MvccError::InvalidArgument(m)) if m.contains("sort")),
            "order {order} target {target}: {result:?}"
        );
        let result = check_txn(vec![range_op(bad)]);
        assert!(
            matches!(result, Err(MvccError::InvalidArgument(_))),
            "{result:?}"
        );
    }
    for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
        for target in [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ] {
            let good = RangeRequest {
                sort_order: order as i32,
                sort_target: target as i32,
                ..range("a", "")
            };
            assert_eq!(validate::range(&good), Ok(()), "{order:?} {target:?}");
        }
    }

    let bad_result = Compare {
        result: 9,
        ..cmp(
            "a",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )
    };
    let bad_target = Compare {
        target: 9,
        ..cmp(
            "a",
            "",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(1),
        )
    };
    let no_key = cmp(
        "",
        "",
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(1),
    );
    for (compare, want_invalid) in [(bad_result, true), (bad_target, true), (no_key, false)] {
        let result = check(Op::Txn(txn(vec![compare.clone()], vec![], vec![])), 128);
        if want_invalid {
            assert!(
                matches!(result, Err(MvccError::InvalidArgument(_))),
                "{compare:?}: {result:?}"
            );
        } else {
            assert_eq!(result, Err(MvccError::EmptyKey), "{compare:?}");
        }
    }

    // Other commands need no checks.
    assert_eq!(
        check(
            Op::Compact(CompactionRequest {
                revision: 5,
                physical: false
            }),
            128
        ),
        Ok(())
    );
    assert_eq!(check(Op::SetMember(member(1, "a")), 128), Ok(()));
    assert_eq!(check(Op::RemoveMember(1), 128), Ok(()));
}

#[test]
fn validation_limits_txn_size() {
    let puts =
        |n: usize| -> Vec<RequestOp> { (0..n).map(|i| put_op(&format!("k{i}"), "v")).collect() };
    let compares = |n: usize| -> Vec<Compare> {
        (0..n)
            .map(|i| {
                cmp(
                    &format!("k{i}"),
                    "",
                    CompareTarget::Version,
                    CompareResult::Equal,
                    TargetUnion::Version(0),
                )
            })
            .collect()
    };
    assert_eq!(
        check(Op::Txn(txn(compares(4), puts(4), puts(4))), 4),
        Ok(())
    );
    assert_eq!(
        check(Op::Txn(txn(vec![], puts(5), vec![])), 4),
        Err(MvccError::TooManyOps)
    );
    assert_eq!(
        check(Op::Txn(txn(vec![], vec![], puts(5))), 4),
        Err(MvccError::TooManyOps)
    );
    assert_eq!(
        check(Op::Txn(txn(compares(5), vec![], vec![])), 4),
        Err(MvccError::TooManyOps)
    );
    let nested = txn_op(txn(vec![], puts(5), vec![]));
    assert_eq!(
        check(Op::Txn(txn(vec![], vec![nested], vec![])), 4),
        Err(MvccError::TooManyOps)
    );
    // The default limit is etcd's 128.
    assert_eq!(check(Op::Txn(txn(vec![], puts(128), vec![])), 128), Ok(()));
    assert_eq!(
        check(Op::Txn(txn(vec![], puts(129), vec![])), 128),
        Err(MvccError::TooManyOps)
    );
}

#[test]
fn validation_refuses_a_branch_that_writes_a_key_twice() {
    let del = |k: &str, e: &str| delete_op(delete(k, e));
    let nested =
        |success: Vec<RequestOp>, failure: Vec<RequestOp>| txn_op(txn(vec![], success, failure));
    let dup = Err(MvccError::DuplicateKey);

    assert_eq!(check_txn(vec![put_op("a", "1"), put_op("a", "2")]), dup);
    assert_eq!(check_txn(vec![put_op("a", "1"), put_op("b", "2")]), Ok(()));
    assert_eq!(check_txn(vec![del("a", "c"), put_op("b", "1")]), dup);
    assert_eq!(
        check_txn(vec![put_op("b", "1"), del("a", "c")]),
        dup,
        "deletes anywhere in the branch count"
    );
    assert_eq!(check_txn(vec![del("a", ""), put_op("a", "1")]), dup);
    assert_eq!(
        check_txn(vec![del("a", "c"), put_op("c", "1")]),
        Ok(()),
        "the end is exclusive"
    );
    assert_eq!(check_txn(vec![del("a", ""), put_op("ab", "1")]), Ok(()));
    // Deletes may overlap each other, ranges may repeat.
    assert_eq!(
        check_txn(vec![del("a", "c"), del("b", "d"), del("a", "")]),
        Ok(())
    );
    assert_eq!(
        check_txn(vec![
            range_op(range("a", "")),
            range_op(range("a", "")),
            put_op("a", "1")
        ]),
        Ok(())
    );

    // Nested transactions.
    assert_eq!(
        check_txn(vec![
            put_op("a", "1"),
            nested(vec![put_op("a", "2")], vec![])
        ]),
        dup
    );
    assert_eq!(
        check_txn(vec![
            put_op("a", "1"),
            nested(vec![], vec![put_op("a", "2")])
        ]),
        dup
    );
    assert_eq!(
        check_txn(vec![nested(vec![put_op("a", "1")], vec![put_op("a", "2")])]),
        Ok(()),
        "then and else exclude each other"
    );
    assert_eq!(
        check_txn(vec![del("a", "b"), nested(vec![], vec![put_op("a", "1")])]),
        dup
    );
    assert_eq!(
        check_txn(vec![nested(vec![del("a", "b")], vec![]), put_op("a", "1")]),
        dup
    );
    assert_eq!(
        check_txn(vec![
            nested(vec![put_op("a", "1")], vec![]),
            nested(vec![put_op("a", "2")], vec![])
        ]),
        dup
    );
    assert_eq!(
        check_txn(vec![nested(
            vec![put_op("a", "1"), put_op("a", "2")],
            vec![]
        )]),
        dup
    );
    assert_eq!(
        check_txn(vec![
            nested(vec![put_op("a", "1")], vec![]),
            put_op("b", "2")
        ]),
        Ok(())
    );

    // The two top-level branches are checked separately.
    assert_eq!(
        check(
            Op::Txn(txn(vec![], vec![put_op("a", "1")], vec![put_op("a", "2")])),
            128
        ),
        Ok(())
    );
    assert_eq!(
        check(
            Op::Txn(txn(
                vec![],
                vec![],
                vec![put_op("a", "1"), put_op("a", "2")]
            )),
            128
        ),
        dup
    );
}

#[test]
fn keys_longer_than_the_storage_engine_holds_are_refused_everywhere() {
    use keel_mvcc::MAX_KEY_BYTES;
    let mut h = Harness::new();
    // The longest key, made of zero bytes (escaping doubles them), is stored.
    let longest = Bytes::from(vec![0u8; MAX_KEY_BYTES]);
    let put_longest = PutRequest {
        key: longest.clone(),
        value: b("v"),
        ..Default::default()
    };
    assert_eq!(check(Op::Put(put_longest.clone()), 128), Ok(()));
    h.try_put(put_longest).expect("the longest key is stored");
    let read = h
        .store
        .range(&RangeRequest {
            key: longest.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(read.kvs.len(), 1);
    assert_eq!(read.kvs[0].key, longest);

    // One byte more is refused by validation and, should it reach the
    // store anyway, by apply: in a put, a delete, a compare and a range.
    let too_long = Bytes::from(vec![0u8; MAX_KEY_BYTES + 1]);
    let long_put = PutRequest {
        key: too_long.clone(),
        value: b("v"),
        ..Default::default()
    };
    let long_delete = DeleteRangeRequest {
        key: b("a"),
        range_end: too_long.clone(),
        ..Default::default()
    };
    let long_range = RangeRequest {
        key: too_long.clone(),
        ..Default::default()
    };
    let long_compare = Compare {
        key: b("a"),
        range_end: too_long.clone(),
        target: CompareTarget::Version as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::Version(0)),
    };
    let refused = Err(MvccError::KeyTooLong);
    assert_eq!(check(Op::Put(long_put.clone()), 128), refused);
    assert_eq!(check(Op::DeleteRange(long_delete.clone()), 128), refused);
    assert_eq!(validate::range(&long_range), refused);
    let long_txn = txn(vec![long_compare], vec![], vec![]);
    assert_eq!(check(Op::Txn(long_txn.clone()), 128), refused);

    let revision = h.store.revision();
    assert_eq!(h.try_put(long_put).map(|_| ()), refused);
    assert_eq!(h.try_delete(long_delete).map(|_| ()), refused);
    assert_eq!(h.txn(long_txn).map(|_| ()), refused);
    assert_eq!(h.store.range(&long_range).map(|_| ()), refused);
    assert_eq!(h.store.revision(), revision, "nothing was written");
    h.put("after", "ok");
    assert_eq!(h.store.range(&range("after", "")).unwrap().kvs.len(), 1);
}

/// A put of the empty key that reached the log unvalidated (a peer's
/// forwarded write) fails when applied instead of panicking the storage
/// engine, and writes nothing.
#[test]
fn an_unvalidated_empty_key_put_fails_when_applied() {
    let mut h = Harness::new();
    h.put("a", "1");
    let revision = h.store.revision();
    let empty = PutRequest {
        key: Bytes::new(),
        value: b("v"),
        ..Default::default()
    };
    assert_eq!(h.try_put(empty).map(|_| ()), Err(MvccError::EmptyKey));
    assert_eq!(h.store.revision(), revision, "nothing was written");
    h.put("after", "ok");
    assert_eq!(h.store.range(&range("after", "")).unwrap().kvs.len(), 1);
}

#[test]
fn compacted_history_is_removed_in_steps_that_reads_and_the_hash_cannot_see() {
    let snapshot_len = |store: &Store| {
        let mut out = Vec::new();
        Store::write_snapshot(store.view(), &mut out).unwrap();
        out.len()
    };
    let mut h = Harness::new();
    some_history(&mut h);
    // A key whose deletion, below the point, hides older versions: a read
    // between two steps must never find them.
    for i in 0..4 {
        h.put("gone", &format!("version {i}"));
    }
    h.delete("gone", "");
    for i in 0..20 {
        h.put(&format!("key{}", i % 5), &format!("again {i}"));
    }
    h.delete("key2", "");
    let compacted = h.store.revision() - 3;
    h.compact(compacted).unwrap();

    // Applying the compaction moved the point and removed nothing yet.
    assert_eq!(h.store.compact_revision(), compacted);
    assert_eq!(h.store.physically_compacted(), 0);
    let reads = history(&h.store, compacted);
    let hash = h.store.hash_kv(0).unwrap();
    let hash_at_point = h.store.hash_kv(compacted).unwrap();
    let full = snapshot_len(&h.store);

    // A store restored mid-removal from a snapshot taken mid-removal.
    assert!(
        h.store.compact_step(2).unwrap(),
        "more remains after one key"
    );
    let mut copy = Harness::new();
    some_history(&mut copy);
    assert!(
        copy.store.compact_step(1).unwrap(),
        "the copy is mid-removal too"
    );
    let mut stream = Vec::new();
    Store::write_snapshot(h.store.view(), &mut stream).unwrap();
    copy.store.restore(&mut stream.as_slice()).unwrap();

    for store in [&h.store, &copy.store] {
        let mut steps = 0;
        // One entry per step: steps end inside keys' versions too.
        while store.compact_step(1).unwrap() {
            steps += 1;
            assert_eq!(history(store, compacted), reads, "after {steps} steps");
            assert_eq!(store.hash_kv(0).unwrap(), hash);
        }
        assert!(steps > 1, "removal took several steps");
        assert_eq!(store.physically_compacted(), compacted);
        assert!(!store.compact_step(1).unwrap(), "nothing left");
        assert_eq!(history(store, compacted), reads);
        assert_eq!(store.hash_kv(0).unwrap(), hash);
        assert_eq!(store.hash_kv(compacted).unwrap(), hash_at_point);
        assert!(snapshot_len(store) < full, "old versions are gone");
    }

    // Reopening keeps the progress.
    let h = h.reopen();
    assert_eq!(h.store.physically_compacted(), compacted);
    assert_eq!(history(&h.store, compacted), reads);
}

#[test]
fn compaction_removes_a_key_deleted_by_a_later_write_of_a_txn() {
    let snapshot = |store: &Store| {
        let mut out = Vec::new();
        Store::write_snapshot(store.view(), &mut out).unwrap();
        out
    };
    let mut h = Harness::new();
    h.put("doomed-key", "v1");
    h.put("doomed-key", "v2");
    // The deletion is the txn's second write: its stored form carries its
    // place in the revision.
    h.txn(txn(
        vec![],
        vec![put_op("other", "x"), delete_op(delete("doomed-key", ""))],
        vec![],
    ))
    .unwrap();
    h.put("after", "y");
    let compacted = h.store.revision();
    h.compact(compacted).unwrap();
    while h.store.compact_step(100).unwrap() {}
    let left = snapshot(&h.store);
    assert!(
        !left
            .windows(b"doomed-key".len())
            .any(|w| w == b"doomed-key"),
        "a deleted key's versions outlived compaction"
    );
}

#[test]
fn a_deletion_at_the_compaction_point_stays_for_watches_from_it_until_a_later_compaction() {
    let mut h = Harness::new();
    h.put("doomed-key", "1");
    h.put("other", "1");
    h.delete("doomed-key", "");
    let deleted_at = h.store.revision();
    h.put("other", "2");
    h.compact(deleted_at).unwrap();
    while h.store.compact_step(100).unwrap() {}
    // Watching from the compaction point sees the deletion there, as with
    // etcd, whether one key or a range is watched.
    let events = |key: &'static [u8], end: &'static [u8]| {
        h.store
            .events(
                &Bytes::from_static(key),
                &Bytes::from_static(end),
                deleted_at,
                i64::MAX,
                usize::MAX,
            )
            .unwrap()
            .events
            .iter()
            .map(|e| (e.r#type, e.kv.as_ref().unwrap().mod_revision))
            .collect::<Vec<_>>()
    };
    let delete = keel_api::mvccpb::event::EventType::Delete as i32;
    let put = keel_api::mvccpb::event::EventType::Put as i32;
    assert_eq!(events(b"doomed-key", b""), vec![(delete, deleted_at)]);
    assert_eq!(
        events(b"\0", b"\0"),
        vec![(delete, deleted_at), (put, deleted_at + 1)]
    );
    assert!(h.get("doomed-key").is_none(), "reads do not see it");
    // A later compaction removes it.
    h.compact(deleted_at + 1).unwrap();
    while h.store.compact_step(100).unwrap() {}
    let mut left = Vec::new();
    Store::write_snapshot(h.store.view(), &mut left).unwrap();
    assert!(
        !left
            .windows(b"doomed-key".len())
            .any(|w| w == b"doomed-key"),
        "the deletion outlived the next compaction"
    );
}
