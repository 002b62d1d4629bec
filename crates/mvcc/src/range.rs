//! Range reads: which keys a request covers, reading their versions as of a
//! revision, and etcd's filtering, sorting and limiting of the result.

use std::cmp::Ordering;
use std::ops::Bound;

use bytes::Bytes;
use fjall::{Readable, Snapshot};

use crate::encoding::{
    check_key_len, decode_live, decode_version, key_end, key_start, split_version_key,
};
use crate::schema::Keyspaces;
use crate::MvccError;
use keel_api::etcdserverpb::range_request::{SortOrder, SortTarget};
use keel_api::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use keel_api::mvccpb::KeyValue;

/// The user keys a request covers, in etcd's forms: one key (`range_end`
/// empty), `[key, range_end)`, or every key from `key` on (`range_end`
/// is `"\0"`).
#[derive(Debug, Clone)]
pub struct Span {
    start: Bytes,
    end: SpanEnd,
}

#[derive(Debug, Clone)]
enum SpanEnd {
    Single,
    Before(Bytes),
    Unbounded,
}

impl Span {
    /// The span of `key` and `range_end`; `None` when it holds no key
    /// (`range_end` at or below `key`). Refuses keys too long to store.
    pub fn new(key: &Bytes, range_end: &Bytes) -> Result<Option<Span>, MvccError> {
        check_key_len(key)?;
        check_key_len(range_end)?;
        let end = match range_end.as_ref() {
            b"" => SpanEnd::Single,
            b"\0" => SpanEnd::Unbounded,
            end if end <= key.as_ref() => return Ok(None),
            _ => SpanEnd::Before(range_end.clone()),
        };
        Ok(Some(Span {
            start: key.clone(),
            end,
        }))
    }

    /// Whether `key` is in the span.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            SpanEnd::Single => key == self.start.as_ref(),
            SpanEnd::Before(end) => key >= self.start.as_ref() && key < end.as_ref(),
            SpanEnd::Unbounded => key >= self.start.as_ref(),
        }
    }

    /// The lowest user key and the bound above the span, for a BTreeMap.
    pub(crate) fn user_bounds(&self) -> (Bound<Bytes>, Bound<Bytes>) {
        let start = Bound::Included(self.start.clone());
        match &self.end {
            SpanEnd::Single => (start, Bound::Included(self.start.clone())),
            SpanEnd::Before(end) => (start, Bound::Excluded(end.clone())),
            SpanEnd::Unbounded => (start, Bound::Unbounded),
        }
    }

    /// The single key the span holds, if it is of that form.
    pub(crate) fn single(&self) -> Option<&Bytes> {
        matches!(self.end, SpanEnd::Single).then_some(&self.start)
    }

    /// The storage keys holding the span's versions.
    pub(crate) fn storage_bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let end = match &self.end {
            SpanEnd::Single => Some(key_end(&self.start)),
            SpanEnd::Before(end) => Some(key_start(end)),
            SpanEnd::Unbounded => None,
        };
        (key_start(&self.start), end)
    }
}

/// The range end that covers every key starting with `prefix`: the prefix
/// with its last byte below 0xff raised by one (trailing 0xff bytes
/// dropped), or `"\0"` (every key from the start on) when there is none,
/// as etcd's clients compute it.
pub fn prefix_end(prefix: &[u8]) -> bytes::Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end.into();
        }
    }
    bytes::Bytes::from_static(b"\0")
}

/// Where a read finds versions.
pub(crate) trait Versions {
    /// The live key-values in `span` as of `revision`, ascending by key.
    fn live(&self, span: &Span, revision: i64) -> Result<Vec<KeyValue>, MvccError>;

    /// The first `take` of [`live`](Versions::live)'s key-values (all when
    /// `None`) and how many there are in all; a source that can count
    /// without decoding every key-value does so.
    fn first(
        &self,
        span: &Span,
        revision: i64,
        take: Option<usize>,
    ) -> Result<(Vec<KeyValue>, usize), MvccError> {
        Ok(first_of(self.live(span, revision)?, take))
    }
}

/// The first `take` of `kvs` (all when `None`) and how many `kvs` held.
fn first_of(mut kvs: Vec<KeyValue>, take: Option<usize>) -> (Vec<KeyValue>, usize) {
    let count = kvs.len();
    if let Some(take) = take {
        kvs.truncate(take);
    }
    (kvs, count)
}

/// The versions in a committed storage snapshot.
pub(crate) struct Committed<'a> {
    /// The consistent storage view.
    pub snapshot: &'a Snapshot,
    /// The revision the snapshot holds.
    pub revision: i64,
    /// The store's keyspaces.
    pub keyspaces: &'a Keyspaces,
}

impl Versions for Committed<'_> {
    fn live(&self, span: &Span, revision: i64) -> Result<Vec<KeyValue>, MvccError> {
        Ok(self.first(span, revision, None)?.0)
    }

    fn first(
        &self,
        span: &Span,
        revision: i64,
        take: Option<usize>,
    ) -> Result<(Vec<KeyValue>, usize), MvccError> {
        if revision >= self.revision {
            return self.current(span, take);
        }
        Ok(first_of(self.history(span, revision)?, take))
    }
}

