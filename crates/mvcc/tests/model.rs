//! Model-based property test of the store against etcd 3.4's MVCC.
//!
//! The model is deliberately naive: a `Vec` of every version ever written
//! (`(revision, key, Some(kv) | None for a deletion)`), the revision and the
//! compaction point. The state at a revision is a replay of that vector.
//!
//! proptest generates random sequences of puts (with `prev_kv`,
//! `ignore_value`, `ignore_lease`), range deletes, transactions (compares on
//! every target, success and failure branches of puts, deletes and ranges),
//! compactions, store reopenings and range reads (every key form, past and
//! future revisions, limits, sorting, filters, `count_only`, `keys_only`).
//! Writes are grouped into `apply_batch` calls of random sizes. Every write
//! response, every read and, at the end, the whole history at every
//! revision must match the model. Transactions are also run through
//! `validate::command`, whose verdict on duplicate keys must match the
//! model's.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use keel_api::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use keel_api::keelpb::{self, command::Op};
use keel_api::mvccpb::KeyValue;
use keel_mvcc::{validate, Command, MvccError, Store, StoreOptions, WriteResponse};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Generated steps
// ---------------------------------------------------------------------------

/// The keys that get written.
const KEYS: [&str; 5] = ["a", "ab", "b", "c", "d"];
/// Keys and bounds that reads, deletes and compares use: the written keys
/// and some in between and beyond.
const BOUNDS: [&str; 8] = ["a", "aa", "ab", "b", "bb", "c", "d", "e"];
/// Values that get written and compared.
const VALUES: [&str; 4] = ["", "v0", "v1", "v2"];

/// A set of keys in etcd's `key`/`range_end` forms.
#[derive(Debug, Clone)]
enum Span {
    /// One key.
    Single(usize),
    /// `[BOUNDS[i], BOUNDS[j])`: empty when `j <= i`.
    To(usize, usize),
    /// Every key from `BOUNDS[i]` on (`range_end` `"\0"`).
    From(usize),
    /// Every key (`"\0"`, `"\0"`).
    All,
}

impl Span {
    fn key_and_end(&self) -> (Bytes, Bytes) {
        let bound = |i: usize| Bytes::from_static(BOUNDS[i].as_bytes());
        match *self {
            Span::Single(i) => (bound(i), Bytes::new()),
            Span::To(i, j) => (bound(i), bound(j)),
            Span::From(i) => (bound(i), Bytes::from_static(b"\0")),
            Span::All => (Bytes::from_static(b"\0"), Bytes::from_static(b"\0")),
        }
    }
}

