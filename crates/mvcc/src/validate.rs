//! Checks a request before it is proposed, so that malformed requests are
//! refused with etcd's errors instead of entering the log.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use bytes::Bytes;

use crate::auth::{check_name, is_valid_permission_range, AuthError};
use crate::encoding::check_key_len;
use crate::MvccError;
use keel_api::etcdserverpb::{
    compare, range_request, request_op::Request, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};
use keel_api::keelpb::{command::Op, Command};

/// Checks a write command; `max_txn_ops` caps compares and operations per
/// transaction branch.
pub fn command(command: &Command, max_txn_ops: usize) -> Result<(), MvccError> {
    match &command.op {
        Some(Op::Put(put)) => self::put(put),
        Some(Op::DeleteRange(delete)) => self::delete(delete),
        Some(Op::Txn(txn)) => self::txn(txn, max_txn_ops),
        Some(
            Op::Compact(_)
            | Op::SetMember(_)
            | Op::RemoveMember(_)
            | Op::Alarm(_)
            | Op::LeaseGrant(_)
            | Op::LeaseRevoke(_)
            | Op::LeaseRenew(_)
            | Op::LeaseExpire(_)
            | Op::AuthEnable(_)
            | Op::AuthDisable(_)
            | Op::UserDelete(_)
            | Op::UserChangePassword(_)
            | Op::UserGrantRole(_)
            | Op::UserRevokeRole(_)
            | Op::RoleDelete(_)
            | Op::RoleRevokePermission(_),
        ) => Ok(()),
        Some(Op::UserAdd(add)) => Ok(check_name(&add.name, AuthError::UserEmpty)?),
        Some(Op::RoleAdd(add)) => Ok(check_name(&add.name, AuthError::RoleEmpty)?),
        Some(Op::RoleGrantPermission(grant)) => match &grant.perm {
            Some(p) if is_valid_permission_range(&p.key, &p.range_end) => Ok(()),
            Some(_) => Err(AuthError::InvalidAuthMgmt.into()),
            None => Err(MvccError::InvalidArgument("permission not given".into())),
        },
        None => Err(MvccError::InvalidArgument("empty command".into())),
    }
}

/// Checks a range request.
pub fn range(range: &RangeRequest) -> Result<(), MvccError> {
    keys(&range.key, &range.range_end)?;
    if range_request::SortOrder::try_from(range.sort_order).is_err()
        || range_request::SortTarget::try_from(range.sort_target).is_err()
    {
        return Err(MvccError::InvalidArgument("invalid sort option".into()));
    }
    Ok(())
}

/// Refuses an empty key and a key or range end too long to store.
pub(crate) fn keys(key: &[u8], range_end: &[u8]) -> Result<(), MvccError> {
    if key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    check_key_len(key)?;
    check_key_len(range_end)
}

fn put(put: &PutRequest) -> Result<(), MvccError> {
    keys(&put.key, &[])?;
    if put.ignore_value && !put.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

fn delete(delete: &DeleteRangeRequest) -> Result<(), MvccError> {
    keys(&delete.key, &delete.range_end)
}

fn txn(txn: &TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    if txn.compare.len() > max_txn_ops
        || txn.success.len() > max_txn_ops
        || txn.failure.len() > max_txn_ops
    {
        return Err(MvccError::TooManyOps);
    }
    txn.compare.iter().try_for_each(self::compare)?;
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => self::range(r)?,
            Some(Request::RequestPut(p)) => self::put(p)?,
            Some(Request::RequestDeleteRange(d)) => self::delete(d)?,
            Some(Request::RequestTxn(t)) => self::txn(t, max_txn_ops)?,
            None => return Err(MvccError::InvalidArgument("empty txn operation".into())),
        }
    }
    writes(&txn.success)?;
    writes(&txn.failure)?;
    Ok(())
}

fn compare(compare: &Compare) -> Result<(), MvccError> {
    keys(&compare.key, &compare.range_end)?;
    if compare::CompareResult::try_from(compare.result).is_err() {
        return Err(MvccError::InvalidArgument(format!(
            "invalid compare result {}",
            compare.result
        )));
    }
    if compare::CompareTarget::try_from(compare.target).is_err() {
        return Err(MvccError::InvalidArgument(format!(
            "invalid compare target {}",
            compare.target
        )));
    }
    Ok(())
}

/// The keys a branch deletes, as etcd 3.4 counts them for this check: the
/// union of the delete ranges, kept as disjoint `[start, end)` intervals so
/// that checking a key costs a logarithmic lookup however many ranges a
/// large nested transaction deletes.
#[derive(Default)]
struct Deleted(BTreeMap<Bytes, Bytes>);

impl Deleted {
    /// Adds a delete's range: a single key when `range_end` is empty,
    /// otherwise `[key, range_end)`. Like etcd, this takes a from-key
    /// delete's `"\0"` literally, as an empty range: such a delete and a put
    /// of a key it removes may share a transaction (the put comes after).
    fn insert(&mut self, key: &Bytes, range_end: &Bytes) {
        let end = match range_end.as_ref() {
            // The key just above a single key is the key followed by 0x00.
            b"" => Bytes::from([key.as_ref(), b"\0"].concat()),
            end if end <= key.as_ref() => return,
            _ => range_end.clone(),
        };
        self.insert_interval(key.clone(), end);
    }

