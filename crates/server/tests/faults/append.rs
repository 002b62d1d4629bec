//! The list-append workload, as Jepsen's `append`: each transaction reads
//! and appends to the lists of a few keys, so that anomalies show up as
//! cycles between transactions (keel-check's `check_append`), not only as
//! stale reads.
//!
//! A transaction runs optimistically on etcd's API: one Txn reads every key
//! it touches (values and mod_revisions, one snapshot), then a second Txn
//! compares each key's mod_revision to what was read and, if none moved,
//! writes the appended lists. A failed compare had no effect (aborted); a
//! lost answer may or may not have.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keel_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::request_op::Request as RequestKind;
use keel_api::etcdserverpb::response_op::Response as ResponseKind;
use keel_api::etcdserverpb::*;
use keel_check::{AppendTxn, MicroOp, TxnOutcome};
use rand::seq::IndexedRandom;
use rand::Rng;
use tonic::transport::Channel;

use crate::since;
use crate::world::Client;

/// Lists written at once.
const LISTS: usize = 6;
/// How long one generation of lists is written (then the next six): a read
/// returns whole lists, so lists that grew all run long would make the
/// history grow with the square of its length (a ten-minute run once held
/// 19 GB).
const GENERATION_NANOS: u64 = 20_000_000_000;

/// The lists of generation `generation`.
fn keys_of(generation: u64) -> Vec<String> {
    (0..LISTS).map(|i| format!("a{i}.{generation}")).collect()
}
/// Append clients.
pub(crate) const CLIENTS: usize = 3;

/// A list as stored: elements in decimal, comma-separated.
fn encode(list: &[u64]) -> Bytes {
    let text: Vec<String> = list.iter().map(u64::to_string).collect();
    Bytes::from(text.join(","))
}

/// A stored list; garbage reads as a list that cannot be anyone's (so the
/// checker reports it).
fn decode(value: &[u8]) -> Vec<u64> {
    if value.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(value)
        .split(',')
        .map(|e| e.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Each key's list and mod_revision (0: absent), read in one Txn.
async fn read(
    kv: &mut KvClient<Channel>,
    keys: &[String],
) -> Result<Vec<(Vec<u64>, i64)>, tonic::Status> {
    let success = keys
        .iter()
        .map(|k| RequestOp {
            request: Some(RequestKind::RequestRange(RangeRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        })
        .collect();
    let answer = kv
        .txn(TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        })
        .await?
        .into_inner();
    Ok(answer
        .responses
        .into_iter()
        .map(|r| match r.response {
            Some(ResponseKind::ResponseRange(range)) => range
                .kvs
                .first()
                .map_or((Vec::new(), 0), |kv| (decode(&kv.value), kv.mod_revision)),
            _ => (vec![u64::MAX], -1),
        })
        .collect())
}

/// Every key's final list, read linearizably through the member at `addr`:
/// the lists of every generation up to `since(zero)` now.
pub(crate) async fn final_lists(
    addr: SocketAddr,
    zero: std::time::Instant,
) -> Result<BTreeMap<String, Vec<u64>>, String> {
    let channel = crate::world::channel(addr)
        .await
        .ok_or_else(|| format!("{addr} does not connect"))?;
    let mut kv = KvClient::new(channel);
    let mut lists = BTreeMap::new();
    for generation in 0..=since(zero) / GENERATION_NANOS {
        let keys = keys_of(generation);
        // The cluster agreed just now; a read may still meet a leader change.
        let mut tries = 0;
        let read = loop {
            match read(&mut kv, &keys).await {
                Ok(read) => break read,
                Err(e) if tries == 20 => return Err(e.message().to_string()),
                Err(_) => tries += 1,
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        lists.extend(keys.into_iter().zip(read).map(|(k, (list, _))| (k, list)));
    }
    Ok(lists)
}

/// One client: random transactions until `until`.
pub(crate) async fn client(c: Client, history: Arc<Mutex<Vec<AppendTxn>>>) {
    let (id, zero) = (c.id, c.zero);
    let mut rng = c.rng(0xa99e_4d00);
    let mut members = c.connections();
    let mut n = 0u64;
    while !c.done() {
        let Some((member, channel)) = members.any(&mut rng).await else {
            continue;
        };
        let mut kv = KvClient::new(channel);
        let count = rng.random_range(1..=3);
        let keys: Vec<String> = keys_of(since(zero) / GENERATION_NANOS)
            .choose_multiple(&mut rng, count)
            .cloned()
            .collect();
        // Which keys are appended to (the others only read).
        let appends: Vec<Option<u64>> = keys
            .iter()
            .map(|_| {
                rng.random_bool(0.5).then(|| {
                    n += 1;
                    (id as u64 + 1) * 1_000_000_000 + n
                })
            })
            .collect();
        let call = since(zero);
        let seen = match read(&mut kv, &keys).await {
            Ok(seen) => seen,
            Err(_) => {
                // Nothing was written: nothing to record.
                members.forget(member);
                continue;
            }
        };
        let reads = |value: bool| -> Vec<MicroOp> {
            keys.iter()
                .zip(&seen)
                .map(|(k, (list, _))| MicroOp::Read {
                    key: k.to_string(),
                    value: value.then(|| list.clone()),
                })
                .collect()
        };
        if appends.iter().all(Option::is_none) {
            history.lock().unwrap().push(AppendTxn {
                client: id,
                call,
                ret: Some(since(zero)),
                ops: reads(true),
                outcome: TxnOutcome::Committed,
            });
            continue;
        }
        let compare = keys
            .iter()
            .zip(&seen)
            .map(|(k, (_, revision))| Compare {
                key: Bytes::from(k.to_string()),
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                target_union: Some(TargetUnion::ModRevision(*revision)),
                ..Default::default()
            })
            .collect();
        let success = keys
            .iter()
            .zip(&seen)
            .zip(&appends)
            .filter_map(|((k, (list, _)), append)| {
                let element = (*append)?;
                let mut list = list.clone();
                list.push(element);
                Some(RequestOp {
                    request: Some(RequestKind::RequestPut(PutRequest {
                        key: Bytes::from(k.to_string()),
                        value: encode(&list),
                        ..Default::default()
                    })),
                })
            })
            .collect();
        let answer = kv
            .txn(TxnRequest {
                compare,
                success,
                failure: vec![],
            })
            .await;
        let ret = since(zero);
        let (outcome, ret, read_values) = match answer {
            Ok(r) if r.get_ref().succeeded => (TxnOutcome::Committed, Some(ret), true),
            Ok(_) => (TxnOutcome::Aborted, Some(ret), false),
            Err(_) => {
                members.forget(member);
                (TxnOutcome::Unknown, None, false)
            }
        };
        let mut ops = reads(read_values);
        ops.extend(keys.iter().zip(&appends).filter_map(|(k, append)| {
            append.map(|element| MicroOp::Append {
                key: k.to_string(),
                element,
            })
        }));
        history.lock().unwrap().push(AppendTxn {
            client: id,
            call,
            ret,
            ops,
            outcome,
        });
    }
}
