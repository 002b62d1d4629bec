//! The write side: applying committed commands in one storage batch.
//!
//! Commands of a batch read the committed snapshot taken when the batch
//! began plus what earlier commands of the batch wrote (`pending`); the
//! writes of the command being applied are `staged` and only join the batch
//! when the command succeeds, so a failed command changes nothing.

use std::collections::BTreeMap;
use std::mem;

use bytes::Bytes;
use fjall::{OwnedWriteBatch, Readable, Snapshot};
use prost::Message;
use tracing::error;

use crate::encoding::{decode_live, encode_live, encode_version, version_key};
use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, compare, request_op::Request, response_op::Response, AlarmMember,
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse, Compare,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader, ResponseOp,
    TxnRequest, TxnResponse,
};
use crate::pb::keelpb::command::Op;
use crate::pb::mvccpb::KeyValue;
use crate::range::{self, Committed, Span, Versions};
use crate::store::{
    alarm_key, revision_bytes, State, Store, APPLIED, COMPACTED, LIVE_INDEXED, PHYSICAL, REVISION,
};
use crate::{validate, Command, MvccError, WriteResponse};

impl Store {
    /// Applies commands committed at increasing raft indexes, all in one
    /// storage batch together with the new applied index, and returns one
    /// result per command. Commands at or below the applied index were
    /// applied before (a log replay after restart) and are skipped. The
    /// batch is not synced: the raft log is the durable record.
    pub fn apply_batch(
        &self,
        commands: Vec<(u64, Command)>,
    ) -> Vec<Result<WriteResponse, MvccError>> {
        let _writer = self.lock_writer();
        let mut writer = Writer::new(self);
        let mut responses = Vec::with_capacity(commands.len());
        for (index, Command(command)) in commands {
            if index <= writer.state.applied {
                responses.push(Ok(WriteResponse::AlreadyApplied));
                continue;
            }
            let response = writer.apply(command.op);
            writer.state.applied = index;
            responses.push(response);
        }
        if let Err(e) = writer.commit() {
            error!(error = %e, "committing applied commands failed");
            return responses.iter().map(|_| Err(e.clone())).collect();
        }
        responses
    }
}

/// One version of a key: `None` is a deletion.
type Version = Option<KeyValue>;

struct Writer<'a> {
    store: &'a Store,
    /// Committed state when the batch (or its last flush) began.
    snapshot: Snapshot,
    /// The revision `snapshot` holds.
    snapshot_revision: i64,
    batch: OwnedWriteBatch,
    /// The state including the batch so far.
    state: State,
    /// Versions written by earlier commands of the batch, oldest first.
    pending: BTreeMap<Bytes, Vec<(i64, Version)>>,
    /// Writes of the command being applied, at `state.revision + 1`.
    staged: Vec<(Bytes, Version)>,
}

impl<'a> Writer<'a> {
    fn new(store: &'a Store) -> Self {
        let state = store.state();
        Writer {
            store,
            snapshot: store.inner.db.snapshot(),
            snapshot_revision: state.revision,
            batch: store.inner.db.batch(),
            state,
            pending: BTreeMap::new(),
            staged: Vec::new(),
        }
    }

