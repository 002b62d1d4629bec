//! The write side: applying committed commands in one storage batch, and
//! reporting what the batch changed.
//!
//! The dispatcher here hands each command to the kind of state it changes,
//! each owning its part of the batch: the key space ([`kv`]), the member
//! records ([`members`]), the alarms ([`alarms`]) and the leases
//! ([`leases`]). The space quota is a
//! check around them ([`quota`](crate::quota)), not inside them.
//!
//! Commands of a batch read the committed snapshot taken when the batch
//! began plus what earlier commands of the batch wrote (`pending`); the
//! writes of the command being applied are `staged` and only join the batch
//! when the command succeeds, so a failed command changes nothing.

mod alarms;
mod auth;
mod kv;
mod leases;
mod members;
mod read_only;

use std::collections::BTreeMap;
use std::mem;
use std::sync::Arc;

use bytes::Bytes;
use fjall::{OwnedWriteBatch, Snapshot};
use keel_api::etcdserverpb::{AlarmType, ResponseHeader};
use keel_api::keelpb::command::Op;
use keel_api::mvccpb::{Event, KeyValue};
use tracing::error;

use crate::auth::AuthState;
use crate::schema::{
    revision_bytes, Lease, State, APPLIED, COMPACTED, INDEXED, PHYSICAL, REVISION,
};
use crate::store::Store;
use crate::{quota, Command, MvccError, WriteResponse};

pub(crate) use auth::load as load_auth;
pub use read_only::{txn_is_read_only, txn_is_serializable};

/// What applying a batch of commands did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One result per command, in the order given.
    pub responses: Vec<Result<WriteResponse, MvccError>>,
    /// Every change to the key space, in revision order (and within a
    /// revision, in the order the command made them): what watchers see.
    /// Empty when committing the batch failed.
    pub events: Vec<Event>,
}

impl Store {
    /// Applies commands committed at increasing raft indexes, all in one
    /// storage batch together with the new applied index, and returns one
    /// result per command and the batch's events. Commands at or below the
    /// applied index were applied before (a log replay after restart) and
    /// are skipped. The batch is not synced: the raft log is the durable
    /// record.
    pub fn apply_batch(&self, commands: Vec<(u64, Command)>) -> Applied {
        let _writer = self.lock_writer();
        let mut writer = Writer::new(self);
        let mut responses = Vec::with_capacity(commands.len());
        for (index, Command(command)) in commands {
            if index <= writer.state.applied {
                responses.push(Ok(WriteResponse::AlreadyApplied));
                continue;
            }
            let response = writer.apply(command);
            writer.state.applied = index;
            responses.push(response);
        }
        let started = std::time::Instant::now();
        let committed = writer.commit();
        metrics::histogram!(crate::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        if let Err(e) = committed {
            error!(error = %e, "committing applied commands failed");
            return Applied {
                responses: responses.iter().map(|_| Err(e.clone())).collect(),
                events: Vec::new(),
            };
        }
        Applied {
            responses,
            events: writer.events,
        }
    }
}

/// One version of a key: `None` is a deletion.
type Version = Option<KeyValue>;

/// A write of the command being applied.
struct Change {
    key: Bytes,
    /// The new version (`None`: deleted).
    version: Version,
    /// The version it replaces, if the key existed.
    previous: Option<KeyValue>,
}

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
    staged: Vec<Change>,
    /// The events of the batch so far.
    events: Vec<Event>,
    /// Leases granted, renewed (`Some`) or ended (`None`) by the batch so
    /// far; the rest are the store's.
    leases: BTreeMap<i64, Option<Lease>>,
    /// The auth state including the batch so far.
    auth: Arc<AuthState>,
    /// Whether the batch changed `auth`.
    auth_changed: bool,
}

impl<'a> Writer<'a> {
    /// A writer for a batch; the caller holds the writer lock, so the
    /// state and the snapshot taken one after the other agree.
    fn new(store: &'a Store) -> Self {
        Writer::over(store, store.inner.db.snapshot(), store.state())
    }

    /// A writer starting from `snapshot`, which holds `state`.
    fn over(store: &'a Store, snapshot: Snapshot, state: State) -> Self {
        Writer {
            store,
            snapshot,
            snapshot_revision: state.revision,
            batch: store.inner.db.batch(),
            state,
            pending: BTreeMap::new(),
            staged: Vec::new(),
            events: Vec::new(),
            leases: BTreeMap::new(),
            auth: store.auth(),
            auth_changed: false,
        }
    }

