//! The watch hub: every change this member applies, delivered to the
//! watchers whose keys it touches, in revision order, with no gap and no
//! duplicate, and without ever blocking apply.
//!
//! Each watch stream has one queue of responses, bounded in bytes
//! ([`queue`]). A watcher is
//! *synced* while the queue keeps up: apply's events ([`EventSink`]) go
//! straight into it. A watcher that starts in the past, or whose queue was
//! full when its events came, is *unsynced*: the catch-up task reads its
//! missing revisions back from the store ([`Store::events`]) in windows, as
//! its stream's queue has room, and makes it synced again once it has
//! reached what apply has published. Memory per stream is the queue's; a
//! watcher that stops reading costs nothing more. A watcher that falls
//! below the compaction point is canceled with the compaction revision, as
//! etcd does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use keel_api::etcdserverpb::watch_create_request::FilterType;
use keel_api::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use keel_api::mvccpb::{event::EventType, Event};
use keel_mvcc::{History, MvccError, Span, Store};
use keel_node::Status;
use prost::Message;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::core::EventSink;

pub(crate) mod queue;

use queue::{QueueSender, Refused};

/// Revisions read back per step of catching a watcher up.
const CATCH_UP_WINDOW: i64 = 1000;

/// How often the catch-up task looks again at watchers whose stream queue
/// was full.
const RETRY_FULL: Duration = Duration::from_millis(20);

/// What one catch-up step did for a watcher (or a group of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// It is synced (or gone).
    Synced,
    /// It moved forward and has more to read.
    Progressed,
    /// Its stream's queue is full.
    Blocked,
}

impl Step {
    /// The step of a group: progress wins, then waiting.
    fn merge(self, other: Step) -> Step {
        match (self, other) {
            (Step::Progressed, _) | (_, Step::Progressed) => Step::Progressed,
            (Step::Blocked, _) | (_, Step::Blocked) => Step::Blocked,
            _ => Step::Synced,
        }
    }
}

/// A stream's id in the hub.
pub(crate) type StreamId = u64;

/// Why a watch could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WatchError {
    /// The client chose an id the stream already uses.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    /// `range_end` at or below `key`: etcd's error.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The stream holds as many watches as it may.
    #[error("too many watches on this stream (the limit is {0})")]
    TooManyWatches(usize),
    /// A key or range end the store refuses.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
}

/// What a watcher wants.
struct Watcher {
    key: Bytes,
    range_end: Bytes,
    /// The keys watched.
    span: Span,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// Wants a progress notification now and then.
    progress_notify: bool,
    /// Wants a response too large to send whole split into fragments.
    fragment: bool,
    /// The first revision not delivered yet.
    next: i64,
    /// Events go straight to the stream (else the catch-up task feeds it).
    synced: bool,
    /// Created and announced: eligible for events.
    active: bool,
}

