//! keel-mvcc on its own, without raft or the network: how fast commands
//! apply, how long a compaction holds the apply path, and what ranges over
//! many keys cost.
//!
//! Run with `cargo bench -p keel-mvcc --bench store`. `BENCH_KEYS` (default
//! 100,000) keys are written `BENCH_VERSIONS` (default 5) times each with a
//! 256-byte value, in batches of 64 commands as the apply loop hands them
//! over; then the whole history is compacted away (the compaction applied,
//! then its history removed step by step as the server does in the
//! background), and prefix ranges are timed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use keel_api::keelpb::{self, command::Op};
use keel_mvcc::{Command, Store, StoreOptions};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("/registry/brokers/{i:08}"))
}

/// Applies `ops` at the next log indexes, in batches of 64.
fn apply(store: &Store, index: &mut u64, ops: impl Iterator<Item = Op>) {
    let mut batch = Vec::with_capacity(64);
    let flush = |batch: &mut Vec<(u64, Command)>| {
        for result in store.apply_batch(std::mem::take(batch)).responses {
            result.expect("applying a command");
        }
    };
    for op in ops {
        *index += 1;
        batch.push((
            *index,
            Command(keelpb::Command {
                op: Some(op),
                auth: None,
            }),
        ));
        if batch.len() == 64 {
            flush(&mut batch);
        }
    }
    flush(&mut batch);
}

fn time<T>(what: &str, count: usize, f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let rate = count as f64 / took.as_secs_f64();
    println!(
        "{what:<52} {:>10.1} ms {rate:>12.0} /s",
        took.as_secs_f64() * 1e3
    );
    (out, took)
}

fn range(store: &Store, request: RangeRequest) -> usize {
    let response = store.range(&request).expect("range");
    response.kvs.len() + response.count as usize
}

fn main() {
    let keys = env("BENCH_KEYS", 100_000);
    let versions = env("BENCH_VERSIONS", 5);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("opening the store");
    let mut index = 0;
    let value = Bytes::from(vec![b'v'; 256]);

    println!("{keys} keys x {versions} versions, 256-byte values");
    for round in 0..versions {
        time(&format!("put round {round} (64 per batch)"), keys, || {
            apply(
                &store,
                &mut index,
                (0..keys).map(|i| {
                    Op::Put(PutRequest {
                        key: key(i),
                        value: value.clone(),
                        ..Default::default()
                    })
                }),
            )
        });
    }

    let prefix = Bytes::from_static(b"/registry/brokers/");
    let end = Bytes::from_static(b"/registry/brokers0");
    let prefix_range = |limit: i64, count_only: bool| RangeRequest {
        key: prefix.clone(),
        range_end: end.clone(),
        limit,
        count_only,
        ..Default::default()
    };
    time("range: prefix, limit 10", 1, || {
        range(&store, prefix_range(10, false))
    });
    time("range: prefix, count only", keys, || {
        range(&store, prefix_range(0, true))
    });
    time("range: prefix, every key", keys, || {
        range(&store, prefix_range(0, false))
    });
    let point_reads = |what: &str| {
        time(what, 1000, || {
            for i in 0..1000 {
                range(
                    &store,
                    RangeRequest {
                        key: key(i * 7919 % keys),
                        ..Default::default()
                    },
                );
            }
        })
    };
    point_reads("range: one key, 1,000 times");

    let revision = store.revision();
    time("apply a compaction at the current revision", 1, || {
        apply(
            &store,
            &mut index,
            std::iter::once(Op::Compact(CompactionRequest {
                revision,
                physical: false,
            })),
        )
    });
    let (steps, _) = time(
        &format!(
            "remove {} superseded versions, 1,000 per step",
            keys * (versions - 1)
        ),
        keys * versions,
        || {
            let mut steps = 1;
            while store.compact_step(1000).expect("removing history") {
                steps += 1;
            }
            steps
        },
    );
    println!("({steps} steps)");
    time("put after compaction, 6,400 keys", 6400, || {
        apply(
            &store,
            &mut index,
            (0..6400).map(|i| {
                Op::Put(PutRequest {
                    key: key(i * 7919 % keys),
                    value: value.clone(),
                    ..Default::default()
                })
            }),
        )
    });
    point_reads("range: one key, 1,000 times, after compaction");
    time("range: prefix, limit 10 after compaction", 1, || {
        range(&store, prefix_range(10, false))
    });
}