    /// Applies one command: the quota check, then the kind of state it
    /// changes.
    fn apply(&mut self, command: keel_api::keelpb::Command) -> Result<WriteResponse, MvccError> {
        self.staged.clear();
        if quota::adds_data(&command) && self.nospace() {
            return Err(MvccError::NoSpace);
        }
        // Checked at an older auth revision: the rules may have changed
        // since, so check again with the ones in force now.
        if let Some(context) = &command.auth {
            if self.auth.enabled() && context.revision < self.auth.revision() {
                self.auth.check_command(&context.user, &command)?;
            }
        }
        let response = match command.op {
            Some(Op::Put(put)) => self.put(&put).map(WriteResponse::Put),
            Some(Op::DeleteRange(delete)) => self.delete(&delete).map(WriteResponse::DeleteRange),
            Some(Op::Txn(txn)) => self.txn(&txn).map(WriteResponse::Txn),
            Some(Op::Compact(compact)) => self.compact(&compact).map(WriteResponse::Compact),
            Some(Op::SetMember(member)) => {
                self.set_member(member);
                Ok(WriteResponse::Member)
            }
            Some(Op::RemoveMember(id)) => {
                self.remove_member(id);
                Ok(WriteResponse::Member)
            }
            Some(Op::Alarm(alarm)) => self.alarm(&alarm).map(WriteResponse::Alarm),
            Some(Op::LeaseGrant(grant)) => self.grant(&grant).map(WriteResponse::LeaseGrant),
            Some(Op::LeaseRevoke(revoke)) => self
                .revoke(revoke.id)
                .map(|()| WriteResponse::LeaseRevoke(Default::default())),
            Some(Op::LeaseRenew(renew)) => Ok(WriteResponse::LeaseRenew(self.renew(&renew.ids))),
            Some(Op::LeaseExpire(expire)) => self.expire(&expire).map(WriteResponse::LeaseExpire),
            Some(
                op @ (Op::AuthEnable(_)
                | Op::AuthDisable(_)
                | Op::UserAdd(_)
                | Op::UserDelete(_)
                | Op::UserChangePassword(_)
                | Op::UserGrantRole(_)
                | Op::UserRevokeRole(_)
                | Op::RoleAdd(_)
                | Op::RoleDelete(_)
                | Op::RoleGrantPermission(_)
                | Op::RoleRevokePermission(_)),
            ) => self.auth_change(&op).map(|()| WriteResponse::Auth),
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

    /// Whether a NOSPACE alarm is raised (on any member).
    fn nospace(&self) -> bool {
        let nospace = AlarmType::Nospace as i32;
        self.state.alarms.iter().any(|&(_, alarm)| alarm == nospace)
    }

    /// Commits the batch with the state it reached, publishes the state and
    /// starts a new batch on a fresh snapshot.
    fn commit(&mut self) -> Result<(), MvccError> {
        let meta = &self.store.inner.keyspaces.meta;
        let mut batch = mem::replace(&mut self.batch, self.store.inner.db.batch());
        batch.insert(meta, APPLIED, self.state.applied.to_be_bytes());
        batch.insert(meta, REVISION, revision_bytes(self.state.revision));
        batch.insert(meta, INDEXED, revision_bytes(self.state.revision));
        batch.insert(meta, COMPACTED, revision_bytes(self.state.compacted));
        batch.insert(meta, PHYSICAL, revision_bytes(self.state.physical));
        {
            let mut published = self
                .store
                .inner
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut leases = self
                .store
                .inner
                .leases
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            batch.commit()?;
            *published = self.state.clone();
            if mem::take(&mut self.auth_changed) {
                *self
                    .store
                    .inner
                    .auth
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = self.auth.clone();
            }
            for (id, lease) in mem::take(&mut self.leases) {
                match lease {
                    Some(lease) => leases.insert(id, lease),
                    None => leases.remove(&id),
                };
            }
        }
        self.snapshot = self.store.inner.db.snapshot();
        self.snapshot_revision = self.state.revision;
        self.pending.clear();
        Ok(())
    }
}

/// Fills the response's header with the revision the store reached. The
/// responses inside a transaction got theirs as they ran.
fn set_header(response: &mut WriteResponse, revision: i64) {
    let header = Some(ResponseHeader {
        revision,
        ..Default::default()
    });
    match response {
        WriteResponse::Put(r) => r.header = header,
        WriteResponse::DeleteRange(r) => r.header = header,
        WriteResponse::Txn(r) => r.header = header,
        WriteResponse::Compact(r) => r.header = header,
        WriteResponse::Alarm(r) => r.header = header,
        WriteResponse::LeaseGrant(r) => r.header = header,
        WriteResponse::LeaseRevoke(r) => r.header = header,
        WriteResponse::Member
        | WriteResponse::Auth
        | WriteResponse::LeaseRenew(_)
        | WriteResponse::LeaseExpire(_)
        | WriteResponse::AlreadyApplied => {}
    }
}