impl Watcher {
    /// The events of `events` this watcher wants, from its next revision.
    fn select(&self, events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .filter(|e| {
                let Some(kv) = e.kv.as_ref() else {
                    return false;
                };
                let wanted_kind = if e.r#type == EventType::Put as i32 {
                    !self.no_put
                } else {
                    !self.no_delete
                };
                wanted_kind && kv.mod_revision >= self.next && self.span.contains(&kv.key)
            })
            .map(|e| Event {
                r#type: e.r#type,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

/// One watch stream: its queue and its watchers.
struct Stream {
    queue: QueueSender,
    watchers: BTreeMap<i64, Watcher>,
    /// The next id the server picks.
    next_id: i64,
    /// A progress report was asked for while some watcher was unsynced.
    progress_wanted: bool,
}

#[derive(Default)]
struct HubState {
    /// The last revision apply published.
    published: i64,
    streams: HashMap<StreamId, Stream>,
    next_stream: StreamId,
}

/// The watch hub of one member.
pub(crate) struct WatchHub {
    state: Mutex<HubState>,
    store: Store,
    /// This member's ids, for response headers.
    header: ResponseHeader,
    /// The raft node's status, for the term in response headers (set once
    /// the node runs: the hub exists before it).
    node: OnceLock<watch::Receiver<Status>>,
    /// The most watches one stream may hold.
    max_watches_per_stream: usize,
    /// The size past which a response is split for watchers that asked.
    max_response_bytes: usize,
    /// Wakes the catch-up task.
    unsynced: Notify,
}

impl WatchHub {
    /// A hub over `store`, whose responses carry `cluster_id` and
    /// `member_id`.
    pub(crate) fn new(
        store: Store,
        cluster_id: u64,
        member_id: u64,
        max_watches_per_stream: usize,
        max_response_bytes: usize,
    ) -> Self {
        let published = store.revision();
        WatchHub {
            state: Mutex::new(HubState {
                published,
                ..HubState::default()
            }),
            store,
            header: ResponseHeader {
                cluster_id,
                member_id,
                ..ResponseHeader::default()
            },
            max_watches_per_stream,
            max_response_bytes,
            unsynced: Notify::new(),
            node: OnceLock::new(),
        }
    }

    /// Tells the hub the node's status, for the term in response headers.
    pub(crate) fn set_node_status(&self, status: watch::Receiver<Status>) {
        let _ = self.node.set(status);
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The streams and the watches open.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        let watches = state.streams.values().map(|s| s.watchers.len()).sum();
        (state.streams.len(), watches)
    }

    /// The last revision apply published.
    pub(crate) fn published(&self) -> i64 {
        self.lock().published
    }

    /// A response header at `revision`.
    pub(crate) fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision,
            raft_term: self.node.get().map_or(0, |s| s.borrow().term),
            ..self.header
        })
    }

    /// Opens a stream whose responses go to `queue`.
    pub(crate) fn open_stream(&self, queue: QueueSender) -> StreamId {
        let mut state = self.lock();
        let id = state.next_stream;
        state.next_stream += 1;
        state.streams.insert(
            id,
            Stream {
                queue,
                watchers: BTreeMap::new(),
                next_id: 0,
                progress_wanted: false,
            },
        );
        id
    }

    /// Forgets a stream and its watchers.
    pub(crate) fn close_stream(&self, stream: StreamId) {
        self.lock().streams.remove(&stream);
    }

    /// Registers a watch (not yet active: [`activate`](Self::activate) it
    /// once its created response is queued) and returns its id and the
    /// revision to put in the created response.
    pub(crate) fn create(
        &self,
        stream: StreamId,
        request: &WatchCreateRequest,
    ) -> Result<(i64, i64), WatchError> {
        let span = Span::new(&request.key, &request.range_end)?.ok_or(WatchError::EmptyRange)?;
        // A negative start is below any compaction point: the watch is
        // canceled as compacted, as etcd's is.
        let next = match request.start_revision {
            0 => self.store.revision() + 1,
            r => r,
        };
        let mut state = self.lock();
        let published = state.published;
        let Some(stream) = state.streams.get_mut(&stream) else {
            return Err(WatchError::Mvcc(MvccError::InvalidArgument(
                "the watch stream is closed".into(),
            )));
        };
        if stream.watchers.len() >= self.max_watches_per_stream {
            return Err(WatchError::TooManyWatches(self.max_watches_per_stream));
        }
        let id = match request.watch_id {
            0 => {
                // An id the server chose is never chosen again on the
                // stream: responses still queued for a canceled watch must
                // not be taken for a new one's.
                while stream.watchers.contains_key(&stream.next_id) {
                    stream.next_id += 1;
                }
                stream.next_id += 1;
                stream.next_id - 1
            }
            id if stream.watchers.contains_key(&id) => return Err(WatchError::DuplicateId),
            id => id,
        };
        let filters = |f: FilterType| request.filters.contains(&(f as i32));
        stream.watchers.insert(
            id,
            Watcher {
                key: request.key.clone(),
                range_end: request.range_end.clone(),
                span,
                no_put: filters(FilterType::Noput),
                no_delete: filters(FilterType::Nodelete),
                prev_kv: request.prev_kv,
                progress_notify: request.progress_notify,
                fragment: request.fragment,
                next,
                synced: false,
                active: false,
            },
        );
        Ok((id, published))
    }