impl Committed<'_> {
    /// The first `take` live key-values in `span` from the `live` index,
    /// and how many there are: the rest are counted, not decoded.
    fn current(
        &self,
        span: &Span,
        take: Option<usize>,
    ) -> Result<(Vec<KeyValue>, usize), MvccError> {
        let live = &self.keyspaces.live;
        let take = take.unwrap_or(usize::MAX);
        if let Some(key) = span.single() {
            return match self.snapshot.get(live, key)? {
                Some(value) if take > 0 => Ok((vec![decode_live(key, &value)?], 1)),
                Some(_) => Ok((Vec::new(), 1)),
                None => Ok((Vec::new(), 0)),
            };
        }
        let mut found = Vec::new();
        let mut count = 0;
        for entry in self.snapshot.range(live, span.user_bounds()) {
            if found.len() < take {
                let (key, value) = entry.into_inner()?;
                found.push(decode_live(&key, &value)?);
            } else {
                entry.key()?;
            }
            count += 1;
        }
        Ok((found, count))
    }

    /// The key-values in `span` as of a past `revision`, from `kv`.
    fn history(&self, span: &Span, revision: i64) -> Result<Vec<KeyValue>, MvccError> {
        let kv = &self.keyspaces.kv;
        let (start, end) = span.storage_bounds();
        let entries = match end {
            Some(end) => self.snapshot.range(kv, start..end),
            None => self.snapshot.range(kv, start..),
        };
        let mut found = Vec::new();
        // The user key whose visible version has been settled: its older
        // versions are skipped.
        let mut settled: Option<Vec<u8>> = None;
        for entry in entries {
            let (stored, value) = entry.into_inner()?;
            let (key, rev) = split_version_key(&stored)?;
            if rev > revision || settled.as_deref() == Some(key.as_slice()) {
                continue;
            }
            if let Some(kv) = decode_version(&key, rev, &value)? {
                found.push(kv);
            }
            settled = Some(key);
        }
        Ok(found)
    }
}

/// Runs a range request against `versions`, where the store's revision is
/// `current` and history below `compacted` is gone.
pub(crate) fn execute(
    versions: &impl Versions,
    request: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse, MvccError> {
    let revision = if request.revision <= 0 {
        current
    } else {
        request.revision
    };
    if revision > current {
        return Err(MvccError::FutureRevision);
    }
    if revision < compacted {
        return Err(MvccError::Compacted);
    }
    // Without filters, in key order, only the first `limit` key-values are
    // needed; the count covers them all either way.
    let in_key_order = !has_filters(request) && sorts_by_key_ascending(request);
    let take = match request.limit {
        _ if request.count_only => Some(0),
        limit if limit > 0 && in_key_order => Some(limit as usize),
        _ => None,
    };
    let (mut kvs, count) = match Span::new(&request.key, &request.range_end)? {
        Some(span) => versions.first(&span, revision, take)?,
        None => (Vec::new(), 0),
    };
    let header = Some(ResponseHeader {
        revision: current,
        ..Default::default()
    });
    let count = count as i64;
    if request.count_only {
        return Ok(RangeResponse {
            header,
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    kvs.retain(|kv| passes_filters(request, kv));
    sort(&mut kvs, request);
    let mut more = false;
    // What the limit applies to: all matches when only the first were read.
    let matched = if take.is_some() {
        count
    } else {
        kvs.len() as i64
    };
    if request.limit > 0 && matched > request.limit {
        kvs.truncate(request.limit as usize);
        more = true;
    }
    if request.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse {
        header,
        kvs,
        more,
        count,
    })
}

fn has_filters(request: &RangeRequest) -> bool {
    request.max_mod_revision != 0
        || request.min_mod_revision != 0
        || request.max_create_revision != 0
        || request.min_create_revision != 0
}

/// Whether results come ascending by key, as they are stored.
fn sorts_by_key_ascending(request: &RangeRequest) -> bool {
    SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key) == SortTarget::Key
        && SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None) != SortOrder::Descend
}

fn passes_filters(request: &RangeRequest, kv: &KeyValue) -> bool {
    (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
        && (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
        && (request.max_create_revision == 0 || kv.create_revision <= request.max_create_revision)
        && (request.min_create_revision == 0 || kv.create_revision >= request.min_create_revision)
}

/// Sorts as etcd does: results come ascending by key; a sort target other
/// than the key with no order means ascending by that target.
fn sort(kvs: &mut [KeyValue], request: &RangeRequest) {
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    let by_target = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by_target),
        SortOrder::Descend => kvs.sort_by(|a, b| by_target(b, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"abc"), &b"abd"[..]);
        assert_eq!(prefix_end(b"a\xff"), &b"b"[..]);
        assert_eq!(prefix_end(b"\xff\xff"), &b"\0"[..]);
    }
}
