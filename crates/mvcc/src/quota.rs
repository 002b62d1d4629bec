//! The space quota: which commands can grow the store. Once the store is
//! over its quota, a NOSPACE alarm is raised and these commands are refused
//! (before proposing, and again when applying, so every member agrees)
//! until the alarm is cleared; reads, deletes and compaction still work.

use keel_api::etcdserverpb::{request_op::Request, TxnRequest};
use keel_api::keelpb::{command::Op, Command};

/// Whether `command` can add data to the store.
pub fn adds_data(command: &Command) -> bool {
    match &command.op {
        Some(Op::Put(_)) | Some(Op::LeaseGrant(_)) => true,
        Some(Op::Txn(txn)) => txn_puts(txn),
        _ => false,
    }
}

/// Whether a transaction puts anything, in any branch at any depth.
fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}