    fn insert_interval(&mut self, mut start: Bytes, mut end: Bytes) {
        // An interval starting at or before `start` that reaches it absorbs it.
        if let Some((s, e)) = self.0.range(..=start.clone()).next_back() {
            if *e >= start {
                end = end.max(e.clone());
                start = s.clone();
            }
        }
        // Intervals starting inside the new one are absorbed into it.
        while let Some((s, e)) = self
            .0
            .range(start.clone()..)
            .next()
            .map(|(s, e)| (s.clone(), e.clone()))
        {
            if s > end {
                break;
            }
            self.0.remove(&s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Adds every range `other` holds.
    fn extend(&mut self, other: Deleted) {
        for (start, end) in other.0 {
            self.insert_interval(start, end);
        }
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.0
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, end)| key < end.as_ref())
    }
}

/// The keys one branch puts and the ranges it deletes, refusing a branch
/// that puts a key twice or puts a key it also deletes (the then and else
/// branches of a nested transaction exclude each other, so they may put
/// the same key).
fn writes(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Deleted), MvccError> {
    let mut deleted = Deleted::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            deleted.insert(&d.key, &d.range_end);
        }
    }
    let mut puts = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let (puts_then, deleted_then) = writes(&nested.success)?;
        let (puts_else, deleted_else) = writes(&nested.failure)?;
        // Checked against earlier operations only: the two branches
        // exclude each other, so they may write the same key.
        for key in puts_then.iter().chain(&puts_else) {
            if puts.contains(key) || deleted.covers(key) {
                return Err(MvccError::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        deleted.extend(deleted_then);
        deleted.extend(deleted_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || deleted.covers(&put.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from_static(key.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn delete_op(key: &'static str, end: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(key.as_bytes()),
                range_end: Bytes::from_static(end.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<(), MvccError> {
        let txn = TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        };
        command(
            &Command {
                op: Some(Op::Txn(txn)),
                auth: None,
            },
            4,
        )
    }

    #[test]
    fn duplicate_writes_in_a_branch_are_refused() {
        assert_eq!(
            check(vec![put_op("a"), put_op("a")]),
            Err(MvccError::DuplicateKey)
        );
        assert_eq!(
            check(vec![delete_op("a", "c"), put_op("b")]),
            Err(MvccError::DuplicateKey)
        );
        // etcd 3.4 takes a from-key delete's "\0" literally here (checked
        // against etcd 3.4.23): the put is accepted and runs after the delete.
        assert_eq!(check(vec![delete_op("a", "\0"), put_op("z")]), Ok(()));
        assert_eq!(check(vec![delete_op("a", "c"), put_op("c")]), Ok(()));
        assert_eq!(check(vec![delete_op("a", ""), put_op("ab")]), Ok(()));
        assert_eq!(
            check(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]),
            Err(MvccError::DuplicateKey)
        );
        assert_eq!(
            check(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]),
            Ok(())
        );
        assert_eq!(
            check(vec![delete_op("a", "b"), txn_op(vec![], vec![put_op("a")])]),
            Err(MvccError::DuplicateKey)
        );
    }

    /// The naive reading of etcd's check, to test `Deleted` by: a single
    /// key, or `[start, end)` with `"\0"` taken literally.
    fn naive_covers(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        match end {
            b"" => key == start,
            _ => key >= start && key < end,
        }
    }

    fn small_key() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(vec![0u8, 1, b'a', b'b']), 0..4)
    }

    proptest::proptest! {
        #[test]
        fn deleted_covers_exactly_the_union_of_its_ranges(
            ranges in proptest::collection::vec((small_key(), small_key()), 0..12),
            probes in proptest::collection::vec(small_key(), 0..40),
        ) {
            let mut deleted = Deleted::default();
            let mut halves = (Deleted::default(), Deleted::default());
            for (i, (start, end)) in ranges.iter().enumerate() {
                let (start, end) = (Bytes::from(start.clone()), Bytes::from(end.clone()));
                deleted.insert(&start, &end);
                if i % 2 == 0 { &mut halves.0 } else { &mut halves.1 }.insert(&start, &end);
            }
            halves.0.extend(halves.1);
            for probe in &probes {
                let expected = ranges.iter().any(|(s, e)| naive_covers(probe, s, e));
                proptest::prop_assert_eq!(deleted.covers(probe), expected, "probe {:?}", probe);
                proptest::prop_assert_eq!(halves.0.covers(probe), expected, "probe {:?}", probe);
            }
        }
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused() {
        let many = (0..5).map(|_| put_op("x")).collect();
        assert_eq!(check(many), Err(MvccError::TooManyOps));
        let nested_many = vec![txn_op((0..5).map(|_| delete_op("x", "")).collect(), vec![])];
        assert_eq!(check(nested_many), Err(MvccError::TooManyOps));
        assert_eq!(check(vec![put_op("")]), Err(MvccError::EmptyKey));
        let bad_sort = RangeRequest {
            key: Bytes::from_static(b"a"),
            sort_order: 9,
            ..Default::default()
        };
        assert!(
            matches!(range(&bad_sort), Err(MvccError::InvalidArgument(m)) if m.contains("sort"))
        );
        let bad_compare = TxnRequest {
            compare: vec![Compare {
                key: Bytes::from_static(b"a"),
                result: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(matches!(
            txn(&bad_compare, 4),
            Err(MvccError::InvalidArgument(_))
        ));
        let ignore_value = PutRequest {
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(b"v"),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&ignore_value), Err(MvccError::ValueProvided));
    }
}
