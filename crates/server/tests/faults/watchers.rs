//! The watch workload: watchers of a key, a prefix and every key, each on a
//! random member, reconnecting now and then (and whenever a stream breaks)
//! to another member with their last revision + 1, and asking for
//! progress. keel-check's `check_watchers` compares what they received
//! with the store's history, read at the end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_api::etcdserverpb::watch_client::WatchClient;
use keel_api::etcdserverpb::watch_request::RequestUnion;
use keel_api::etcdserverpb::*;
use keel_api::mvccpb::event::EventType;
use keel_check::{EventKind, StoreEvent, WatchResponseRecord, WatchSession, Watcher};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::world::{channel, Client};

/// What each watcher watches: (key, range_end).
pub(crate) const RANGES: [(&str, &str); 3] = [("r0", ""), ("a", "b"), ("\0", "\0")];

fn event(e: &keel_api::mvccpb::Event) -> StoreEvent {
    let kv = e.kv.clone().unwrap_or_default();
    StoreEvent {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind: if e.r#type == EventType::Delete as i32 {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        value: kv.value.to_vec(),
    }
}

fn create(key: &str, range_end: &str, start_revision: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from(key.to_string()),
            range_end: Bytes::from(range_end.to_string()),
            start_revision,
            ..Default::default()
        })),
    }
}

/// The revision a watcher resumes after: its last event's, or the last
/// progress response's.
fn last_seen(sessions: &[WatchSession]) -> i64 {
    let mut last = 0;
    for r in sessions.iter().flat_map(|s| &s.responses) {
        if let Some(e) = r.events.last() {
            last = last.max(e.revision);
        }
        if r.progress {
            last = last.max(r.header_revision);
        }
    }
    last
}

/// One watcher of `RANGES[id]` until `until`, from revision 1.
pub(crate) async fn watcher(c: Client, out: Arc<Mutex<Vec<Watcher>>>) {
    let (id, until) = (c.id, c.until);
    let mut rng = c.rng(0x3a7c_4000);
    let (key, range_end) = RANGES[id % RANGES.len()];
    let mut members = c.connections();
    let mut sessions: Vec<WatchSession> = Vec::new();
    while !c.done() {
        let Some((member, channel)) = members.any(&mut rng).await else {
            continue;
        };
        let start_revision = last_seen(&sessions) + 1;
        let (requests, stream) = mpsc::channel(4);
        let _ = requests.send(create(key, range_end, start_revision)).await;
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            WatchClient::new(channel).watch(ReceiverStream::new(stream)),
        )
        .await;
        let Ok(Ok(responses)) = opened else {
            members.forget(member);
            continue;
        };
        let mut responses = responses.into_inner();
        let mut session = WatchSession {
            start_revision,
            responses: Vec::new(),
        };
        let ends = Instant::now() + Duration::from_millis(rng.random_range(1_000..5_000));
        let mut next_progress = Instant::now() + Duration::from_millis(300);
        loop {
            let now = Instant::now();
            if now >= ends.min(until) {
                break;
            }
            if now >= next_progress {
                let _ = requests
                    .send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    })
                    .await;
                next_progress = now + Duration::from_millis(rng.random_range(200..800));
            }
            let wait = ends.min(until).min(next_progress) - now;
            match tokio::time::timeout(wait, responses.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(r))) => {
                    if r.created || r.canceled {
                        if r.canceled {
                            break;
                        }
                        continue;
                    }
                    session.responses.push(WatchResponseRecord {
                        header_revision: r.header.map_or(0, |h| h.revision),
                        progress: r.events.is_empty(),
                        fragment: r.fragment,
                        events: r.events.iter().map(event).collect(),
                    });
                }
                // The stream broke: resume elsewhere.
                Ok(_) => {
                    members.forget(member);
                    break;
                }
            }
        }
        sessions.push(session);
    }
    out.lock().unwrap().push(Watcher {
        id,
        key: key.to_string(),
        range_end: range_end.to_string(),
        sessions,
    });
}

/// Every event of the store from revision 1 to `last`, read with a watch
/// of every key through the member at `addr`.
pub(crate) async fn history(addr: SocketAddr, last: i64) -> Result<Vec<StoreEvent>, String> {
    let c = channel(addr)
        .await
        .ok_or_else(|| format!("{addr} does not connect"))?;
    let (requests, stream) = mpsc::channel(1);
    let _ = requests.send(create("\0", "\0", 1)).await;
    let mut responses = WatchClient::new(c)
        .watch(ReceiverStream::new(stream))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.last().is_none_or(|e: &StoreEvent| e.revision < last) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(wait, responses.message()).await {
            Ok(Ok(Some(r))) => {
                if r.canceled {
                    return Err(format!(
                        "the history watch was canceled: {}",
                        r.cancel_reason
                    ));
                }
                events.extend(r.events.iter().map(event));
            }
            other => return Err(format!("the history watch ended early: {other:?}")),
        }
    }
    drop(requests);
    Ok(events)
}
