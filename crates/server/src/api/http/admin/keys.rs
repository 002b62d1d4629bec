//! Browsing the key space: keys by prefix a page at a time, one key's
//! value and its history of changes, and the leases with their keys. Read
//! from this member's store as it has applied it.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use bytes::Bytes;
use keel_api::etcdserverpb::{RangeRequest, RangeResponse};
use keel_api::mvccpb::{event::EventType, KeyValue};
use keel_mvcc::prefix_end;
use prost::Message;
use serde::Serialize;

use super::{base64, lease_hex, ok, AdminError, Answer, Query};
use crate::api::http::Gateway;
use crate::auth::Caller;
use crate::core::blocking;

/// The most a history answer carries, in encoded bytes of values.
const HISTORY_BYTES: usize = 4 << 20;
/// The most leases listed, and keys listed per lease.
const MAX_LEASES: usize = 1000;
const MAX_LEASE_KEYS: usize = 100;

/// A key without its value, as listed.
#[derive(Serialize)]
struct KeyView {
    key: String,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: String,
}

impl From<&KeyValue> for KeyView {
    fn from(kv: &KeyValue) -> Self {
        KeyView {
            key: base64(&kv.key),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: lease_hex(kv.lease),
        }
    }
}

#[derive(Serialize)]
struct Page {
    revision: i64,
    keys: Vec<KeyView>,
    more: bool,
    count: i64,
}

/// The `key` parameter, which must be given.
fn key_parameter(query: &Query) -> Result<Bytes, AdminError> {
    match query.bytes("key") {
        Some(key) if !key.is_empty() => Ok(Bytes::copy_from_slice(key)),
        _ => Err(AdminError::bad_request(
            "give the key as ?key=... (percent-encoded)",
        )),
    }
}

/// A serializable range read through the core (so with its checks), and
/// the revision it read at.
async fn read(g: &Gateway, request: RangeRequest) -> Result<(i64, RangeResponse), AdminError> {
    let response = g
        .core
        .range(
            &Caller::Member,
            RangeRequest {
                serializable: true,
                ..request
            },
        )
        .await?;
    Ok((response.header.map_or(0, |h| h.revision), response))
}

