//! The events `Store::apply_batch` returns are the store's history: for
//! every revision, the events at that revision are exactly the difference
//! between the key space just before and at it (a `PUT` with the new
//! version and the one it replaced, a `DELETE` with the key, the deleting
//! revision and the version it removed), in revision order, across batches
//! of random sizes and random puts, deletes and nested transactions, some
//! of which fail (a put that keeps the value of a key that is missing).

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_api::etcdserverpb::{
    compare, request_op::Request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use keel_api::keelpb::{self, command::Op};
use keel_api::mvccpb::{event::EventType, Event, KeyValue};
use keel_mvcc::{validate, Command, Store, StoreOptions};

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn key(&mut self) -> Bytes {
        Bytes::from(format!("k{}", self.below(12)))
    }
}

fn put(rng: &mut Rng) -> Request {
    let n = rng.next();
    Request::RequestPut(PutRequest {
        key: rng.key(),
        value: Bytes::from(n.to_string()),
        ..Default::default()
    })
}

fn delete(rng: &mut Rng) -> Request {
    let key = rng.key();
    let range_end = match rng.below(3) {
        0 => Bytes::new(),
        1 => Bytes::from(format!("{}5", String::from_utf8_lossy(&key))),
        _ => Bytes::from_static(b"\0"),
    };
    Request::RequestDeleteRange(DeleteRangeRequest {
        key,
        range_end,
        ..Default::default()
    })
}

/// A transaction of random operations.
fn txn(rng: &mut Rng, depth: u32) -> TxnRequest {
    let branch = |rng: &mut Rng| -> Vec<RequestOp> {
        (0..rng.below(4))
            .map(|_| RequestOp {
                request: Some(match rng.below(5) {
                    0 | 1 => put(rng),
                    2 => delete(rng),
                    3 if depth < 2 => Request::RequestTxn(txn(rng, depth + 1)),
                    _ => Request::RequestRange(RangeRequest {
                        key: rng.key(),
                        ..Default::default()
                    }),
                }),
            })
            .collect()
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Version as i32,
            key: rng.key(),
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Default::default()
        }],
        success: branch(rng),
        failure: branch(rng),
    }
}

/// A command that passes the checks made before proposing (so a
/// transaction writes each key at most once, as etcd requires).
fn command(rng: &mut Rng) -> Command {
    loop {
        let command = any_command(rng);
        if validate::command(&command.0, 128).is_ok() {
            return command;
        }
    }
}

fn any_command(rng: &mut Rng) -> Command {
    let op = match rng.below(10) {
        0..=4 => match put(rng) {
            Request::RequestPut(p) => Op::Put(p),
            _ => unreachable!(),
        },
        5 => Op::Put(PutRequest {
            key: rng.key(),
            ignore_value: true,
            ..Default::default()
        }),
        6 => match delete(rng) {
            Request::RequestDeleteRange(d) => Op::DeleteRange(d),
            _ => unreachable!(),
        },
        _ => Op::Txn(txn(rng, 0)),
    };
    Command(keelpb::Command {
        op: Some(op),
        auth: None,
    })
}

/// Every key-value at `revision`.
fn key_space(store: &Store, revision: i64) -> BTreeMap<Bytes, KeyValue> {
    let request = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision,
        ..Default::default()
    };
    let response = store.range(&request).expect("reading the history");
    response
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect()
}

/// The events that turn the key space `before` into `after` at `revision`,
/// in key order.
fn difference(
    before: &BTreeMap<Bytes, KeyValue>,
    after: &BTreeMap<Bytes, KeyValue>,
    revision: i64,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (key, kv) in after {
        if kv.mod_revision == revision {
            events.push(Event {
                r#type: EventType::Put as i32,
                kv: Some(kv.clone()),
                prev_kv: before.get(key).cloned(),
            });
        }
    }
    for (key, previous) in before {
        if !after.contains_key(key) {
            events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(KeyValue {
                    key: key.clone(),
                    mod_revision: revision,
                    ..Default::default()
                }),
                prev_kv: Some(previous.clone()),
            });
        }
    }
    events.sort_by(|a, b| {
        a.kv.as_ref()
            .map(|kv| &kv.key)
            .cmp(&b.kv.as_ref().map(|kv| &kv.key))
    });
    events
}

