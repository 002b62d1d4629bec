//! The hub against the store's history: random writes in random batches
//! and random compactions, watchers with random keys, start revisions,
//! filters and prev_kv, on streams that read at once and streams that read
//! only now and then (so their watchers fall back to catching up from
//! history), canceled and resumed by their clients at random. Every watch
//! must receive exactly the history filtered to it, in the order it was
//! made, without gap or duplicate, never splitting a revision across
//! responses; a watch that compaction passed gets what came before the
//! compaction point and then its cancel, and the client resumes at it.

use std::collections::BTreeMap;

use keel_api::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use keel_api::keelpb::{self, command::Op};
use keel_mvcc::{Command, StoreOptions};

use super::queue::{queue, QueueReceiver};
use super::*;

/// xorshift64*, so a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    fn key(&mut self) -> Bytes {
        Bytes::from(format!("k{}", self.below(8)))
    }
}

fn command(rng: &mut Rng) -> Command {
    let put = |rng: &mut Rng| PutRequest {
        key: rng.key(),
        value: Bytes::from(rng.below(1000).to_string()),
        ..Default::default()
    };
    let op = match rng.below(6) {
        0..=2 => Op::Put(put(rng)),
        3 => Op::DeleteRange(DeleteRangeRequest {
            key: rng.key(),
            range_end: if rng.below(2) == 0 {
                Bytes::new()
            } else {
                Bytes::from_static(b"k4")
            },
            ..Default::default()
        }),
        _ => {
            let (a, b) = (rng.key(), rng.key());
            let ops = if a == b {
                vec![put(rng)]
            } else {
                vec![
                    PutRequest { key: a, ..put(rng) },
                    PutRequest { key: b, ..put(rng) },
                ]
            };
            Op::Txn(TxnRequest {
                success: ops
                    .into_iter()
                    .map(|p| RequestOp {
                        request: Some(keel_api::etcdserverpb::request_op::Request::RequestPut(p)),
                    })
                    .collect(),
                ..Default::default()
            })
        }
    };
    Command(keelpb::Command {
        op: Some(op),
        auth: None,
    })
}

/// How one watch of a subject ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// Still open at the end: it must have delivered everything.
    Open,
    /// Canceled by the client, which resumed after what it had received.
    Resumed,
}

/// One watch of a subject: its id and first revision.
#[derive(Debug)]
struct Link {
    id: i64,
    from: i64,
    end: End,
}

/// A watcher of the test, as a client sees it: one watch after another on
/// one stream, each resuming where the one before stopped (after the last
/// revision it delivered, or at the compaction point it was canceled for).
struct Subject {
    stream: usize,
    request: WatchCreateRequest,
    links: Vec<Link>,
}

/// The events of `events` a watch of `request` from `from` wants, in the
/// order they were made.
fn expected(request: &WatchCreateRequest, from: i64, events: &[Event]) -> Vec<Event> {
    let span = Span::new(&request.key, &request.range_end)
        .unwrap()
        .unwrap();
    let watcher = Watcher {
        key: request.key.clone(),
        range_end: request.range_end.clone(),
        span,
        no_put: request.filters.contains(&(FilterType::Noput as i32)),
        no_delete: request.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: request.prev_kv,
        progress_notify: false,
        fragment: false,
        next: from,
        synced: true,
        active: true,
    };
    watcher.select(events)
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().unwrap().mod_revision
}

/// Moves every response waiting on `rx` into `into`.
fn drain(rx: &mut QueueReceiver, into: &mut Vec<WatchResponse>) -> bool {
    let mut any = false;
    while let Some(response) = rx.try_recv() {
        into.push(response);
        any = true;
    }
    any
}

/// The responses of watch `id` among `received`.
fn responses_of(received: &[WatchResponse], id: i64) -> Vec<&WatchResponse> {
    received.iter().filter(|r| r.watch_id == id).collect()
}