/// `GET /api/v1/keys?prefix=&after=&limit=`.
pub(super) async fn list(State(g): State<Arc<Gateway>>, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(query.as_deref());
    let limit = query.limit(100, 1000)?;
    let prefix = query.bytes("prefix").unwrap_or_default();
    // Every key is at or after "\0"; a prefix's keys end at its end.
    let (first, end) = if prefix.is_empty() {
        (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
    } else {
        (Bytes::copy_from_slice(prefix), prefix_end(prefix))
    };
    let start = match query.bytes("after") {
        Some(after) if after >= &first[..] => {
            let mut next = after.to_vec();
            next.push(0);
            Bytes::from(next)
        }
        _ => first.clone(),
    };
    let (revision, page) = read(
        &g,
        RangeRequest {
            key: start,
            range_end: end.clone(),
            limit,
            keys_only: true,
            ..RangeRequest::default()
        },
    )
    .await?;
    let (_, counted) = read(
        &g,
        RangeRequest {
            key: first,
            range_end: end,
            count_only: true,
            revision,
            ..RangeRequest::default()
        },
    )
    .await?;
    ok(&Page {
        revision,
        keys: page.kvs.iter().map(KeyView::from).collect(),
        more: page.more,
        count: counted.count,
    })
}

/// A key with its value.
#[derive(Serialize)]
struct ValueView {
    #[serde(flatten)]
    key: KeyView,
    value: String,
}

#[derive(Serialize)]
struct One {
    revision: i64,
    kv: ValueView,
}

/// `GET /api/v1/key?key=`.
pub(super) async fn one(State(g): State<Arc<Gateway>>, RawQuery(query): RawQuery) -> Answer {
    let key = key_parameter(&Query::parse(query.as_deref()))?;
    let (revision, found) = read(
        &g,
        RangeRequest {
            key: key.clone(),
            ..RangeRequest::default()
        },
    )
    .await?;
    let Some(kv) = found.kvs.first() else {
        return Err(AdminError::not_found(format!(
            "no key {:?} at revision {revision}",
            String::from_utf8_lossy(&key)
        )));
    };
    ok(&One {
        revision,
        kv: ValueView {
            key: KeyView::from(kv),
            value: base64(&kv.value),
        },
    })
}

/// One change of a key.
#[derive(Serialize)]
struct Change {
    #[serde(rename = "type")]
    kind: &'static str,
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    value: String,
    lease: String,
}

#[derive(Serialize)]
struct History {
    revision: i64,
    compact_revision: i64,
    changes: Vec<Change>,
    /// Older changes are kept but were left out (by `limit` or size).
    more: bool,
}

/// `GET /api/v1/key/history?key=&limit=`: the key's changes since the
/// compaction point, newest first.
pub(super) async fn history(State(g): State<Arc<Gateway>>, RawQuery(query): RawQuery) -> Answer {
    let query = Query::parse(query.as_deref());
    let key = key_parameter(&query)?;
    let limit = query.limit(100, 1000)? as usize;
    let store = g.core.store.clone();
    let history = blocking("history", move || newest_changes(&store, &key, limit)).await??;
    ok(&history)
}

/// Reads a key's changes backwards in windows of revisions, so memory
/// stays bounded by the answer's size however long the history.
fn newest_changes(
    store: &keel_mvcc::Store,
    key: &Bytes,
    limit: usize,
) -> Result<History, AdminError> {
    let revision = store.revision();
    let compact_revision = store.compact_revision();
    let floor = compact_revision.max(1);
    let mut changes = Vec::new();
    let mut bytes = 0;
    let mut to = revision;
    let mut span: i64 = 256;
    let no_end = Bytes::new();
    let mut more = false;
    while to >= floor && changes.len() < limit && bytes < HISTORY_BYTES {
        let from = to.saturating_sub(span - 1).max(floor);
        let window = store
            .events(key, &no_end, from, to, HISTORY_BYTES)
            .map_err(crate::core::ServerError::from)?;
        if window.revision < to && !window.events.is_empty() {
            // Cut short for size: take the newer part of the window first.
            span = (to - window.revision).max(1);
            continue;
        }
        for event in window.events.iter().rev() {
            if changes.len() == limit || bytes >= HISTORY_BYTES {
                more = true;
                break;
            }
            let kv = event.kv.clone().unwrap_or_default();
            bytes += kv.encoded_len();
            changes.push(Change {
                kind: if event.r#type == EventType::Delete as i32 {
                    "DELETE"
                } else {
                    "PUT"
                },
                mod_revision: kv.mod_revision,
                create_revision: kv.create_revision,
                version: kv.version,
                value: base64(&kv.value),
                lease: lease_hex(kv.lease),
            });
        }
        to = from - 1;
        span = span.saturating_mul(4);
    }
    // Stopped for size or count with older revisions not yet read: there
    // may be more (read one more change to be sure).
    if !more && to >= floor && (changes.len() == limit || bytes >= HISTORY_BYTES) {
        more = !store
            .events(key, &no_end, floor, to, 1)
            .map_err(crate::core::ServerError::from)?
            .events
            .is_empty();
    }
    Ok(History {
        revision,
        compact_revision,
        changes,
        more,
    })
}

#[derive(Serialize)]
struct LeaseView {
    id: String,
    ttl: i64,
    remaining: i64,
    keys: Vec<String>,
    key_count: usize,
}

#[derive(Serialize)]
struct Leases {
    leases: Vec<LeaseView>,
}

/// `GET /api/v1/leases`: leases with their TTLs and keys.
pub(super) async fn leases(State(g): State<Arc<Gateway>>) -> Answer {
    let core = g.core.clone();
    let leases = blocking("leases", move || -> Result<Leases, AdminError> {
        let now = core.lease_clock.now();
        let mut leases = Vec::new();
        for (id, lease) in core.store.leases().into_iter().take(MAX_LEASES) {
            let (remaining, ttl) = core
                .lease_clock
                .remaining(id, now)
                .unwrap_or((-1, lease.ttl));
            let keys = core
                .store
                .lease_keys(id)
                .map_err(crate::core::ServerError::from)?;
            leases.push(LeaseView {
                id: lease_hex(id),
                ttl,
                remaining,
                key_count: keys.len(),
                keys: keys
                    .iter()
                    .take(MAX_LEASE_KEYS)
                    .map(|k| base64(k))
                    .collect(),
            });
        }
        Ok(Leases { leases })
    })
    .await??;
    ok(&leases)
}