    /// Makes a created watch eligible for events: the catch-up task brings
    /// it to the present.
    pub(crate) fn activate(&self, stream: StreamId, id: i64) {
        if let Some(w) = self
            .lock()
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.get_mut(&id))
        {
            w.active = true;
        }
        self.unsynced.notify_one();
    }

    /// Cancels a watch; false if the stream has no such watch.
    pub(crate) fn cancel(&self, stream: StreamId, id: i64) -> bool {
        let mut state = self.lock();
        let removed = state
            .streams
            .get_mut(&stream)
            .and_then(|s| s.watchers.remove(&id))
            .is_some();
        drop(state);
        self.unsynced.notify_one();
        removed
    }

    /// The revision a progress report can name now: every watcher of the
    /// stream has reached it. `None` while one is catching up (the report
    /// is then sent once it has).
    pub(crate) fn progress(&self, stream: StreamId) -> Option<i64> {
        let mut state = self.lock();
        let published = state.published;
        let stream = state.streams.get_mut(&stream)?;
        if stream.watchers.values().all(|w| w.synced) {
            return Some(published);
        }
        stream.progress_wanted = true;
        None
    }

    /// Adds to `out` the responses that carry `events` to watcher `id`:
    /// one, or for a watcher that asked for fragments and a response over
    /// the size limit, several, each flagged `fragment` but the last
    /// (etcd's rule).
    fn push_responses(
        &self,
        out: &mut Vec<WatchResponse>,
        id: i64,
        watcher: &Watcher,
        header: Option<ResponseHeader>,
        events: Vec<Event>,
    ) {
        let whole = WatchResponse {
            header,
            watch_id: id,
            events,
            ..WatchResponse::default()
        };
        if !watcher.fragment
            || whole.events.len() < 2
            || whole.encoded_len() < self.max_response_bytes
        {
            out.push(whole);
            return;
        }
        let empty = WatchResponse {
            events: Vec::new(),
            fragment: true,
            ..whole.clone()
        };
        let first = out.len();
        out.push(empty.clone());
        for event in whole.events {
            let current = out.last_mut().expect("one part at least");
            current.events.push(event);
            if current.events.len() > 1 && current.encoded_len() >= self.max_response_bytes {
                let moved = current.events.pop().expect("just pushed");
                out.push(WatchResponse {
                    events: vec![moved],
                    ..empty.clone()
                });
            }
        }
        if let Some(last) = out[first..].last_mut() {
            last.fragment = false;
        }
    }

    /// Sends a progress notification (no events, the revision reached) to
    /// every synced watcher that asked for them, as etcd does periodically;
    /// a stream whose queue is full skips this one.
    pub(crate) fn notify_progress(&self) {
        let mut state = self.lock();
        let published = state.published;
        for stream in state.streams.values_mut() {
            for (id, watcher) in &stream.watchers {
                if watcher.active && watcher.synced && watcher.progress_notify {
                    let _ = stream.queue.try_send(WatchResponse {
                        header: self.header(published),
                        watch_id: *id,
                        ..WatchResponse::default()
                    });
                }
            }
        }
    }

    /// Sends progress notifications every `interval` until `stop`.
    pub(crate) async fn notify_progress_every(
        self: Arc<Self>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => self.notify_progress(),
            }
        }
    }

    /// Runs the catch-up task until `stop`.
    pub(crate) async fn catch_up(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let waiting = self.catch_up_round().await;
            let pause = async {
                if waiting {
                    tokio::time::sleep(RETRY_FULL).await;
                } else {
                    self.unsynced.notified().await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = pause => {}
            }
        }
    }

    /// One step for every unsynced watcher; true if some wait for room in
    /// their stream's queue (false: all synced, or more to read at once).
    /// Watchers of the same keys share one read of the store: thousands of
    /// watchers of one prefix that fell behind together catch up together.
    async fn catch_up_round(&self) -> bool {
        let mut groups: HashMap<(Bytes, Bytes), Vec<(StreamId, i64)>> = HashMap::new();
        for (sid, s) in &self.lock().streams {
            for (id, w) in &s.watchers {
                if w.active && !w.synced {
                    groups
                        .entry((w.key.clone(), w.range_end.clone()))
                        .or_default()
                        .push((*sid, *id));
                }
            }
        }
        let mut blocked = false;
        let mut progressed = false;
        for ((key, range_end), members) in groups {
            match self.catch_up_group(key, range_end, members).await {
                Step::Synced => {}
                Step::Progressed => progressed = true,
                Step::Blocked => blocked = true,
            }
        }
        if progressed {
            // More to read: go on without waiting.
            self.unsynced.notify_one();
        }
        blocked && !progressed
    }

    /// Moves unsynced watchers of `[key, range_end)` forward by one read
    /// of the store: a window from the earliest revision one of them
    /// misses, as large as the roomiest of their queues takes.
    async fn catch_up_group(
        &self,
        key: Bytes,
        range_end: Bytes,
        members: Vec<(StreamId, i64)>,
    ) -> Step {
        let mut eligible = Vec::new();
        let (mut from, mut room) = (i64::MAX, 0);
        let mut blocked = false;
        {
            let state = self.lock();
            for (stream, id) in members {
                let Some(s) = state.streams.get(&stream) else {
                    continue;
                };
                let Some(w) = s.watchers.get(&id) else {
                    continue;
                };
                // Nothing is read for a stream that is going or full.
                if s.queue.is_closed() {
                    continue;
                }
                let Some(free) = s.queue.room() else {
                    blocked = true;
                    continue;
                };
                from = from.min(w.next);
                room = room.max(free);
                eligible.push((stream, id));
            }
        }
        if eligible.is_empty() {
            return if blocked { Step::Blocked } else { Step::Synced };
        }
        let store = self.store.clone();
        let to = from.saturating_add(CATCH_UP_WINDOW - 1);
        let read =
            tokio::task::spawn_blocking(move || store.events(&key, &range_end, from, to, room));
        let history = match read.await {
            Ok(Ok(history)) => history,
            Ok(Err(e)) => return self.end_behind(&eligible, &e),
            Err(e) => {
                tracing::error!(error = %e, "the watch catch-up read failed");
                return Step::Blocked;
            }
        };
        let mut state = self.lock();
        let published = state.published;
        tracing::debug!(
            watchers = eligible.len(),
            from,
            to = history.revision,
            events = history.events.len(),
            "watch catch-up read"
        );
        let mut step = if blocked { Step::Blocked } else { Step::Synced };
        for (stream, id) in eligible {
            if let Some(s) = state.streams.get_mut(&stream) {
                step = step.merge(self.deliver(s, id, &history, published));
            }
        }
        step
    }

    /// Hands a watcher of stream `s` its part of `history`, a window read
    /// for it (and maybe for others from an earlier revision).
    fn deliver(&self, s: &mut Stream, id: i64, history: &History, published: i64) -> Step {
        let Some(w) = s.watchers.get_mut(&id) else {
            return Step::Synced;
        };
        let selected = w.select(&history.events);
        if !selected.is_empty() {
            let header = self.header(history.revision);
            let mut responses = Vec::new();
            self.push_responses(&mut responses, id, w, header, selected);
            if s.queue.try_send_all(responses).is_err() {
                return Step::Blocked;
            }
        }
        // A watcher starting in the future stays at its start.
        w.next = w.next.max(history.revision + 1);
        let caught_up = w.next > published;
        w.synced = caught_up;
        if caught_up && s.progress_wanted && s.watchers.values().all(|w| w.synced) {
            let report = progress_report(self.header(published));
            if s.queue.try_send(report).is_ok() {
                s.progress_wanted = false;
            }
        }
        if caught_up {
            Step::Synced
        } else {
            Step::Progressed
        }
    }

    /// Ends the watchers a read of history failed for: compaction passed
    /// the ones below its point (canceled with it, as etcd does), and any
    /// other failure ends them all with its reason.
    fn end_behind(&self, watchers: &[(StreamId, i64)], error: &MvccError) -> Step {
        let compacted = self.store.compact_revision();
        let mut state = self.lock();
        let published = state.published;
        let mut step = Step::Synced;
        for &(stream, id) in watchers {
            let Some(s) = state.streams.get_mut(&stream) else {
                continue;
            };
            let Some(w) = s.watchers.get(&id) else {
                continue;
            };
            let mut response = WatchResponse {
                header: self.header(published),
                watch_id: id,
                canceled: true,
                ..WatchResponse::default()
            };
            match error {
                MvccError::Compacted if w.next >= compacted => {
                    // Not behind itself: read again from its own revision.
                    step = step.merge(Step::Progressed);
                    continue;
                }
                // Never compacted yet (a negative start): etcd says -1.
                MvccError::Compacted => {
                    response.compact_revision = if compacted == 0 { -1 } else { compacted };
                }
                other => {
                    tracing::error!(error = %other, "reading history for a watcher failed");
                    response.cancel_reason = other.to_string();
                }
            }
            if s.queue.try_send(response).is_err() {
                step = step.merge(Step::Blocked);
                continue;
            }
            s.watchers.remove(&id);
            step = step.merge(Step::Progressed);
        }
        step
    }
}

