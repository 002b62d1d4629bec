//! The register workload: get, put and compare-and-swap on a few keys,
//! through any member, checked for linearizability (keel-check).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use keel_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use keel_api::etcdserverpb::kv_client::KvClient;
use keel_api::etcdserverpb::request_op::Request as RequestKind;
use keel_api::etcdserverpb::*;
use keel_check::{Input, Operation, Output};
use rand::Rng;

use crate::since;
use crate::world::Client;

/// The registers.
pub(crate) const KEYS: [&str; 3] = ["r0", "r1", "r2"];
/// Register clients.
pub(crate) const CLIENTS: usize = 4;

/// The history the clients record, with times in nanoseconds since `zero`.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) ops: Vec<Operation>,
}

/// One client: random operations on random keys through random members
/// until `until`.
pub(crate) async fn client(c: Client, history: Arc<Mutex<Recorder>>) {
    let (id, zero) = (c.id, c.zero);
    let mut rng = c.rng(0);
    let mut members = c.connections();
    let mut n = 0u64;
    while !c.done() {
        let Some((member, channel)) = members.any(&mut rng).await else {
            continue;
        };
        let mut kv = KvClient::new(channel);
        let key = KEYS[rng.random_range(0..KEYS.len())];
        n += 1;
        let value = format!("c{id}-{n}");
        let input = match rng.random_range(0..3) {
            0 => Input::Get,
            1 => Input::Put(value.clone()),
            _ => Input::Cas {
                expect: Some(format!(
                    "c{}-{}",
                    rng.random_range(0..CLIENTS),
                    rng.random_range(1..=n)
                )),
                new: Some(value.clone()),
            },
        };
        let call = since(zero);
        let answer: Result<Output, tonic::Status> = match &input {
            Input::Get => kv
                .range(RangeRequest {
                    key: Bytes::from(key),
                    ..Default::default()
                })
                .await
                .map(|r| {
                    let kvs = r.into_inner().kvs;
                    Output::Value(
                        kvs.first()
                            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                    )
                }),
            Input::Put(v) => kv
                .put(PutRequest {
                    key: Bytes::from(key),
                    value: Bytes::from(v.clone()),
                    ..Default::default()
                })
                .await
                .map(|_| Output::Done),
            Input::Cas { expect, new } => kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        key: Bytes::from(key),
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        target_union: Some(TargetUnion::Value(Bytes::from(
                            expect.clone().unwrap_or_default(),
                        ))),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(RequestKind::RequestPut(PutRequest {
                            key: Bytes::from(key),
                            value: Bytes::from(new.clone().unwrap_or_default()),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await
                .map(|r| Output::Swapped(r.into_inner().succeeded)),
            Input::Delete => unreachable!("not generated"),
        };
        let ret = since(zero);
        let op = match answer {
            Ok(output) => Some(Operation {
                client: id,
                key: key.into(),
                input,
                output,
                call,
                ret: Some(ret),
            }),
            // A failed read changed nothing: it is left out.
            Err(_) if input == Input::Get => None,
            // A failed write may still have been applied.
            Err(_) => Some(Operation {
                client: id,
                key: key.into(),
                input,
                output: Output::Unknown,
                call,
                ret: None,
            }),
        };
        if let Some(op) = op {
            history.lock().unwrap().ops.push(op);
        }
        if rng.random_bool(0.2) {
            members.forget(member);
        }
    }
}