/// Where the next watch of a subject starts once its watch `link` ends:
/// after the last revision it delivered, at the compaction point it was
/// canceled for, or where it started.
fn resume_point(received: &[WatchResponse], link: &Link) -> i64 {
    let responses = responses_of(received, link.id);
    if let Some(compacted) = responses.iter().find(|r| r.compact_revision > 0) {
        return compacted.compact_revision;
    }
    responses
        .iter()
        .flat_map(|r| r.events.iter().map(revision_of))
        .max()
        .map_or(link.from, |last| last + 1)
}

/// Checks what one watch delivered against the history.
fn check_link(
    seed: u64,
    subject: &Subject,
    link: &Link,
    received: &[WatchResponse],
    applied: &[Event],
    compacted: i64,
) {
    let mut delivered = Vec::new();
    let mut last = 0;
    let mut canceled_at = None;
    for response in responses_of(received, link.id) {
        assert!(
            canceled_at.is_none(),
            "seed {seed}: watch {} answered after its cancel",
            link.id
        );
        if response.canceled {
            assert!(
                response.compact_revision > 0,
                "seed {seed}: watch {} canceled without a compaction: {response:?}",
                link.id
            );
            canceled_at = Some(response.compact_revision);
        }
        let revisions: Vec<i64> = response.events.iter().map(revision_of).collect();
        assert!(
            revisions.first().is_none_or(|r| *r > last),
            "seed {seed}: watch {} got revision {:?} again or out of order (after {last})",
            link.id,
            revisions.first()
        );
        last = revisions.last().copied().unwrap_or(last);
        delivered.extend(response.events.clone());
    }
    let mut wanted = expected(&subject.request, link.from, applied);
    // An event at or below the compaction point read back from history
    // lacks its previous version once that was removed, as etcd's does.
    for (got, want) in delivered.iter().zip(wanted.iter_mut()) {
        if got.prev_kv.is_none() && revision_of(want) <= compacted {
            want.prev_kv = None;
        }
    }
    let context = format!(
        "seed {seed}: watch {} from {} ({:?}) on stream {}, ended {:?}",
        link.id, link.from, subject.request, subject.stream, link.end
    );
    assert!(
        delivered.len() <= wanted.len() && delivered[..] == wanted[..delivered.len()],
        "{context}: not a prefix of its history:\n{delivered:?}\nwanted\n{wanted:?}"
    );
    match (canceled_at, link.end) {
        (Some(point), _) => {
            // Compaction passed it: it was still below the point.
            assert!(
                point <= compacted,
                "{context}: canceled at {point} above {compacted}"
            );
            assert!(
                link.from < point && last + 1 < point,
                "{context}: canceled at {point} after revision {last}"
            );
        }
        (None, End::Open) => assert_eq!(delivered.len(), wanted.len(), "{context}: missed events"),
        (None, End::Resumed) => {}
    }
}