/// A progress report: not about one watch (id -1), as etcd sends it.
pub(crate) fn progress_report(header: Option<ResponseHeader>) -> WatchResponse {
    WatchResponse {
        header,
        watch_id: -1,
        ..WatchResponse::default()
    }
}

impl EventSink for WatchHub {
    fn restored(&self) {
        let mut state = self.lock();
        state.published = self.store.revision();
        for stream in state.streams.values_mut() {
            for watcher in stream.watchers.values_mut() {
                watcher.synced = false;
            }
        }
        drop(state);
        self.unsynced.notify_one();
    }

    fn publish(&self, events: &[Event]) {
        let Some(last) = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
        else {
            return;
        };
        let header = self.header(last);
        let mut state = self.lock();
        state.published = state.published.max(last);
        let mut fell_behind = false;
        // A watcher that starts in the future stays at its start.
        let next = |w: &Watcher| w.next.max(last + 1);
        for stream in state.streams.values_mut() {
            // The stream's watchers' responses go in one batch: the stream
            // wakes once per applied batch, however many watch.
            let mut batch = Vec::new();
            let mut included = Vec::new();
            for (id, watcher) in stream.watchers.iter_mut() {
                if !watcher.active || !watcher.synced {
                    continue;
                }
                let selected = watcher.select(events);
                if selected.is_empty() {
                    watcher.next = next(watcher);
                    continue;
                }
                self.push_responses(&mut batch, *id, watcher, header, selected);
                included.push(watcher);
            }
            if batch.is_empty() {
                continue;
            }
            let sent = stream.queue.try_send_all(batch);
            for watcher in included {
                match sent {
                    Ok(()) => watcher.next = next(watcher),
                    Err(Refused::Full) => {
                        watcher.synced = false;
                        fell_behind = true;
                    }
                    // The stream is going; close_stream removes it.
                    Err(Refused::Closed) => {}
                }
            }
        }
        drop(state);
        if fell_behind {
            self.unsynced.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
