//! Reading the key space's history back as events, for watchers that start
//! in the past or fell behind: the changes of a span of keys over a window
//! of revisions, each with the version it replaced.

use fjall::Readable;
use keel_api::mvccpb::{event::EventType, Event, KeyValue};

use crate::encoding::{decode_sub_revision, decode_version, split_version_key, version_key};
use crate::range::Span;
use crate::{MvccError, Store};

/// The events of a window of revisions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The events, by revision, and within a revision in the order the
    /// writes were made (etcd's sub-revision order).
    pub events: Vec<Event>,
    /// The last revision the window covers: every event up to it is in
    /// `events` (the window ends at the store's revision if that is lower).
    pub revision: i64,
}

impl Store {
    /// The changes to keys in `[key, range_end)` (etcd's forms: one key,
    /// a range, or from `key` on with `"\0"`) at revisions `from..=to`, with
    /// each event's previous version when the store still has it. Refused
    /// with `Compacted` when `from` is below the compaction point (etcd's
    /// rule: the compaction point's own revision can still be read), and
    /// with `FutureRevision` never: a window past the store's revision
    /// just holds nothing yet.
    pub fn events(
        &self,
        key: &bytes::Bytes,
        range_end: &bytes::Bytes,
        from: i64,
        to: i64,
    ) -> Result<History, MvccError> {
        let (snapshot, revision, compacted) = self.read_view()?;
        if from < compacted {
            return Err(MvccError::Compacted);
        }
        let to = to.min(revision);
        let Some(span) = Span::new(key, range_end)? else {
            return Ok(History {
                events: Vec::new(),
                revision: to,
            });
        };
        let (mut start, end) = span.storage_bounds();
        let single = span.single().cloned();
        if let Some(key) = &single {
            // One key's versions come newest first: start at the window's
            // end instead of at the newest.
            start = version_key(key, to);
        }
        let kv = &self.inner.keyspaces.kv;
        let entries = match end {
            Some(end) => snapshot.range(kv, start..end),
            None => snapshot.range(kv, start..),
        };
        // A key's versions come newest first: an event found is completed by
        // the next (older) version of the same key, its previous version.
        let mut waiting: Option<(Vec<u8>, (i64, u32), Event)> = None;
        let mut ordered = Vec::new();
        for entry in entries {
            let (stored, value) = entry.into_inner()?;
            let (key, rev) = split_version_key(&stored)?;
            let version = decode_version(&key, rev, &value)?;
            if let Some((waiting_key, place, mut event)) = waiting.take() {
                if waiting_key == key {
                    event.prev_kv = version.clone();
                }
                ordered.push((place, event));
            }
            if rev < from && single.is_some() {
                // Older than the window: the previous version, if wanted,
                // was just taken; nothing older is.
                break;
            }
            if rev < from || rev > to {
                continue;
            }
            let place = (rev, decode_sub_revision(&value)?);
            waiting = Some((key.clone(), place, event_of(&key, rev, version, None)));
        }
        if let Some((_, place, event)) = waiting {
            ordered.push((place, event));
        }
        ordered.sort_by_key(|(place, _)| *place);
        Ok(History {
            events: ordered.into_iter().map(|(_, event)| event).collect(),
            revision: to,
        })
    }
}

/// The event of a write at `revision`: a put carries the new version, a
/// delete (`version` is `None`) the key and the revision it was deleted at,
/// as etcd's do; `previous` is the version it replaced.
pub(crate) fn event_of(
    key: &[u8],
    revision: i64,
    version: Option<KeyValue>,
    previous: Option<KeyValue>,
) -> Event {
    let (kind, kv) = match version {
        Some(kv) => (EventType::Put, kv),
        None => (
            EventType::Delete,
            KeyValue {
                key: bytes::Bytes::copy_from_slice(key),
                mod_revision: revision,
                ..KeyValue::default()
            },
        ),
    };
    Event {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: previous,
    }
}