    fn apply(&mut self, op: Option<Op>) -> Result<WriteResponse, MvccError> {
        self.staged.clear();
        let response = match op {
            Some(Op::Put(put)) => {
                self.refuse_if_no_space()?;
                self.put(&put).map(WriteResponse::Put)
            }
            Some(Op::DeleteRange(delete)) => self.delete(&delete).map(WriteResponse::DeleteRange),
            Some(Op::Txn(txn)) => {
                if has_put(&txn) {
                    self.refuse_if_no_space()?;
                }
                self.txn(&txn).map(WriteResponse::Txn)
            }
            Some(Op::Compact(compact)) => self.compact(&compact).map(WriteResponse::Compact),
            Some(Op::SetMember(member)) => {
                self.batch.insert(
                    &self.store.inner.keyspaces.members,
                    member.id.to_be_bytes(),
                    member.encode_to_vec(),
                );
                self.state.members.insert(member.id, member);
                Ok(WriteResponse::Member)
            }
            Some(Op::RemoveMember(id)) => {
                self.batch
                    .remove(&self.store.inner.keyspaces.members, id.to_be_bytes());
                self.state.members.remove(&id);
                Ok(WriteResponse::Member)
            }
            Some(Op::Alarm(alarm)) => self.alarm(&alarm).map(WriteResponse::Alarm),
            None => Err(MvccError::InvalidArgument("empty command".into())),
        };
        match response {
            Ok(mut response) => {
                self.publish_staged();
                set_header(&mut response, self.state.revision);
                Ok(response)
            }
            Err(e) => {
                self.staged.clear();
                Err(e)
            }
        }
    }

    fn refuse_if_no_space(&self) -> Result<(), MvccError> {
        let nospace = AlarmType::Nospace as i32;
        if self.state.alarms.iter().any(|&(_, alarm)| alarm == nospace) {
            return Err(MvccError::NoSpace);
        }
        Ok(())
    }

    /// The revision reads of the current command see: one past the store's
    /// once the command has written something.
    fn current(&self) -> i64 {
        self.state.revision + i64::from(!self.staged.is_empty())
    }

    /// The live version of `key` now, including the batch and the command.
    fn get(&self, key: &Bytes) -> Result<Option<KeyValue>, MvccError> {
        if let Some((_, version)) = self.staged.iter().rev().find(|(k, _)| k == key) {
            return Ok(version.clone());
        }
        if let Some((_, version)) = self.pending.get(key).and_then(|v| v.last()) {
            return Ok(version.clone());
        }
        match self.snapshot.get(&self.store.inner.keyspaces.live, key)? {
            None => Ok(None),
            Some(value) => decode_live(key, &value).map(Some),
        }
    }