/// Runs one seed; returns how many watches compaction canceled and how
/// many the client resumed.
async fn run(seed: u64) -> (usize, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let hub = Arc::new(WatchHub::new(store.clone(), 1, 1, 100, 1 << 20));
    let stop = CancellationToken::new();
    let catch_up = tokio::spawn(hub.clone().catch_up(stop.clone()));

    // Stream 0 is read as it goes; streams 1 and 2 (queues of 400 bytes, a
    // few responses) only when one of their watchers resumes, and at the
    // end.
    let mut receivers = Vec::new();
    let mut streams = Vec::new();
    for budget in [1 << 20, 400, 400] {
        let (tx, rx) = queue(budget);
        streams.push(hub.open_stream(tx));
        receivers.push(rx);
    }
    let mut received: Vec<Vec<WatchResponse>> = vec![Vec::new(); streams.len()];
    let mut subjects: Vec<Subject> = Vec::new();
    let mut applied = Vec::new();
    let mut index = 0;
    let mut compacted = 0;
    let spans: [(&[u8], &[u8]); 4] = [(b"k1", b""), (b"k2", b"k6"), (b"k0", b"\0"), (b"\0", b"\0")];
    for round in 0..80 {
        if round % 4 == 0 {
            let stream = rng.below(3) as usize;
            let (key, range_end) = spans[rng.below(4) as usize];
            let start_revision = match rng.below(3) {
                0 => 0,
                1 => 1 + rng.below(store.revision() as u64) as i64,
                _ => store.revision() + 1 + rng.below(12) as i64,
            };
            let mut filters = Vec::new();
            match rng.below(4) {
                0 => filters.push(FilterType::Noput as i32),
                1 => filters.push(FilterType::Nodelete as i32),
                _ => {}
            }
            let request = WatchCreateRequest {
                key: Bytes::copy_from_slice(key),
                range_end: Bytes::copy_from_slice(range_end),
                start_revision,
                filters,
                prev_kv: rng.below(2) == 0,
                ..Default::default()
            };
            let from = if start_revision > 0 {
                start_revision
            } else {
                store.revision() + 1
            };
            let (id, _) = hub.create(streams[stream], &request).unwrap();
            hub.activate(streams[stream], id);
            // Let the catch-up task take it before the next writes.
            tokio::time::sleep(Duration::from_millis(1)).await;
            subjects.push(Subject {
                stream,
                request,
                links: vec![Link {
                    id,
                    from,
                    end: End::Open,
                }],
            });
        }
        if !subjects.is_empty() && rng.below(6) == 0 {
            // A client cancels a watch and resumes after what it received
            // (or from the compaction point it was canceled for).
            let pick = rng.below(subjects.len() as u64) as usize;
            let subject = &mut subjects[pick];
            let (stream, rx) = (streams[subject.stream], &mut receivers[subject.stream]);
            let link = subject.links.last_mut().unwrap();
            drain(rx, &mut received[subject.stream]);
            hub.cancel(stream, link.id);
            drain(rx, &mut received[subject.stream]);
            link.end = End::Resumed;
            let from = resume_point(&received[subject.stream], link);
            let request = WatchCreateRequest {
                start_revision: from,
                ..subject.request.clone()
            };
            let (id, _) = hub.create(stream, &request).unwrap();
            hub.activate(stream, id);
            subject.links.push(Link {
                id,
                from,
                end: End::Open,
            });
        }
        if store.revision() > compacted && rng.below(8) == 0 {
            // Compaction passes some of the watchers that lag.
            compacted += 1 + rng.below((store.revision() - compacted) as u64) as i64;
            index += 1;
            let compact = Command(keelpb::Command {
                op: Some(Op::Compact(keel_api::etcdserverpb::CompactionRequest {
                    revision: compacted,
                    physical: false,
                })),
                auth: None,
            });
            store.apply_batch(vec![(index, compact)]);
            if rng.below(2) == 0 {
                while store.compact_step(1000).unwrap() {}
            }
        }
        let batch: Vec<(u64, Command)> = (0..1 + rng.below(4))
            .map(|_| {
                index += 1;
                (index, command(&mut rng))
            })
            .collect();
        let outcome = store.apply_batch(batch);
        if !outcome.events.is_empty() {
            hub.publish(&outcome.events);
        }
        applied.extend(outcome.events);
        drain(&mut receivers[0], &mut received[0]);
        if rng.below(3) == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Read everything until every watcher has caught up and nothing is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut quiet = true;
        for (i, rx) in receivers.iter_mut().enumerate() {
            quiet &= !drain(rx, &mut received[i]);
        }
        let synced = streams.iter().all(|s| hub.progress(*s).is_some());
        if quiet && synced {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: watchers did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    catch_up.await.unwrap();

    let (mut canceled, mut resumed) = (0, 0);
    for subject in &subjects {
        for link in &subject.links {
            let received = &received[subject.stream];
            check_link(seed, subject, link, received, &applied, compacted);
            canceled += usize::from(responses_of(received, link.id).iter().any(|r| r.canceled));
            resumed += usize::from(link.end == End::Resumed);
        }
    }
    (canceled, resumed)
}

#[tokio::test]
async fn every_watcher_gets_exactly_its_history_fast_or_slow() {
    let (mut canceled, mut resumed) = (0, 0);
    for seed in 1..=12 {
        let (c, r) = run(seed).await;
        canceled += c;
        resumed += r;
    }
    // The seeds do reach compactions that pass watchers, and resumes.
    assert!(
        canceled > 0 && resumed > 0,
        "{canceled} canceled, {resumed} resumed"
    );
}

#[tokio::test]
async fn a_watcher_below_the_compaction_point_is_canceled_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let hub = Arc::new(WatchHub::new(store.clone(), 1, 1, 100, 1 << 20));
    let stop = CancellationToken::new();
    let catch_up = tokio::spawn(hub.clone().catch_up(stop.clone()));
    let put = |key: &'static str| {
        Command(keelpb::Command {
            op: Some(Op::Put(PutRequest {
                key: Bytes::from_static(key.as_bytes()),
                ..Default::default()
            })),
            auth: None,
        })
    };
    let compact = Command(keelpb::Command {
        op: Some(Op::Compact(keel_api::etcdserverpb::CompactionRequest {
            revision: 3,
            physical: false,
        })),
        auth: None,
    });
    store.apply_batch(vec![(1, put("a")), (2, put("a")), (3, compact)]);
    let (tx, mut rx) = queue(1 << 20);
    let stream = hub.open_stream(tx);
    let request = |start_revision| WatchCreateRequest {
        key: Bytes::from_static(b"a"),
        start_revision,
        ..Default::default()
    };
    let (below, _) = hub.create(stream, &request(2)).unwrap();
    hub.activate(stream, below);
    let (at, _) = hub.create(stream, &request(3)).unwrap();
    hub.activate(stream, at);
    let (negative, _) = hub.create(stream, &request(-3)).unwrap();
    hub.activate(stream, negative);
    let mut responses = Vec::new();
    while responses.len() < 3 {
        responses.push(rx.recv().await.unwrap());
    }
    responses.sort_by_key(|r| r.watch_id);
    assert_eq!(
        (
            responses[0].watch_id,
            responses[0].canceled,
            responses[0].compact_revision
        ),
        (below, true, 3)
    );
    assert_eq!(responses[1].watch_id, at);
    assert_eq!(responses[1].events.len(), 1, "revision 3 is still there");
    assert_eq!(
        (
            responses[2].watch_id,
            responses[2].canceled,
            responses[2].compact_revision
        ),
        (negative, true, 3),
        "a negative start is canceled as compacted, as etcd's is"
    );
    assert_eq!(
        hub.create(
            stream,
            &WatchCreateRequest {
                watch_id: at,
                ..request(0)
            }
        ),
        Err(WatchError::DuplicateId)
    );
    stop.cancel();
    catch_up.await.unwrap();
}

