//! Read-only transactions. They need no log entry: a member runs them
//! against a committed snapshot with the code that runs written ones, so a
//! compare or a range inside means the same either way, and nothing is
//! staged or committed.

use keel_api::etcdserverpb::{request_op::Request, ResponseHeader, TxnRequest, TxnResponse};

use super::Writer;
use crate::store::Store;
use crate::MvccError;

/// Whether a transaction only reads: every operation of either branch, at
/// any depth, is a range.
pub fn txn_is_read_only(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_is_read_only(nested),
            _ => false,
        })
}

/// Whether a read-only transaction asks for serializable reads only: every
/// range of either branch, at any depth, is serializable (as in etcd, one
/// without operations is too). Such a transaction needs no read index.
pub fn txn_is_serializable(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(range)) => range.serializable,
            Some(Request::RequestTxn(nested)) => txn_is_serializable(nested),
            _ => false,
        })
}

impl Store {
    /// Runs a read-only transaction (see [`txn_is_read_only`]) against the
    /// committed state. A transaction that writes is refused.
    pub fn read_txn(&self, txn: &TxnRequest) -> Result<TxnResponse, MvccError> {
        if !txn_is_read_only(txn) {
            return Err(MvccError::InvalidArgument(
                "a transaction that writes must go through the log".into(),
            ));
        }
        let (snapshot, state) = self.read_state()?;
        let revision = state.revision;
        let mut response = Writer::over(self, snapshot, state).txn(txn)?;
        response.header = Some(ResponseHeader {
            revision,
            ..Default::default()
        });
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keel_api::etcdserverpb::{
        compare, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    };
    use keel_api::keelpb::{command::Op, Command as CommandPb};

    use super::*;
    use crate::StoreOptions;
    use crate::{Command, WriteResponse};

    fn range(key: &str, serializable: bool) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: Bytes::from(key.to_string()),
                serializable,
                ..Default::default()
            })),
        }
    }

    fn put(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from(key.to_string()),
                value: Bytes::from(value.to_string()),
                ..Default::default()
            })),
        }
    }

    fn nested(txn: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(txn)),
        }
    }

    fn value_is(key: &str, value: &str) -> Compare {
        Compare {
            key: Bytes::from(key.to_string()),
            target: compare::CompareTarget::Value as i32,
            result: compare::CompareResult::Equal as i32,
            target_union: Some(compare::TargetUnion::Value(Bytes::from(value.to_string()))),
            ..Default::default()
        }
    }

    #[test]
    fn only_transactions_of_ranges_at_every_depth_are_read_only() {
        let reads = TxnRequest {
            success: vec![range("a", false)],
            failure: vec![nested(TxnRequest {
                failure: vec![range("b", true)],
                ..Default::default()
            })],
            ..Default::default()
        };
        assert!(txn_is_read_only(&reads));
        assert!(txn_is_read_only(&TxnRequest::default()));
        let deep_write = TxnRequest {
            failure: vec![nested(TxnRequest {
                success: vec![put("a", "1")],
                ..Default::default()
            })],
            ..Default::default()
        };
        assert!(!txn_is_read_only(&deep_write));
        assert!(!txn_is_serializable(&reads));
        let serializable = TxnRequest {
            success: vec![range("a", true)],
            failure: vec![nested(TxnRequest {
                success: vec![range("b", true)],
                ..Default::default()
            })],
            ..Default::default()
        };
        assert!(txn_is_serializable(&serializable));
    }

    #[test]
    fn a_read_only_transaction_answers_as_the_log_would_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let write = |index: u64, op: Op| {
            let command = Command(CommandPb {
                op: Some(op),
                auth: None,
            });
            store
                .apply_batch(vec![(index, command)])
                .responses
                .remove(0)
        };
        let txn = |ops: Vec<RequestOp>| {
            Op::Txn(TxnRequest {
                success: ops,
                ..Default::default()
            })
        };
        write(1, txn(vec![put("a", "1"), put("b", "2")])).unwrap();
        let read = TxnRequest {
            compare: vec![value_is("a", "1")],
            success: vec![
                range("b", false),
                nested(TxnRequest {
                    compare: vec![value_is("b", "3")],
                    success: vec![range("a", false)],
                    failure: vec![range("missing", false)],
                }),
            ],
            failure: vec![],
        };
        let served = store.read_txn(&read).unwrap();
        let Ok(WriteResponse::Txn(logged)) = write(2, Op::Txn(read.clone())) else {
            panic!("the logged transaction failed");
        };
        assert_eq!(served, logged);
        assert_eq!(served.header.unwrap().revision, 2);
        assert_eq!(store.revision(), 2, "neither run wrote anything");
        let err = store.read_txn(&TxnRequest {
            failure: vec![put("c", "3")],
            ..Default::default()
        });
        assert!(matches!(err, Err(MvccError::InvalidArgument(_))));
    }
}