    fn put(&mut self, put: &PutRequest) -> Result<PutResponse, MvccError> {
        // Validated before proposing, but a command that reached the log
        // unchecked must fail here, not panic the storage engine.
        validate::keys(&put.key, &[])?;
        let previous = self.get(&put.key)?;
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        let revision = self.state.revision + 1;
        let kv = KeyValue {
            key: put.key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value: match (&previous, put.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => put.value.clone(),
            },
            lease: match (&previous, put.ignore_lease) {
                (Some(p), true) => p.lease,
                _ => put.lease,
            },
        };
        self.staged.push((put.key.clone(), Some(kv)));
        Ok(PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous } else { None },
        })
    }

    fn delete(&mut self, delete: &DeleteRangeRequest) -> Result<DeleteRangeResponse, MvccError> {
        let doomed = match Span::new(&delete.key, &delete.range_end)? {
            Some(span) => self.live(&span, self.current())?,
            None => Vec::new(),
        };
        for kv in &doomed {
            self.staged.push((kv.key.clone(), None));
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if delete.prev_kv { doomed } else { Vec::new() },
        })
    }

    fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        // Every compare, nested ones included, sees the state before the txn.
        let path = self.choose(txn)?;
        self.run(txn, &path)
    }

    /// Decides which branch each transaction on the way takes.
    fn choose(&self, txn: &TxnRequest) -> Result<Path, MvccError> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !self.holds(c)? {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.choose(t)),
                _ => None,
            })
            .collect::<Result<_, _>>()?;
        Ok(Path { succeeded, nested })
    }

    fn run(&mut self, txn: &TxnRequest, path: &Path) -> Result<TxnResponse, MvccError> {
        let branch = if path.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Response::ResponseRange(range::execute(
                    self,
                    r,
                    self.current(),
                    self.state.compacted,
                )?),
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete(d)?)
                }
                Some(Request::RequestTxn(t)) => {
                    let path = nested
                        .next()
                        .ok_or_else(|| MvccError::InvalidArgument("txn path".into()))?;
                    Response::ResponseTxn(self.run(t, path)?)
                }
                None => return Err(MvccError::InvalidArgument("empty txn operation".into())),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        })
    }

    /// Whether a compare holds for every key it covers.
    fn holds(&self, c: &Compare) -> Result<bool, MvccError> {
        let kvs = match Span::new(&c.key, &c.range_end)? {
            Some(span) => self.live(&span, self.current())?,
            None => Vec::new(),
        };
        let target = compare::CompareTarget::try_from(c.target).map_err(|_| {
            MvccError::InvalidArgument(format!("invalid compare target {}", c.target))
        })?;
        if kvs.is_empty() {
            // A missing value cannot be told from an empty one: etcd fails
            // value compares on missing keys and compares the rest to zero.
            if target == compare::CompareTarget::Value {
                return Ok(false);
            }
            return Ok(compare_kv(c, target, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, target, kv)))
    }

    fn compact(&mut self, compact: &CompactionRequest) -> Result<CompactionResponse, MvccError> {
        if compact.revision <= self.state.compacted {
            return Err(MvccError::Compacted);
        }
        if compact.revision > self.state.revision {
            return Err(MvccError::FutureRevision);
        }
        // Only the point moves here; `Store::compact_step` removes the
        // history below it afterwards.
        self.state.compacted = compact.revision;
        Ok(CompactionResponse { header: None })
    }

    fn alarm(&mut self, request: &AlarmRequest) -> Result<AlarmResponse, MvccError> {
        let keyspace = &self.store.inner.keyspaces.alarms;
        let action = AlarmAction::try_from(request.action).map_err(|_| {
            MvccError::InvalidArgument(format!("unknown alarm action {}", request.action))
        })?;
        let entry = (request.member_id, request.alarm);
        let alarms = match action {
            AlarmAction::Get => self
                .state
                .alarms
                .iter()
                .filter(|&&(_, alarm)| {
                    request.alarm == AlarmType::None as i32 || alarm == request.alarm
                })
                .copied()
                .collect(),
            AlarmAction::Activate if request.alarm != AlarmType::None as i32 => {
                if self.state.alarms.insert(entry) {
                    self.batch.insert(keyspace, alarm_key(entry.0, entry.1), []);
                    vec![entry]
                } else {
                    Vec::new()
                }
            }
            AlarmAction::Activate => Vec::new(),
            AlarmAction::Deactivate => {
                if self.state.alarms.remove(&entry) {
                    self.batch.remove(keyspace, alarm_key(entry.0, entry.1));
                    vec![entry]
                } else {
                    Vec::new()
                }
            }
        };
        Ok(AlarmResponse {
            header: None,
            alarms: alarms
                .into_iter()
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
        })
    }

    /// Moves the successful command's writes into the batch, at one new
    /// revision.
    fn publish_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        self.state.revision += 1;
        let revision = self.state.revision;
        let keyspaces = &self.store.inner.keyspaces;
        for (key, version) in mem::take(&mut self.staged) {
            self.batch.insert(
                &keyspaces.kv,
                version_key(&key, revision),
                encode_version(version.as_ref()),
            );
            match &version {
                Some(kv) => self
                    .batch
                    .insert(&keyspaces.live, key.as_ref(), encode_live(kv)),
                None => self.batch.remove(&keyspaces.live, key.as_ref()),
            }
            self.pending
                .entry(key)
                .or_default()
                .push((revision, version));
        }
    }

    /// Commits the batch with the state it reached, publishes the state and
    /// starts a new batch on a fresh snapshot.
    fn commit(&mut self) -> Result<(), MvccError> {
        let meta = &self.store.inner.keyspaces.meta;
        let mut batch = mem::replace(&mut self.batch, self.store.inner.db.batch());
        batch.insert(meta, APPLIED, self.state.applied.to_be_bytes());
        batch.insert(meta, REVISION, revision_bytes(self.state.revision));
        batch.insert(meta, LIVE_INDEXED, revision_bytes(self.state.revision));
        batch.insert(meta, COMPACTED, revision_bytes(self.state.compacted));
        batch.insert(meta, PHYSICAL, revision_bytes(self.state.physical));
        {
            let mut published = self
                .store
                .inner
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            batch.commit()?;
            *published = self.state.clone();
        }
        self.snapshot = self.store.inner.db.snapshot();
        self.snapshot_revision = self.state.revision;
        self.pending.clear();
        Ok(())
    }
}