#[tokio::test]
async fn progress_notifications_go_to_synced_watchers_that_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let hub = Arc::new(WatchHub::new(store.clone(), 1, 1, 100, 1 << 20));
    let stop = CancellationToken::new();
    let catch_up = tokio::spawn(hub.clone().catch_up(stop.clone()));
    let (tx, mut rx) = queue(1 << 20);
    let stream = hub.open_stream(tx);
    let watch = |progress_notify| WatchCreateRequest {
        key: Bytes::from_static(b"a"),
        progress_notify,
        ..Default::default()
    };
    let (asked, _) = hub.create(stream, &watch(true)).unwrap();
    hub.activate(stream, asked);
    let (quiet, _) = hub.create(stream, &watch(false)).unwrap();
    hub.activate(stream, quiet);
    while hub.progress(stream).is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Asking while they caught up queued a progress report (id -1).
    while rx.try_recv().is_some() {}
    hub.notify_progress();
    let notification = rx.try_recv().expect("a notification");
    assert_eq!(notification.watch_id, asked);
    assert!(notification.events.is_empty());
    assert_eq!(notification.header.unwrap().revision, store.revision());
    assert!(rx.try_recv().is_none(), "only the watcher that asked");
    stop.cancel();
    catch_up.await.unwrap();
}

