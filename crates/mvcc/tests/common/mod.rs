//! A store in a temporary directory that applies one command at a time,
//! each at the next raft index.

#![allow(dead_code)]

use keel_api::keelpb::{self, command::Op, AuthContext};
use keel_mvcc::{Command, MvccError, Store, StoreOptions, WriteResponse};

/// A fresh store and the raft index it has applied.
pub(crate) struct Harness {
    pub(crate) store: Store,
    pub(crate) index: u64,
    pub(crate) dir: tempfile::TempDir,
}

impl Harness {
    /// An empty store.
    pub(crate) fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness {
            store: Store::open(dir.path(), StoreOptions::default()).unwrap(),
            index: 0,
            dir,
        }
    }

    /// Applies `op` (checked as `auth` says, if it says) at the next index.
    pub(crate) fn apply_as(
        &mut self,
        op: Op,
        auth: Option<AuthContext>,
    ) -> Result<WriteResponse, MvccError> {
        self.index += 1;
        let command = Command(keelpb::Command { op: Some(op), auth });
        self.store
            .apply_batch(vec![(self.index, command)])
            .responses
            .pop()
            .unwrap()
    }

    /// Applies `op` at the next index.
    pub(crate) fn apply(&mut self, op: Op) -> Result<WriteResponse, MvccError> {
        self.apply_as(op, None)
    }
}