impl Versions for Writer<'_> {
    fn live(&self, span: &Span, revision: i64) -> Result<Vec<KeyValue>, MvccError> {
        let committed = Committed {
            snapshot: &self.snapshot,
            revision: self.snapshot_revision,
            keyspaces: &self.store.inner.keyspaces,
        };
        let mut found: BTreeMap<Bytes, KeyValue> = committed
            .live(span, revision)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let mut overlay = |key: &Bytes, version: &Version| match version {
            Some(kv) => {
                found.insert(key.clone(), kv.clone());
            }
            None => {
                found.remove(key);
            }
        };
        for (key, versions) in self.pending.range(span.user_bounds()) {
            if let Some((_, version)) = versions.iter().rev().find(|(rev, _)| *rev <= revision) {
                overlay(key, version);
            }
        }
        if self.state.revision < revision {
            for (key, version) in &self.staged {
                if span.contains(key) {
                    overlay(key, version);
                }
            }
        }
        Ok(found.into_values().collect())
    }
}

/// The branch a transaction takes and the paths of the transactions nested
/// in that branch, in order.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn compare_kv(c: &Compare, target: compare::CompareTarget, kv: &KeyValue) -> bool {
    use compare::{CompareTarget as T, TargetUnion as U};
    let ordering = match (target, &c.target_union) {
        (T::Value, Some(U::Value(v))) => kv.value.as_ref().cmp(v.as_ref()),
        (T::Value, _) => kv.value.as_ref().cmp(&[][..]),
        (T::Version, u) => kv.version.cmp(&int_target(u)),
        (T::Create, u) => kv.create_revision.cmp(&int_target(u)),
        (T::Mod, u) => kv.mod_revision.cmp(&int_target(u)),
        (T::Lease, u) => kv.lease.cmp(&int_target(u)),
    };
    match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => ordering.is_eq(),
        Ok(compare::CompareResult::NotEqual) => ordering.is_ne(),
        Ok(compare::CompareResult::Greater) => ordering.is_gt(),
        Ok(compare::CompareResult::Less) => ordering.is_lt(),
        Err(_) => false,
    }
}

fn int_target(union: &Option<compare::TargetUnion>) -> i64 {
    use compare::TargetUnion as U;
    match union {
        Some(U::Version(n) | U::CreateRevision(n) | U::ModRevision(n) | U::Lease(n)) => *n,
        Some(U::Value(_)) | None => 0,
    }
}

/// Whether a transaction puts anything, in any branch at any depth.
fn has_put(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => has_put(t),
            _ => false,
        })
}

/// Fills the response headers (nested ones too) with the revision.
fn set_header(response: &mut WriteResponse, revision: i64) {
    let header = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    match response {
        WriteResponse::Put(r) => r.header = header,
        WriteResponse::DeleteRange(r) => r.header = header,
        WriteResponse::Txn(r) => set_txn_headers(r, header),
        WriteResponse::Compact(r) => r.header = header,
        WriteResponse::Alarm(r) => r.header = header,
        WriteResponse::Member | WriteResponse::AlreadyApplied => {}
    }
}

fn set_txn_headers(txn: &mut TxnResponse, header: Option<ResponseHeader>) {
    txn.header = header;
    for op in &mut txn.responses {
        match &mut op.response {
            Some(Response::ResponsePut(r)) => r.header = header,
            Some(Response::ResponseDeleteRange(r)) => r.header = header,
            Some(Response::ResponseTxn(t)) => set_txn_headers(t, header),
            Some(Response::ResponseRange(_)) | None => {}
        }
    }
}
