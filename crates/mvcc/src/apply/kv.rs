//! The key space's part of a batch: puts, deletes, transactions and the
//! compaction point. Each successful command's writes land at one new
//! revision, and each write becomes an event (`PUT` or `DELETE`, with the
//! previous version) in revision order.

use std::collections::BTreeMap;
use std::mem;

use bytes::Bytes;
use fjall::Readable;
use keel_api::etcdserverpb::{
    compare, request_op::Request, response_op::Response, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
};
use keel_api::mvccpb::KeyValue;

use super::{Change, Version, Writer};
use crate::encoding::{change_key, decode_live, encode_live, encode_version, version_key};
use crate::events::event_of;
use crate::range::{self, Committed, Span, Versions};
use crate::schema::attached_key;
use crate::{validate, MvccError};

impl Writer<'_> {
    /// The revision reads of the current command see: one past the store's
    /// once the command has written something.
    fn current(&self) -> i64 {
        self.state.revision + i64::from(!self.staged.is_empty())
    }

    /// The live version of `key` now, including the batch and the command.
    pub(super) fn get(&self, key: &Bytes) -> Result<Option<KeyValue>, MvccError> {
        if let Some(change) = self.staged.iter().rev().find(|c| c.key == key) {
            return Ok(change.version.clone());
        }
        if let Some((_, version)) = self.pending.get(key).and_then(|v| v.last()) {
            return Ok(version.clone());
        }
        match self.snapshot.get(&self.store.inner.keyspaces.live, key)? {
            None => Ok(None),
            Some(value) => decode_live(key, &value).map(Some),
        }
    }

    pub(super) fn put(&mut self, put: &PutRequest) -> Result<PutResponse, MvccError> {
        // Validated before proposing, but a command that reached the log
        // unchecked must fail here, not panic the storage engine.
        validate::keys(&put.key, &[])?;
        let previous = self.get(&put.key)?;
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if put.lease != 0 && !put.ignore_lease && self.lease(put.lease).is_none() {
            return Err(MvccError::LeaseNotFound);
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
        let prev_kv = if put.prev_kv { previous.clone() } else { None };
        self.staged.push(Change {
            key: put.key.clone(),
            version: Some(kv),
            previous,
        });
        Ok(PutResponse {
            header: None,
            prev_kv,
        })
    }

    pub(super) fn delete(
        &mut self,
        delete: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let doomed = match Span::new(&delete.key, &delete.range_end)? {
            Some(span) => self.live(&span, self.current())?,
            None => Vec::new(),
        };
        for kv in &doomed {
            self.staged.push(Change {
                key: kv.key.clone(),
                version: None,
                previous: Some(kv.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs: if delete.prev_kv { doomed } else { Vec::new() },
        })
    }

    pub(super) fn txn(&mut self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
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
                Some(Request::RequestPut(p)) => {
                    let mut put = self.put(p)?;
                    put.header = self.header_now();
                    Response::ResponsePut(put)
                }
                Some(Request::RequestDeleteRange(d)) => {
                    let mut delete = self.delete(d)?;
                    delete.header = self.header_now();
                    Response::ResponseDeleteRange(delete)
                }
                Some(Request::RequestTxn(t)) => {
                    let path = nested
                        .next()
                        .ok_or_else(|| MvccError::InvalidArgument("txn path".into()))?;
                    let mut txn = self.run(t, path)?;
                    // etcd leaves a nested transaction's header empty.
                    txn.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(txn)
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

    /// The header of a response inside a transaction: the revision as of
    /// that operation (the store's before the transaction wrote anything,
    /// one past it after), as etcd's are.
    fn header_now(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: self.current(),
            ..Default::default()
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

    pub(super) fn compact(
        &mut self,
        compact: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
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

    /// Moves the successful command's writes into the batch, at one new
    /// revision.
    pub(super) fn publish_staged(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        self.state.revision += 1;
        let revision = self.state.revision;
        let keyspaces = &self.store.inner.keyspaces;
        for (
            sub,
            Change {
                key,
                version,
                previous,
            },
        ) in (0u32..).zip(mem::take(&mut self.staged))
        {
            let before = previous.as_ref().map_or(0, |kv| kv.lease);
            let after = version.as_ref().map_or(0, |kv| kv.lease);
            if before != after {
                if before != 0 {
                    self.batch
                        .remove(&keyspaces.attached, attached_key(before, &key));
                }
                if after != 0 {
                    self.batch
                        .insert(&keyspaces.attached, attached_key(after, &key), []);
                }
            }
            match &version {
                Some(kv) => self
                    .batch
                    .insert(&keyspaces.live, key.as_ref(), encode_live(kv)),
                None => self.batch.remove(&keyspaces.live, key.as_ref()),
            }
            self.events
                .push(event_of(&key, revision, version.clone(), previous));
            self.batch.insert(
                &keyspaces.kv,
                version_key(&key, revision),
                encode_version(version.as_ref(), sub),
            );
            self.batch
                .insert(&keyspaces.changes, change_key(revision, sub), key.as_ref());
            self.pending
                .entry(key)
                .or_default()
                .push((revision, version));
        }
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
            for change in &self.staged {
                if span.contains(&change.key) {
                    overlay(&change.key, &change.version);
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