/// The events of one revision folded per key, in key order: the last
/// event of a key with the version the first one replaced. etcd lets a
/// transaction put a key in one nested transaction and delete it in a
/// later one; both events then happen, at one revision, in that order.
fn net_effect(events: Vec<Event>) -> Vec<Event> {
    let mut by_key: BTreeMap<Bytes, Event> = BTreeMap::new();
    for event in events {
        let key = event
            .kv
            .as_ref()
            .map(|kv| kv.key.clone())
            .unwrap_or_default();
        match by_key.get_mut(&key) {
            Some(earlier) => {
                assert_eq!(
                    event.prev_kv.as_ref(),
                    earlier
                        .kv
                        .as_ref()
                        .filter(|_| earlier.r#type == EventType::Put as i32),
                    "a second event of a key at one revision follows the first"
                );
                let first_previous = earlier.prev_kv.take();
                *earlier = Event {
                    prev_kv: first_previous,
                    ..event
                };
            }
            None => {
                by_key.insert(key, event);
            }
        }
    }
    by_key
        .into_values()
        .filter(|e| e.r#type == EventType::Put as i32 || e.prev_kv.is_some())
        .collect()
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

fn check_seed(seed: u64) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("opening the store");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut index = 0;
    let mut events = Vec::new();
    let mut failures = 0;
    while index < 300 {
        let batch: Vec<(u64, Command)> = (0..1 + rng.below(8))
            .map(|_| {
                index += 1;
                (index, command(&mut rng))
            })
            .collect();
        let applied = store.apply_batch(batch);
        failures += applied.responses.iter().filter(|r| r.is_err()).count();
        events.extend(applied.events);
    }
    assert!(
        failures > 0,
        "seed {seed}: the workload should include failing commands"
    );
    assert!(
        events
            .windows(2)
            .all(|w| revision_of(&w[0]) <= revision_of(&w[1])),
        "seed {seed}: events out of revision order"
    );
    check_replay(&store, &events, seed);
    let mut by_revision: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_revision
            .entry(revision_of(&event))
            .or_default()
            .push(event);
    }
    let mut before = key_space(&store, 1);
    for revision in 2..=store.revision() {
        let after = key_space(&store, revision);
        let got = net_effect(by_revision.remove(&revision).unwrap_or_default());
        assert_eq!(
            got,
            difference(&before, &after, revision),
            "seed {seed}: the events of revision {revision} differ from the history"
        );
        before = after;
    }
    assert!(
        by_revision.is_empty(),
        "seed {seed}: events at revisions the store never reached: {by_revision:?}"
    );
}

/// What `Store::events` reads back for spans and windows equals what
/// applying reported, revision by revision (net of a key's changes within
/// one revision: the store keeps one version per key and revision).
fn check_replay(store: &Store, applied: &[Event], seed: u64) {
    let spans: [(&[u8], &[u8]); 4] = [(b"k1", b""), (b"k1", b"k5"), (b"k3", b"\0"), (b"\0", b"\0")];
    for (key, range_end) in spans {
        let (key, range_end) = (
            Bytes::copy_from_slice(key),
            Bytes::copy_from_slice(range_end),
        );
        for from in [
            1,
            2,
            store.revision() / 2,
            store.revision(),
            store.revision() + 1,
        ] {
            let to = from + 17;
            let read = store
                .events(&key, &range_end, from, to, usize::MAX)
                .expect("reading events");
            // Read with a small byte limit, the window ends early after a
            // whole revision: what it holds is the full read's start.
            let short = store
                .events(&key, &range_end, from, to, 200)
                .expect("reading events");
            assert!(short.revision <= read.revision);
            let head: Vec<&Event> = read
                .events
                .iter()
                .filter(|e| revision_of(e) <= short.revision)
                .collect();
            assert_eq!(
                short.events.iter().collect::<Vec<_>>(),
                head,
                "seed {seed}: a window cut short for {key:?}..{range_end:?} from {from}"
            );
            if let Some(first) = read.events.first() {
                assert!(
                    short.revision >= revision_of(first),
                    "seed {seed}: a window cut short holds no revision"
                );
            }
            assert_eq!(read.revision, to.min(store.revision()));
            let wanted: Vec<&Event> = applied
                .iter()
                .filter(|e| {
                    let kv = e.kv.as_ref().unwrap();
                    let inside = match range_end.as_ref() {
                        b"" => kv.key == key,
                        b"\0" => kv.key >= key,
                        end => kv.key >= key && kv.key.as_ref() < end,
                    };
                    inside && (from..=to).contains(&kv.mod_revision)
                })
                .collect();
            let mut revisions: Vec<i64> = wanted
                .iter()
                .map(|e| revision_of(e))
                .chain(read.events.iter().map(revision_of))
                .collect();
            revisions.sort_unstable();
            revisions.dedup();
            for revision in revisions {
                let at = |events: Vec<Event>| -> Vec<Event> {
                    net_effect(
                        events
                            .into_iter()
                            .filter(|e| revision_of(e) == revision)
                            .collect(),
                    )
                };
                let applied_here: Vec<Event> = wanted
                    .iter()
                    .filter(|e| revision_of(e) == revision)
                    .map(|e| (*e).clone())
                    .collect();
                let read_here: Vec<Event> = read
                    .events
                    .iter()
                    .filter(|e| revision_of(e) == revision)
                    .cloned()
                    .collect();
                let mut keys: Vec<_> = applied_here
                    .iter()
                    .map(|e| &e.kv.as_ref().unwrap().key)
                    .collect();
                keys.sort();
                keys.dedup();
                if keys.len() == applied_here.len() {
                    // One write per key: read back exactly, in the order
                    // the revision made them.
                    assert_eq!(
                        read_here, applied_here,
                        "seed {seed}: events read back for {key:?}..{range_end:?} at revision {revision}, in order"
                    );
                }
                let expected = at(wanted.iter().map(|e| (*e).clone()).collect());
                let got = at(read.events.clone());
                assert_eq!(
                    got, expected,
                    "seed {seed}: events read back for {key:?}..{range_end:?} at revision {revision}"
                );
            }
            assert!(
                read.events
                    .windows(2)
                    .all(|w| revision_of(&w[0]) <= revision_of(&w[1])),
                "seed {seed}: events read back out of order"
            );
        }
    }
}

#[test]
fn events_equal_the_history() {
    for seed in 1..=5 {
        check_seed(seed);
    }
}

#[test]
fn a_failed_command_makes_no_event_and_a_put_without_change_still_does() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("opening the store");
    let put = |value: &'static str| {
        Command(keelpb::Command {
            op: Some(Op::Put(PutRequest {
                key: Bytes::from_static(b"a"),
                value: Bytes::from_static(value.as_bytes()),
                ..Default::default()
            })),
            auth: None,
        })
    };
    let ignore_value_on_missing = Command(keelpb::Command {
        op: Some(Op::Put(PutRequest {
            key: Bytes::from_static(b"missing"),
            ignore_value: true,
            ..Default::default()
        })),
        auth: None,
    });
    let applied = store.apply_batch(vec![
        (1, put("1")),
        (2, ignore_value_on_missing),
        (3, put("1")),
    ]);
    assert!(applied.responses[1].is_err());
    let revisions: Vec<i64> = applied.events.iter().map(revision_of).collect();
    assert_eq!(revisions, vec![2, 3]);
    assert_eq!(
        applied.events[1].prev_kv.as_ref().map(|kv| kv.mod_revision),
        Some(2)
    );
}