#[derive(Debug, Clone)]
struct Put {
    key: usize,
    value: usize,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

#[derive(Debug, Clone)]
struct Delete {
    span: Span,
    prev_kv: bool,
}

#[derive(Debug, Clone)]
struct Cmp {
    span: Span,
    /// A `CompareTarget`.
    target: i32,
    /// A `CompareResult`.
    result: i32,
    /// The operand: an index into `VALUES` for value compares, else the
    /// number compared with.
    operand: i64,
}

#[derive(Debug, Clone)]
enum TxnOp {
    Put(usize, usize, bool),
    Delete(Delete),
    Range(Span, i64),
}

#[derive(Debug, Clone)]
struct Read {
    span: Span,
    /// Picks the revision: `pick % (revision + 2)`, 0 being "current".
    revision: u16,
    limit: i64,
    sort_order: i32,
    sort_target: i32,
    count_only: bool,
    keys_only: bool,
    /// min/max mod/create revision filters, picked like the revision.
    filters: [Option<u16>; 4],
}

#[derive(Debug, Clone)]
enum Write {
    Put(Put),
    Delete(Delete),
    Txn(Vec<Cmp>, Vec<TxnOp>, Vec<TxnOp>),
    /// Picks the revision to compact at: `1 + pick % (revision + 1)`.
    Compact(u16),
}

#[derive(Debug, Clone)]
enum Step {
    /// A write, and whether the batch it joins is applied after it.
    Write(Write, bool),
    /// Applies pending writes, then reads.
    Read(Read),
    /// Applies pending writes, then drops and reopens the store.
    Reopen,
    /// Applies pending writes, then removes compacted history: one chunk
    /// of about this many entries.
    RemoveHistory(usize),
}

fn span() -> impl Strategy<Value = Span> {
    let n = BOUNDS.len();
    prop_oneof![
        4 => (0..n).prop_map(Span::Single),
        3 => (0..n, 0..n).prop_map(|(i, j)| Span::To(i, j)),
        1 => (0..n).prop_map(Span::From),
        1 => Just(Span::All),
    ]
}

fn put() -> impl Strategy<Value = Put> {
    (
        0..KEYS.len(),
        1..VALUES.len(),
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(key, value, prev_kv, ignore_value, ignore_lease)| Put {
            key,
            value,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
}

fn delete() -> impl Strategy<Value = Delete> {
    (span(), any::<bool>()).prop_map(|(span, prev_kv)| Delete { span, prev_kv })
}

fn cmp() -> impl Strategy<Value = Cmp> {
    let span = prop_oneof![
        5 => (0..BOUNDS.len()).prop_map(Span::Single),
        1 => (0..BOUNDS.len(), 0..BOUNDS.len()).prop_map(|(i, j)| Span::To(i, j)),
        1 => (0..BOUNDS.len()).prop_map(Span::From),
    ];
    (span, 0..5i32, 0..4i32, 0..8i64).prop_map(|(span, target, result, operand)| Cmp {
        span,
        target,
        result,
        operand,
    })
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        3 => (0..KEYS.len(), 1..VALUES.len(), any::<bool>()).prop_map(|(k, v, p)| TxnOp::Put(k, v, p)),
        1 => delete().prop_map(TxnOp::Delete),
        2 => (span(), 0..3i64).prop_map(|(s, limit)| TxnOp::Range(s, limit)),
    ]
}

fn read() -> impl Strategy<Value = Read> {
    let filter = || prop_oneof![5 => Just(None), 1 => any::<u16>().prop_map(Some)];
    (
        span(),
        prop_oneof![2 => Just(0u16), 3 => any::<u16>()],
        0..4i64,
        0..3i32,
        0..5i32,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        [filter(), filter(), filter(), filter()],
    )
        .prop_map(
            |(span, revision, limit, sort_order, sort_target, count_only, keys_only, filters)| {
                Read {
                    span,
                    revision,
                    limit,
                    sort_order,
                    sort_target,
                    count_only,
                    keys_only,
                    filters,
                }
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    let write = prop_oneof![
        5 => put().prop_map(Write::Put),
        2 => delete().prop_map(Write::Delete),
        3 => (
            prop::collection::vec(cmp(), 0..3),
            prop::collection::vec(txn_op(), 0..4),
            prop::collection::vec(txn_op(), 0..3),
        )
            .prop_map(|(c, s, f)| Write::Txn(c, s, f)),
        1 => any::<u16>().prop_map(Write::Compact),
    ];
    prop_oneof![
        10 => (write, prop::bool::weighted(0.6)).prop_map(|(w, end)| Step::Write(w, end)),
        4 => read().prop_map(Step::Read),
        1 => Just(Step::Reopen),
        2 => (1..6usize).prop_map(Step::RemoveHistory),
    ]
}

// ---------------------------------------------------------------------------
// Turning steps into requests
// ---------------------------------------------------------------------------

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put_request(p: &Put) -> PutRequest {
    PutRequest {
        key: text(KEYS[p.key]),
        // ignore_value must come without a value.
        value: if p.ignore_value {
            Bytes::new()
        } else {
            text(VALUES[p.value])
        },
        lease: 0,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn delete_request(d: &Delete) -> DeleteRangeRequest {
    let (key, range_end) = d.span.key_and_end();
    DeleteRangeRequest {
        key,
        range_end,
        prev_kv: d.prev_kv,
    }
}

fn compare_request(c: &Cmp) -> Compare {
    let (key, range_end) = c.span.key_and_end();
    let target = CompareTarget::try_from(c.target).unwrap();
    let union = match target {
        CompareTarget::Version => TargetUnion::Version(c.operand),
        CompareTarget::Create => TargetUnion::CreateRevision(c.operand),
        CompareTarget::Mod => TargetUnion::ModRevision(c.operand),
        CompareTarget::Lease => TargetUnion::Lease(c.operand % 2),
        CompareTarget::Value => TargetUnion::Value(text(VALUES[c.operand as usize % VALUES.len()])),
    };
    Compare {
        result: c.result,
        target: c.target,
        key,
        range_end,
        target_union: Some(union),
    }
}

fn txn_ops(ops: &[TxnOp]) -> Vec<RequestOp> {
    ops.iter()
        .map(|op| {
            let request = match op {
                TxnOp::Put(key, value, prev_kv) => Request::RequestPut(PutRequest {
                    key: text(KEYS[*key]),
                    value: text(VALUES[*value]),
                    prev_kv: *prev_kv,
                    ..Default::default()
                }),
                TxnOp::Delete(d) => Request::RequestDeleteRange(delete_request(d)),
                TxnOp::Range(span, limit) => {
                    let (key, range_end) = span.key_and_end();
                    Request::RequestRange(RangeRequest {
                        key,
                        range_end,
                        limit: *limit,
                        ..Default::default()
                    })
                }
            };
            RequestOp {
                request: Some(request),
            }
        })
        .collect()
}

/// A generated revision pick: 0 or a revision up to one past `current`.
fn pick(raw: u16, current: i64) -> i64 {
    i64::from(raw) % (current + 2)
}

fn range_request(r: &Read, current: i64) -> RangeRequest {
    let (key, range_end) = r.span.key_and_end();
    let filter = |f: Option<u16>| f.map_or(0, |raw| pick(raw, current));
    RangeRequest {
        key,
        range_end,
        limit: r.limit,
        revision: pick(r.revision, current),
        sort_order: r.sort_order,
        sort_target: r.sort_target,
        serializable: false,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: filter(r.filters[0]),
        max_mod_revision: filter(r.filters[1]),
        min_create_revision: filter(r.filters[2]),
        max_create_revision: filter(r.filters[3]),
    }
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// Whether `key` is in etcd's `[start, end)` form.
fn in_span(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        b"" => key == start,
        b"\0" => key >= start,
        _ => key >= start && key < end,
    }
}

type State = BTreeMap<Bytes, KeyValue>;

struct Model {
    /// Every version ever written, in revision order; `None` is a deletion.
    versions: Vec<(i64, Bytes, Option<KeyValue>)>,
    revision: i64,
    compacted: i64,
}

impl Model {
    fn new() -> Model {
        Model {
            versions: Vec::new(),
            revision: 1,
            compacted: 0,
        }
    }

    /// The live keys at `revision`.
    fn state_at(&self, revision: i64) -> State {
        let mut state = State::new();
        for (rev, key, kv) in &self.versions {
            if *rev > revision {
                break;
            }
            match kv {
                Some(kv) => state.insert(key.clone(), kv.clone()),
                None => state.remove(key),
            };
        }
        state
    }

    /// The expected response and the key-values that qualified before the
    /// limit (for checking sorts with ties).
    fn range(&self, request: &RangeRequest) -> Result<(RangeResponse, Vec<KeyValue>), MvccError> {
        let revision = if request.revision <= 0 {
            self.revision
        } else {
            request.revision
        };
        if revision > self.revision {
            return Err(MvccError::FutureRevision);
        }
        if revision < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(range_over(&self.state_at(revision), request, self.revision))
    }

    /// Applies a write; on success returns the expected header revision
    /// and the response without headers.
    fn apply(&mut self, op: &Op) -> Result<(i64, WriteResponse), MvccError> {
        if let Op::Compact(c) = op {
            if c.revision <= self.compacted {
                return Err(MvccError::Compacted);
            }
            if c.revision > self.revision {
                return Err(MvccError::FutureRevision);
            }
            self.compacted = c.revision;
            let response = WriteResponse::Compact(CompactionResponse { header: None });
            return Ok((self.revision, response));
        }
        let before = self.state_at(self.revision);
        let mut work = Working {
            state: before.clone(),
            changes: Vec::new(),
            revision: self.revision + 1,
        };
        let response = match op {
            Op::Put(p) => WriteResponse::Put(work.put(p)?),
            Op::DeleteRange(d) => WriteResponse::DeleteRange(work.delete(d)),
            Op::Txn(t) => WriteResponse::Txn(work.txn(t, &before)?),
            other => unreachable!("not generated: {other:?}"),
        };
        if !work.changes.is_empty() {
            self.revision += 1;
            for (key, kv) in work.changes {
                self.versions.push((self.revision, key, kv));
            }
        }
        Ok((self.revision, response))
    }
}

/// A write in progress: the state it sees and what it changed.
struct Working {
    state: State,
    changes: Vec<(Bytes, Option<KeyValue>)>,
    /// The revision the write creates if it changes anything.
    revision: i64,
}

impl Working {
    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, MvccError> {
        let previous = self.state.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && previous.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: previous
                .as_ref()
                .map_or(self.revision, |kv| kv.create_revision),
            mod_revision: self.revision,
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            value: match &previous {
                Some(kv) if p.ignore_value => kv.value.clone(),
                _ => p.value.clone(),
            },
            lease: match &previous {
                Some(kv) if p.ignore_lease => kv.lease,
                _ => p.lease,
            },
        };
        self.state.insert(p.key.clone(), kv.clone());
        self.changes.push((p.key.clone(), Some(kv)));
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv { previous } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = self
            .state
            .values()
            .filter(|kv| in_span(&kv.key, &d.key, &d.range_end))
            .cloned()
            .collect();
        for kv in &doomed {
            self.state.remove(&kv.key);
            self.changes.push((kv.key.clone(), None));
        }
        DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
        }
    }

    /// Runs a txn whose compares see `before`.
    fn txn(&mut self, t: &TxnRequest, before: &State) -> Result<TxnResponse, MvccError> {
        let succeeded = t.compare.iter().all(|c| holds(before, c));
        let branch = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::new();
        for op in branch {
            let response = match op.request.as_ref().expect("generated ops are set") {
                Request::RequestPut(p) => Response::ResponsePut(self.put(p)?),
                Request::RequestDeleteRange(d) => Response::ResponseDeleteRange(self.delete(d)),
                Request::RequestRange(r) => {
                    Response::ResponseRange(range_over(&self.state, r, 0).0)
                }
                Request::RequestTxn(nested) => Response::ResponseTxn(self.txn(nested, before)?),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}

/// Whether a compare holds in `state`: for every key it covers; compared
/// with zeros when it covers none, except that value compares then fail.
fn holds(state: &State, c: &Compare) -> bool {
    let kvs: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_span(&kv.key, &c.key, &c.range_end))
        .collect();
    if kvs.is_empty() {
        return c.target != CompareTarget::Value as i32 && compare_one(c, &KeyValue::default());
    }
    kvs.iter().all(|kv| compare_one(c, kv))
}

fn compare_one(c: &Compare, kv: &KeyValue) -> bool {
    let ordering = match (CompareTarget::try_from(c.target).unwrap(), &c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(n))) => kv.version.cmp(n),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(n))) => kv.create_revision.cmp(n),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(n))) => kv.mod_revision.cmp(n),
        (CompareTarget::Lease, Some(TargetUnion::Lease(n))) => kv.lease.cmp(n),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_ref().cmp(v.as_ref()),
        other => unreachable!("not generated: {other:?}"),
    };
    match CompareResult::try_from(c.result).unwrap() {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The sort order etcd 3.4 applies: none for the key with no order (the
/// results already ascend by key), ascending for another target with no
/// order.
fn effective_order(request: &RangeRequest) -> (SortOrder, SortTarget) {
    let target = SortTarget::try_from(request.sort_target).unwrap();
    let order = match SortOrder::try_from(request.sort_order).unwrap() {
        SortOrder::None if target != SortTarget::Key => SortOrder::Ascend,
        order => order,
    };
    (order, target)
}

/// What a key-value is sorted by.
fn sort_key(kv: &KeyValue, target: SortTarget) -> (i64, Bytes) {
    match target {
        SortTarget::Key => (0, kv.key.clone()),
        SortTarget::Version => (kv.version, Bytes::new()),
        SortTarget::Create => (kv.create_revision, Bytes::new()),
        SortTarget::Mod => (kv.mod_revision, Bytes::new()),
        SortTarget::Value => (0, kv.value.clone()),
    }
}

/// etcd 3.4's range over live keys `state`: count before filters, filters,
/// sort, limit, keys_only.
fn range_over(
    state: &State,
    request: &RangeRequest,
    header: i64,
) -> (RangeResponse, Vec<KeyValue>) {
    let live: Vec<KeyValue> = state
        .values()
        .filter(|kv| in_span(&kv.key, &request.key, &request.range_end))
        .cloned()
        .collect();
    let mut response = RangeResponse {
        header: Some(ResponseHeader {
            revision: header,
            ..Default::default()
        }),
        kvs: Vec::new(),
        more: false,
        count: live.len() as i64,
    };
    if request.count_only {
        return (response, Vec::new());
    }
    let passes = |kv: &KeyValue| {
        (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
            && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
            && (request.min_create_revision == 0
                || kv.create_revision >= request.min_create_revision)
            && (request.max_create_revision == 0
                || kv.create_revision <= request.max_create_revision)
    };
    let mut kvs: Vec<KeyValue> = live.into_iter().filter(|kv| passes(kv)).collect();
    let (order, target) = effective_order(request);
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by_key(|kv| sort_key(kv, target)),
        SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(sort_key(kv, target))),
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    let qualified = kvs.clone();
    if request.limit > 0 && kvs.len() as i64 > request.limit {
        kvs.truncate(request.limit as usize);
        response.more = true;
    }
    response.kvs = kvs;
    (response, qualified)
}

/// The model's duplicate-key rule for a branch without nested txns: no key
/// put twice, no key put inside a range the branch deletes.
fn branch_valid(ops: &[RequestOp]) -> bool {
    let deleted: Vec<&DeleteRangeRequest> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(d),
            _ => None,
        })
        .collect();
    let mut put = HashSet::new();
    ops.iter().all(|op| match &op.request {
        Some(Request::RequestPut(p)) => {
            put.insert(p.key.clone())
                && !deleted.iter().any(|d| {
                    // etcd's duplicate check takes a from-key delete's "\0"
                    // literally: an empty range.
                    d.range_end.as_ref() != b"\0" && in_span(&p.key, &d.key, &d.range_end)
                })
        }
        _ => true,
    })
}

// ---------------------------------------------------------------------------
// Comparing store and model
// ---------------------------------------------------------------------------

/// Removes the headers of a write response (nested ones too), returning
/// the top-level header's revision.
fn strip_headers(response: WriteResponse) -> (Option<i64>, WriteResponse) {
    fn strip_txn(t: &mut TxnResponse) {
        t.header = None;
        for op in &mut t.responses {
            match &mut op.response {
                Some(Response::ResponseRange(r)) => r.header = None,
                Some(Response::ResponsePut(r)) => r.header = None,
                Some(Response::ResponseDeleteRange(r)) => r.header = None,
                Some(Response::ResponseTxn(t)) => strip_txn(t),
                None => {}
            }
        }
    }
    let revision = |h: &Option<ResponseHeader>| h.as_ref().map(|h| h.revision);
    match response {
        WriteResponse::Put(mut r) => (revision(&r.header.take()), WriteResponse::Put(r)),
        WriteResponse::DeleteRange(mut r) => {
            (revision(&r.header.take()), WriteResponse::DeleteRange(r))
        }
        WriteResponse::Compact(mut r) => (revision(&r.header.take()), WriteResponse::Compact(r)),
        WriteResponse::Txn(mut r) => {
            let top = revision(&r.header);
            strip_txn(&mut r);
            (top, WriteResponse::Txn(r))
        }
        other => (None, other),
    }
}

/// Checks a store's range answer against the model's. With ties possible
/// (sorting by something else than the key) only the order of the sort
/// keys is determined, so the kvs are checked by their sort keys and by
/// membership.
fn check_range(
    request: &RangeRequest,
    got: Result<RangeResponse, MvccError>,
    want: Result<(RangeResponse, Vec<KeyValue>), MvccError>,
) -> Result<(), TestCaseError> {
    let (got, (want, qualified)) = match (got, want) {
        (Err(got), Err(want)) => {
            prop_assert_eq!(got, want, "range {:?}", request);
            return Ok(());
        }
        (Ok(got), Ok(want)) => (got, want),
        (got, want) => {
            return Err(TestCaseError::fail(format!(
                "range {request:?}: store answered {got:?}, model {want:?}"
            )))
        }
    };
    let (order, target) = effective_order(request);
    if order == SortOrder::None || target == SortTarget::Key {
        prop_assert_eq!(got, want, "range {:?}", request);
        return Ok(());
    }
    prop_assert_eq!(&got.header, &want.header, "range {:?}", request);
    prop_assert_eq!(got.count, want.count, "range {:?}", request);
    prop_assert_eq!(got.more, want.more, "range {:?}: {:?}", request, got.kvs);
    let sort_keys = |kvs: &[KeyValue]| {
        kvs.iter()
            .map(|kv| sort_key(kv, target))
            .collect::<Vec<_>>()
    };
    prop_assert_eq!(
        sort_keys(&got.kvs),
        sort_keys(&want.kvs),
        "range {:?}: {:?}",
        request,
        got.kvs
    );
    let mut seen = HashSet::new();
    for kv in &got.kvs {
        prop_assert!(
            qualified.contains(kv),
            "range {:?}: unexpected {:?}",
            request,
            kv
        );
        prop_assert!(
            seen.insert(kv.key.clone()),
            "range {:?}: {:?} twice",
            request,
            kv.key
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// A store, the model, and the batch of writes not applied yet together
/// with what the model expects them to answer.
struct Run {
    dir: TempDir,
    store: Option<Store>,
    model: Model,
    index: u64,
    pending: Vec<(u64, Command, Expected)>,
}

/// What the model expects a write to answer: the header revision and the
/// response without headers.
type Expected = Result<(i64, WriteResponse), MvccError>;

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("opening the store");
        Run {
            dir,
            store: Some(store),
            model: Model::new(),
            index: 0,
            pending: Vec::new(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    /// Queues a write at the next index, computing the model's answer now
    /// (the store applies a batch in order, so the model can run ahead).
    fn write(&mut self, write: &Write) -> Result<(), TestCaseError> {
        let op = match write {
            Write::Put(p) => Op::Put(put_request(p)),
            Write::Delete(d) => Op::DeleteRange(delete_request(d)),
            Write::Txn(compares, success, failure) => {
                let txn = TxnRequest {
                    compare: compares.iter().map(compare_request).collect(),
                    success: txn_ops(success),
                    failure: txn_ops(failure),
                };
                let valid = branch_valid(&txn.success) && branch_valid(&txn.failure);
                let command = keelpb::Command {
                    op: Some(Op::Txn(txn.clone())),
                    auth: None,
                };
                let verdict = validate::command(&command, 128);
                if valid {
                    prop_assert_eq!(&verdict, &Ok(()), "validating {:?}", txn);
                } else {
                    prop_assert_eq!(
                        &verdict,
                        &Err(MvccError::DuplicateKey),
                        "validating {:?}",
                        txn
                    );
                    // The server would refuse it: it never reaches the log.
                    return Ok(());
                }
                Op::Txn(txn)
            }
            Write::Compact(raw) => Op::Compact(CompactionRequest {
                revision: 1 + i64::from(*raw) % (self.model.revision + 1),
                physical: false,
            }),
        };
        if let Op::Put(p) = &op {
            let command = keelpb::Command {
                op: Some(op.clone()),
                auth: None,
            };
            prop_assert_eq!(
                validate::command(&command, 128),
                Ok(()),
                "validating {:?}",
                p
            );
        }
        let expected = self.model.apply(&op);
        self.index += 1;
        self.pending.push((
            self.index,
            Command(keelpb::Command {
                op: Some(op),
                auth: None,
            }),
            expected,
        ));
        Ok(())
    }

    /// Applies the pending batch and compares every answer.
    fn flush(&mut self) -> Result<(), TestCaseError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let mut commands = Vec::new();
        let mut expected = Vec::new();
        for (index, command, want) in pending {
            expected.push((command.clone(), want));
            commands.push((index, command));
        }
        let results = self.store().apply_batch(commands).responses;
        prop_assert_eq!(results.len(), expected.len());
        for (got, (command, want)) in results.into_iter().zip(expected) {
            let got = got.map(strip_headers);
            let want = want.map(|(revision, response)| (Some(revision), strip_headers(response).1));
            prop_assert_eq!(got, want, "applying {:?}", command.0);
        }
        self.check_meta()
    }

    fn check_meta(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.store().revision(), self.model.revision);
        prop_assert_eq!(self.store().compact_revision(), self.model.compacted);
        prop_assert_eq!(self.store().applied_index(), self.index);
        Ok(())
    }

    fn read(&mut self, read: &Read) -> Result<(), TestCaseError> {
        self.flush()?;
        let request = range_request(read, self.model.revision);
        check_range(
            &request,
            self.store().range(&request),
            self.model.range(&request),
        )
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.flush()?;
        drop(self.store.take());
        self.store =
            Some(Store::open(self.dir.path(), StoreOptions::default()).expect("reopening"));
        self.check_meta()
    }

    fn remove_history(&mut self, chunk: usize) -> Result<(), TestCaseError> {
        self.flush()?;
        self.store().compact_step(chunk).expect("removing history");
        prop_assert!(self.store().physically_compacted() <= self.model.compacted);
        self.check_meta()
    }

    /// Removes all compacted history: what reads and the hash see must
    /// not change.
    fn finish_removing_history(&mut self) -> Result<(), TestCaseError> {
        self.flush()?;
        let hash = self.store().hash_kv(0).expect("hash");
        while self.store().compact_step(3).expect("removing history") {}
        prop_assert_eq!(self.store().physically_compacted(), self.model.compacted);
        prop_assert_eq!(self.store().hash_kv(0).expect("hash"), hash);
        self.check_history()
    }

    /// Every key at every revision, and a few single keys.
    fn check_history(&mut self) -> Result<(), TestCaseError> {
        self.flush()?;
        for revision in 1..=self.model.revision + 1 {
            for (key, range_end) in [("\0", "\0"), ("a", ""), ("b", "c")] {
                let request = RangeRequest {
                    key: text(key),
                    range_end: text(range_end),
                    revision,
                    ..Default::default()
                };
                check_range(
                    &request,
                    self.store().range(&request),
                    self.model.range(&request),
                )?;
            }
        }
        Ok(())
    }
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for step in steps {
        match step {
            Step::Write(write, end_batch) => {
                run.write(write)?;
                if *end_batch {
                    run.flush()?;
                }
            }
            Step::Read(read) => run.read(read)?,
            Step::Reopen => run.reopen()?,
            Step::RemoveHistory(chunk) => run.remove_history(*chunk)?,
        }
    }
    run.check_history()?;
    run.finish_removing_history()
}

proptest! {
    #![proptest_config(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn the_store_behaves_like_the_model(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }
}

/// The model itself, on a hand-checked history, so that a broken model
/// cannot make the property vacuous.
#[test]
fn the_model_knows_etcd() {
    let mut model = Model::new();
    let put = |key: &str, value: &str| {
        Op::Put(PutRequest {
            key: text(key),
            value: text(value),
            ..Default::default()
        })
    };
    assert_eq!(model.apply(&put("a", "1")).unwrap().0, 2);
    assert_eq!(model.apply(&put("a", "2")).unwrap().0, 3);
    assert_eq!(model.apply(&put("b", "1")).unwrap().0, 4);
    let delete_nothing = Op::DeleteRange(DeleteRangeRequest {
        key: text("zz"),
        ..Default::default()
    });
    assert_eq!(model.apply(&delete_nothing).unwrap().0, 4);
    let a = model.state_at(4)[&text("a")].clone();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    let all = RangeRequest {
        key: text("\0"),
        range_end: text("\0"),
        revision: 2,
        ..Default::default()
    };
    let (response, _) = model.range(&all).unwrap();
    assert_eq!(response.count, 1);
    assert_eq!(response.kvs[0].value, text("1"));
    assert_eq!(response.header.unwrap().revision, 4);
    assert_eq!(
        model
            .range(&RangeRequest {
                revision: 5,
                ..all.clone()
            })
            .map(|r| r.0),
        Err(MvccError::FutureRevision)
    );
    let compact = |revision| {
        Op::Compact(CompactionRequest {
            revision,
            physical: false,
        })
    };
    assert!(model.apply(&compact(3)).is_ok());
    assert_eq!(
        model.apply(&compact(3)).map(|r| r.0),
        Err(MvccError::Compacted)
    );
    assert_eq!(model.range(&all).map(|r| r.0), Err(MvccError::Compacted));
    let missing_value = Compare {
        target: CompareTarget::Value as i32,
        result: CompareResult::NotEqual as i32,
        key: text("zz"),
        target_union: Some(TargetUnion::Value(text("x"))),
        ..Default::default()
    };
    assert!(!holds(&model.state_at(4), &missing_value));
    let missing_version = Compare {
        target: CompareTarget::Version as i32,
        result: CompareResult::Equal as i32,
        key: text("zz"),
        target_union: Some(TargetUnion::Version(0)),
        ..Default::default()
    };
    assert!(holds(&model.state_at(4), &missing_version));
}
