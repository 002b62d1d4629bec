//! Reading the key space's history back as events, for watchers that start
//! in the past or fell behind: the changes of a span of keys over a window
//! of revisions, each with the version it replaced.

use fjall::Readable;
use keel_api::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;

use crate::encoding::{
    change_key, decode_sub_revision, decode_version, key_end, split_change_key, split_version_key,
    version_key,
};
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
    /// each event's previous version when the store still has it. The
    /// window ends early, after a whole revision, once the events passed
    /// `max_bytes` (encoded). Refused with `Compacted` when `from` is below
    /// the compaction point (etcd's rule: the compaction point's own
    /// revision can still be read), and with `FutureRevision` never: a
    /// window past the store's revision just holds nothing yet.
    ///
    /// One key's versions are read newest first from the window's end; a
    /// range walks the `changes` index over the window and looks up each
    /// change of a key in the range.
    pub fn events(
        &self,
        key: &bytes::Bytes,
        range_end: &bytes::Bytes,
        from: i64,
        to: i64,
        max_bytes: usize,
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
        match span.single() {
            Some(key) => Ok(limited(
                self.key_events(&snapshot, key, from, to)?,
                max_bytes,
            )),
            None => self.range_events(&snapshot, &span, from, to, max_bytes),
        }
    }

    /// One key's changes at `from..=to`, from its versions.
    fn key_events(
        &self,
        snapshot: &fjall::Snapshot,
        key: &[u8],
        from: i64,
        to: i64,
    ) -> Result<History, MvccError> {
        let kv = &self.inner.keyspaces.kv;
        // A key's versions come newest first: start at the window's end,
        // and an event found is completed by the next (older) version, its
        // previous version.
        let mut waiting: Option<((i64, u32), Event)> = None;
        let mut ordered = Vec::new();
        for entry in snapshot.range(kv, version_key(key, to)..key_end(key)) {
            let (stored, value) = entry.into_inner()?;
            let (_, rev) = split_version_key(&stored)?;
            let version = decode_version(key, rev, &value)?;
            if let Some((place, mut event)) = waiting.take() {
                event.prev_kv = version.clone();
                ordered.push((place, event));
            }
            if rev < from {
                // Older than the window: the previous version, if wanted,
                // was just taken; nothing older is.
                break;
            }
            let place = (rev, decode_sub_revision(&value)?);
            waiting = Some((place, event_of(key, rev, version, None)));
        }
        if let Some((place, event)) = waiting {
            ordered.push((place, event));
        }
        ordered.sort_by_key(|(place, _)| *place);
        Ok(History {
            events: ordered.into_iter().map(|(_, event)| event).collect(),
            revision: to,
        })
    }

    /// A range's changes at `from..=to`, from the `changes` index; stops
    /// after the revision at which the events passed `max_bytes`.
    fn range_events(
        &self,
        snapshot: &fjall::Snapshot,
        span: &Span,
        from: i64,
        to: i64,
        max_bytes: usize,
    ) -> Result<History, MvccError> {
        let changes = &self.inner.keyspaces.changes;
        let window = change_key(from, 0).to_vec()..change_key(to.saturating_add(1), 0).to_vec();
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut current = None;
        for entry in snapshot.range(changes, window) {
            let (stored, key) = entry.into_inner()?;
            let (rev, sub) = split_change_key(&stored)?;
            if current != Some(rev) {
                if bytes >= max_bytes && current.is_some() {
                    return Ok(History {
                        events,
                        revision: rev - 1,
                    });
                }
                current = Some(rev);
            }
            if !span.contains(&key) {
                continue;
            }
            if let Some(event) = self.change_at(snapshot, &key, rev, sub)? {
                bytes += event.encoded_len();
                events.push(event);
            }
        }
        Ok(History {
            events,
            revision: to,
        })
    }

    /// The event of `key`'s `sub`-th write at `revision`, with its previous
    /// version; `None` if compaction removed it (a deletion at the
    /// compaction point) or a later write of the same revision replaced it
    /// (the store keeps one version per key and revision).
    fn change_at(
        &self,
        snapshot: &fjall::Snapshot,
        key: &[u8],
        revision: i64,
        sub: u32,
    ) -> Result<Option<Event>, MvccError> {
        let kv = &self.inner.keyspaces.kv;
        let mut versions = snapshot.range(kv, version_key(key, revision)..key_end(key));
        let Some(entry) = versions.next() else {
            return Ok(None);
        };
        let (stored, value) = entry.into_inner()?;
        if split_version_key(&stored)?.1 != revision || decode_sub_revision(&value)? != sub {
            return Ok(None);
        }
        let version = decode_version(key, revision, &value)?;
        let previous = match versions.next() {
            Some(entry) => {
                let (stored, value) = entry.into_inner()?;
                let (_, rev) = split_version_key(&stored)?;
                decode_version(key, rev, &value)?
            }
            None => None,
        };
        Ok(Some(event_of(key, revision, version, previous)))
    }
}

/// `history` cut after the revision at which its events passed
/// `max_bytes` (never before its first revision).
fn limited(mut history: History, max_bytes: usize) -> History {
    let mut bytes = 0usize;
    for (i, event) in history.events.iter().enumerate() {
        let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        let next = history.events.get(i + 1);
        bytes += event.encoded_len();
        let ends_revision =
            next.is_none_or(|n| n.kv.as_ref().map_or(0, |kv| kv.mod_revision) != revision);
        if bytes >= max_bytes && ends_revision && next.is_some() {
            history.events.truncate(i + 1);
            history.revision = revision;
            break;
        }
    }
    history
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