#[tokio::test]
async fn a_revision_too_large_is_fragmented_for_watchers_that_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    // Responses over 300 bytes are split for watchers that asked.
    let hub = Arc::new(WatchHub::new(store.clone(), 1, 1, 100, 300));
    let stop = CancellationToken::new();
    let catch_up = tokio::spawn(hub.clone().catch_up(stop.clone()));
    let (tx, mut rx) = queue(1 << 20);
    let stream = hub.open_stream(tx);
    let watch = |fragment| WatchCreateRequest {
        key: Bytes::from_static(b"f"),
        range_end: Bytes::from_static(b"g"),
        fragment,
        ..Default::default()
    };
    let (split, _) = hub.create(stream, &watch(true)).unwrap();
    hub.activate(stream, split);
    let (whole, _) = hub.create(stream, &watch(false)).unwrap();
    hub.activate(stream, whole);
    while hub.progress(stream).is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while rx.try_recv().is_some() {}
    let puts = (0..5)
        .map(|n| RequestOp {
            request: Some(keel_api::etcdserverpb::request_op::Request::RequestPut(
                PutRequest {
                    key: Bytes::from(format!("f{n}")),
                    value: Bytes::from(vec![b'v'; 100]),
                    ..Default::default()
                },
            )),
        })
        .collect();
    let txn = Command(keelpb::Command {
        op: Some(Op::Txn(TxnRequest {
            success: puts,
            ..Default::default()
        })),
        auth: None,
    });
    let applied = store.apply_batch(vec![(1, txn)]);
    hub.publish(&applied.events);
    let mut by_watch: BTreeMap<i64, Vec<WatchResponse>> = BTreeMap::new();
    while let Some(response) = rx.try_recv() {
        by_watch
            .entry(response.watch_id)
            .or_default()
            .push(response);
    }
    let parts = &by_watch[&split];
    assert!(parts.len() > 1, "split into fragments: {}", parts.len());
    let flags: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
    let mut wanted = vec![true; parts.len() - 1];
    wanted.push(false);
    assert_eq!(flags, wanted, "every part but the last says more follow");
    let events: Vec<Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
    assert_eq!(
        events, applied.events,
        "the parts hold the revision's events in order"
    );
    assert_eq!(
        by_watch[&whole].len(),
        1,
        "a watcher that did not ask gets one response"
    );
    assert!(!by_watch[&whole][0].fragment);
    stop.cancel();
    catch_up.await.unwrap();
}

#[test]
fn bad_watches_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let hub = WatchHub::new(store, 1, 1, 2, 1 << 20);
    let (tx, _rx) = queue(1 << 20);
    let stream = hub.open_stream(tx);
    let watch = |key: &'static [u8], range_end: &'static [u8], start_revision| WatchCreateRequest {
        key: Bytes::from_static(key),
        range_end: Bytes::from_static(range_end),
        start_revision,
        ..Default::default()
    };
    let refused = |request| hub.create(stream, &request).unwrap_err().to_string();
    assert_eq!(
        refused(watch(b"b", b"a", 0)),
        "mvcc: watcher range is empty"
    );
    assert_eq!(
        refused(watch(b"b", b"b", 0)),
        "mvcc: watcher range is empty"
    );
    hub.create(stream, &watch(b"a", b"", 0)).unwrap();
    hub.create(stream, &watch(b"a", b"\0", 0)).unwrap();
    assert!(refused(watch(b"a", b"", 0)).contains("too many watches"));
}
