//! The watch check: what watchers received against the store's history,
//! for the guarantees etcd's robustness tests list — ordered, unique,
//! reliable, atomic, resumable, bookmarkable.

use std::collections::HashSet;
use std::fmt;

/// What an event did to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One event of the store: a key written or deleted at a revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreEvent {
    /// The revision it happened at (the key's mod revision).
    pub revision: i64,
    /// The key.
    pub key: String,
    /// Put or delete.
    pub kind: EventKind,
    /// The value written (empty for a delete).
    pub value: Vec<u8>,
}

/// One response a watcher received, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchResponseRecord {
    /// The response header's revision.
    pub header_revision: i64,
    /// Its events, in order.
    pub events: Vec<StoreEvent>,
    /// An empty response that is a progress notification.
    pub progress: bool,
    /// More of the same revision's events follow in the next response.
    pub fragment: bool,
}

/// One stream of a watcher, from its creation until it broke or was
/// closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSession {
    /// The revision it asked to start at.
    pub start_revision: i64,
    /// What it received, in arrival order.
    pub responses: Vec<WatchResponseRecord>,
}

/// One watcher's life: possibly several sessions (reconnects), each
/// resuming at last seen revision + 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    /// A name for reports.
    pub id: usize,
    /// The first key watched.
    pub key: String,
    /// `""`: `key` alone; `"\0"`: every key from `key` on; else the keys
    /// in `[key, range_end)`.
    pub range_end: String,
    /// Its sessions, in order.
    pub sessions: Vec<WatchSession>,
}

impl Watcher {
    /// Whether the watcher watches `key`.
    pub fn watches(&self, key: &str) -> bool {
        match self.range_end.as_str() {
            "" => key == self.key,
            "\0" => key >= self.key.as_str(),
            end => key >= self.key.as_str() && key < end,
        }
    }
}

/// What checked histories held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchSummary {
    /// Watchers checked.
    pub watchers: usize,
    /// Their sessions, in all.
    pub sessions: usize,
    /// The events they received, in all.
    pub events: usize,
}

/// The guarantees, and the history's own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchGuarantee {
    /// Revisions never go back within a watcher, across its sessions.
    Ordered,
    /// No (revision, key) is delivered twice to a watcher.
    Unique,
    /// A session receives exactly the history's events in its range, from
    /// its start up to the last revision it saw.
    Reliable,
    /// A revision's events come in one response (or one run of fragments).
    Atomic,
    /// A session starting at R gets nothing below R, and a watcher's
    /// sessions leave no gap between them.
    Resumable,
    /// A progress notification at R comes after every event up to R.
    Bookmarkable,
    /// The store's history itself is not in revision order.
    History,
}

impl fmt::Display for WatchGuarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WatchGuarantee::Ordered => "ordered",
            WatchGuarantee::Unique => "unique",
            WatchGuarantee::Reliable => "reliable",
            WatchGuarantee::Atomic => "atomic",
            WatchGuarantee::Resumable => "resumable",
            WatchGuarantee::Bookmarkable => "bookmarkable",
            WatchGuarantee::History => "the history",
        })
    }
}

/// A watch guarantee broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchViolation {
    /// Which one.
    pub guarantee: WatchGuarantee,
    /// The watcher's id (`None` for the history itself).
    pub watcher: Option<usize>,
    /// What it watched, as text.
    pub range: String,
    /// The session (index in the watcher's sessions).
    pub session: usize,
    /// The response (index in the session's), if one is to blame.
    pub response: Option<usize>,
    /// What happened.
    pub explanation: String,
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(w) = self.watcher {
            write!(f, "watcher {w} ({}), session {}", self.range, self.session)?;
            if let Some(r) = self.response {
                write!(f, ", response {r}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{} broken: {}", self.guarantee, self.explanation)
    }
}

impl std::error::Error for WatchViolation {}

impl fmt::Display for StoreEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Delete => write!(f, "rev {} delete {:?}", self.revision, self.key),
            EventKind::Put => {
                let value = String::from_utf8_lossy(&self.value);
                let shown: String = value.chars().take(40).collect();
                let more = if shown.len() < value.len() { "…" } else { "" };
                write!(
                    f,
                    "rev {} put {:?} = {shown:?}{more}",
                    self.revision, self.key
                )
            }
        }
    }
}

/// Checks what `watchers` received against `history`: every event of the
/// store in revision order (within a revision, in the order the writes
/// were made), from revision 1 to the end, as read after healing. Events
/// are compared whole: revision, key, kind and value.
pub fn check_watchers(
    history: &[StoreEvent],
    watchers: &[Watcher],
) -> Result<WatchSummary, WatchViolation> {
    if let Some(pair) = history.windows(2).find(|p| p[1].revision < p[0].revision) {
        return Err(WatchViolation {
            guarantee: WatchGuarantee::History,
            watcher: None,
            range: String::new(),
            session: 0,
            response: None,
            explanation: format!("{} comes after {}", pair[1], pair[0]),
        });
    }
    let mut summary = WatchSummary::default();
    for watcher in watchers {
        Check::new(history, watcher).run()?;
        summary.watchers += 1;
        summary.sessions += watcher.sessions.len();
        summary.events += watcher
            .sessions
            .iter()
            .flat_map(|s| &s.responses)
            .map(|r| r.events.len())
            .sum::<usize>();
    }
    Ok(summary)
}

/// One watcher's check.
struct Check<'a> {
    watcher: &'a Watcher,
    /// The history's events in the watcher's range.
    mine: Vec<&'a StoreEvent>,
    history: &'a [StoreEvent],
}

impl<'a> Check<'a> {
    fn new(history: &'a [StoreEvent], watcher: &'a Watcher) -> Check<'a> {
        Check {
            watcher,
            mine: history.iter().filter(|e| watcher.watches(&e.key)).collect(),
            history,
        }
    }

    /// The watcher's events with revisions in `[from, to]`.
    fn between(&self, from: i64, to: i64) -> &[&'a StoreEvent] {
        let lo = self.mine.partition_point(|e| e.revision < from);
        let hi = self.mine.partition_point(|e| e.revision <= to).max(lo);
        &self.mine[lo..hi]
    }

    fn violation(
        &self,
        guarantee: WatchGuarantee,
        session: usize,
        response: Option<usize>,
        explanation: String,
    ) -> WatchViolation {
        let w = self.watcher;
        let range = match w.range_end.as_str() {
            "" => format!("key {:?}", w.key),
            "\0" => format!("keys from {:?} on", w.key),
            end => format!("keys [{:?}, {:?})", w.key, end),
        };
        WatchViolation {
            guarantee,
            watcher: Some(w.id),
            range,
            session,
            response,
            explanation,
        }
    }

    /// What is wrong with receiving `got` where `expected` was due, if
    /// anything.
    fn difference(&self, got: &[&StoreEvent], expected: &[&StoreEvent]) -> Option<String> {
        let at = got.iter().zip(expected).position(|(g, e)| g != e);
        let at = at.unwrap_or(got.len().min(expected.len()));
        match (got.get(at), expected.get(at)) {
            (None, None) => None,
            (None, Some(e)) => Some(format!("it never got {e}")),
            (Some(g), e) => {
                if !self.watcher.watches(&g.key) {
                    Some(format!("it got {g}, outside its range"))
                } else if !self.history.contains(g) {
                    let instead =
                        e.map_or(String::new(), |e| format!(" (the next event due was {e})"));
                    Some(format!(
                        "it got {g}, which the history does not have{instead}"
                    ))
                } else if let Some(e) = e {
                    Some(format!("it never got {e} (it got {g} in its place)"))
                } else {
                    Some(format!("it got {g}, which was not due yet"))
                }
            }
        }
    }

    fn run(&self) -> Result<(), WatchViolation> {
        use WatchGuarantee::*;
        let mut last_revision = 0;
        let mut delivered: HashSet<(i64, &str)> = HashSet::new();
        // The last revision earlier sessions saw.
        let mut seen_until: Option<i64> = None;
        for (s, session) in self.watcher.sessions.iter().enumerate() {
            let start = session.start_revision;
            if let Some(seen) = seen_until {
                if let Some(e) = self.between(seen + 1, start - 1).first() {
                    return Err(self.violation(
                        Resumable,
                        s,
                        None,
                        format!(
                            "it resumed at revision {start} after seeing up to {seen}: it never got {e}"
                        ),
                    ));
                }
            }
            // This session's events, and where the current run of
            // responses (one response, or fragments and their end) began.
            let mut got: Vec<&StoreEvent> = Vec::new();
            let mut batch = 0;
            let mut batch_response = 0;
            let mut last_seen: Option<i64> = None;
            for (i, response) in session.responses.iter().enumerate() {
                for e in &response.events {
                    if e.revision < start {
                        return Err(self.violation(
                            Resumable,
                            s,
                            Some(i),
                            format!("it started at revision {start} but got {e}"),
                        ));
                    }
                    if e.revision < last_revision {
                        return Err(self.violation(
                            Ordered,
                            s,
                            Some(i),
                            format!("it got {e} after an event of revision {last_revision}"),
                        ));
                    }
                    if !delivered.insert((e.revision, &e.key)) {
                        return Err(self.violation(
                            Unique,
                            s,
                            Some(i),
                            format!("it got {e} a second time"),
                        ));
                    }
                    last_revision = e.revision;
                    got.push(e);
                }
                if let Some(e) = response.events.last() {
                    last_seen = last_seen.max(Some(e.revision));
                }
                if response.progress && response.events.is_empty() {
                    let at = response.header_revision;
                    let due = self.between(start, at);
                    let before = got.partition_point(|e| e.revision <= at);
                    if let Some(why) = self.difference(&got[..before], due) {
                        return Err(self.violation(
                            Bookmarkable,
                            s,
                            Some(i),
                            format!("a progress notification at revision {at} came, but {why}"),
                        ));
                    }
                    last_seen = last_seen.max(Some(at));
                }
                if !response.fragment {
                    self.atomic(&got[batch..], s, batch_response, i)?;
                    batch = got.len();
                    batch_response = i + 1;
                }
            }
            if let Some(seen) = last_seen {
                if let Some(why) = self.difference(&got, self.between(start, seen)) {
                    return Err(self.violation(
                        Reliable,
                        s,
                        None,
                        format!("from revision {start} up to {seen}, the last it saw, {why}"),
                    ));
                }
            }
            let before = seen_until.unwrap_or(start - 1);
            seen_until = Some(before.max(last_seen.unwrap_or(start - 1)));
        }
        Ok(())
    }

    /// Checks that the responses `first..=last` of session `s`, which
    /// carried `events`, carried every event of each revision they touched.
    fn atomic(
        &self,
        events: &[&StoreEvent],
        s: usize,
        first: usize,
        last: usize,
    ) -> Result<(), WatchViolation> {
        let mut rest = events;
        while let Some(e) = rest.first() {
            let n = rest.partition_point(|x| x.revision == e.revision);
            let due = self.between(e.revision, e.revision);
            if n < due.len() {
                let missing = due
                    .iter()
                    .find(|d| !rest[..n].contains(d))
                    .unwrap_or(&due[0]);
                let responses = if first == last {
                    format!("response {last}")
                } else {
                    format!("responses {first} to {last} (fragments)")
                };
                return Err(self.violation(
                    WatchGuarantee::Atomic,
                    s,
                    Some(last),
                    format!(
                        "revision {} has {} events in its range, but {responses} carried {n} of them, without {missing}",
                        e.revision,
                        due.len()
                    ),
                ));
            }
            rest = &rest[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: i64, key: &str, value: &str) -> StoreEvent {
        StoreEvent {
            revision,
            key: key.into(),
            kind: EventKind::Put,
            value: value.into(),
        }
    }

    fn delete(revision: i64, key: &str) -> StoreEvent {
        StoreEvent {
            revision,
            key: key.into(),
            kind: EventKind::Delete,
            value: Vec::new(),
        }
    }

    /// Revision 2 is a txn writing two keys; revision 5 deletes one.
    fn history() -> Vec<StoreEvent> {
        vec![
            put(1, "a/1", "x"),
            put(2, "a/1", "y"),
            put(2, "a/2", "z"),
            put(3, "b", "w"),
            put(4, "a/2", "v"),
            delete(5, "a/1"),
            put(6, "c", "u"),
        ]
    }

    fn events(revisions: &[(i64, usize)]) -> Vec<StoreEvent> {
        // (revision, index in the history) pairs, for readability.
        revisions
            .iter()
            .map(|&(_, i)| history()[i].clone())
            .collect()
    }

    fn response(events: Vec<StoreEvent>) -> WatchResponseRecord {
        WatchResponseRecord {
            header_revision: events.last().map_or(0, |e| e.revision),
            events,
            progress: false,
            fragment: false,
        }
    }

    fn progress(at: i64) -> WatchResponseRecord {
        WatchResponseRecord {
            header_revision: at,
            events: Vec::new(),
            progress: true,
            fragment: false,
        }
    }

    fn watcher(
        key: &str,
        range_end: &str,
        sessions: Vec<(i64, Vec<WatchResponseRecord>)>,
    ) -> Watcher {
        Watcher {
            id: 7,
            key: key.into(),
            range_end: range_end.into(),
            sessions: sessions
                .into_iter()
                .map(|(start_revision, responses)| WatchSession {
                    start_revision,
                    responses,
                })
                .collect(),
        }
    }

    fn broken(w: Watcher) -> WatchViolation {
        check_watchers(&history(), &[w]).expect_err("a violation")
    }

    /// The prefix "a/": every event of a/1 and a/2, over two sessions,
    /// the second resuming after a progress notification.
    fn prefix_watcher() -> Watcher {
        watcher(
            "a/",
            "a0",
            vec![
                (
                    1,
                    vec![
                        response(events(&[(1, 0)])),
                        response(events(&[(2, 1), (2, 2)])),
                        progress(3),
                    ],
                ),
                (
                    4,
                    vec![response(events(&[(4, 4)])), response(events(&[(5, 5)]))],
                ),
            ],
        )
    }

    #[test]
    fn watchers_that_got_what_they_should_pass() {
        let one_key = watcher(
            "b",
            "",
            vec![(
                1,
                vec![progress(2), response(events(&[(3, 3)])), progress(6)],
            )],
        );
        let all = watcher(
            "\0",
            "\0",
            vec![(
                1,
                vec![
                    response(history()[..3].to_vec()),
                    // Any grouping of whole revisions into responses is fine.
                    response(history()[3..4].to_vec()),
                    response(history()[4..].to_vec()),
                ],
            )],
        );
        let mut fragments = watcher("a/", "a0", vec![(2, Vec::new())]);
        let mut first = response(events(&[(2, 1)]));
        first.fragment = true;
        fragments.sessions[0].responses = vec![first, response(events(&[(2, 2)]))];
        // A session that saw nothing, then one that resumes where it began.
        let quiet = watcher(
            "c",
            "",
            vec![(1, Vec::new()), (1, vec![response(events(&[(6, 6)]))])],
        );
        let summary = check_watchers(
            &history(),
            &[prefix_watcher(), one_key, all, fragments, quiet],
        )
        .unwrap();
        assert_eq!(
            summary,
            WatchSummary {
                watchers: 5,
                sessions: 7,
                events: 5 + 1 + 7 + 2 + 1,
            }
        );
    }

    #[test]
    fn revisions_going_back_are_caught() {
        let w = watcher(
            "a/",
            "a0",
            vec![(
                1,
                vec![
                    response(events(&[(2, 1), (2, 2)])),
                    response(events(&[(1, 0)])),
                ],
            )],
        );
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Ordered, "{v}");
        assert_eq!(
            v.to_string(),
            "watcher 7 (keys [\"a/\", \"a0\")), session 0, response 1: ordered broken: \
             it got rev 1 put \"a/1\" = \"x\" after an event of revision 2"
        );
    }

    #[test]
    fn an_event_twice_is_caught() {
        // The second session resumes at the last revision, not after it.
        let mut w = prefix_watcher();
        w.sessions[1].start_revision = 2;
        w.sessions[1]
            .responses
            .insert(0, response(events(&[(2, 1), (2, 2)])));
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Unique, "{v}");
    }

    #[test]
    fn a_missed_or_altered_event_is_caught() {
        let mut w = prefix_watcher();
        w.sessions[1].responses.remove(0);
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Reliable, "{v}");
        assert!(
            v.explanation
                .contains("never got rev 4 put \"a/2\" = \"v\""),
            "{v}"
        );
        let mut w = prefix_watcher();
        w.sessions[1].responses[0].events[0].value = b"other".to_vec();
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Reliable, "{v}");
        assert!(
            v.explanation.contains("which the history does not have"),
            "{v}"
        );
        let mut w = prefix_watcher();
        w.sessions[1].responses[0].events[0].kind = EventKind::Delete;
        assert_eq!(broken(w).guarantee, WatchGuarantee::Reliable);
    }

    #[test]
    fn a_revision_split_across_responses_is_caught() {
        let mut w = prefix_watcher();
        w.sessions[0].responses[1] = response(events(&[(2, 1)]));
        w.sessions[0]
            .responses
            .insert(2, response(events(&[(2, 2)])));
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Atomic, "{v}");
        assert_eq!(v.response, Some(1), "{v}");
    }

    #[test]
    fn resuming_wrongly_is_caught() {
        // An event from before the session's start.
        let mut w = prefix_watcher();
        w.sessions[1].start_revision = 5;
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Resumable, "{v}");
        // A gap between sessions.
        let mut w = prefix_watcher();
        w.sessions[1].start_revision = 5;
        w.sessions[1].responses.remove(0);
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Resumable, "{v}");
        assert!(
            v.explanation
                .contains("resumed at revision 5 after seeing up to 3"),
            "{v}"
        );
    }

    #[test]
    fn a_progress_notification_too_early_is_caught() {
        // Progress at 4 before revision 4's event came.
        let mut w = prefix_watcher();
        w.sessions[1].responses.insert(0, progress(4));
        let v = broken(w);
        assert_eq!(v.guarantee, WatchGuarantee::Bookmarkable, "{v}");
        assert_eq!((v.session, v.response), (1, Some(0)), "{v}");
        // At 3 it was right.
        let mut w = prefix_watcher();
        w.sessions[1].responses.insert(0, progress(3));
        assert!(check_watchers(&history(), &[w]).is_ok());
    }

    #[test]
    fn a_history_out_of_order_is_refused() {
        let mut h = history();
        h.swap(0, 1);
        let v = check_watchers(&h, &[]).unwrap_err();
        assert_eq!(v.guarantee, WatchGuarantee::History, "{v}");
    }

    /// What a correct server sends a watcher over `history`: sessions cut
    /// at random revisions, whole revisions grouped into responses (a
    /// revision of several events sometimes in fragments), progress
    /// notifications at revisions it has caught up with.
    fn served(history: &[StoreEvent], w: &mut Watcher, plan: &[(u8, u8)]) {
        let mine: Vec<&StoreEvent> = history.iter().filter(|e| w.watches(&e.key)).collect();
        let mut revisions: Vec<Vec<StoreEvent>> = Vec::new();
        for e in mine {
            match revisions.last_mut() {
                Some(r) if r[0].revision == e.revision => r.push(e.clone()),
                _ => revisions.push(vec![e.clone()]),
            }
        }
        let last = history.last().map_or(0, |e| e.revision);
        let mut sessions = vec![WatchSession {
            start_revision: 1,
            responses: Vec::new(),
        }];
        let mut plan = plan.iter().cycle();
        for (i, events) in revisions.iter().enumerate() {
            let &(how, cut) = plan.next().unwrap();
            let session = sessions.last_mut().unwrap();
            let open = session.responses.last().is_some_and(|r| !r.progress);
            if how % 3 == 0 || !open {
                if events.len() > 1 && how % 2 == 0 {
                    for (j, e) in events.iter().enumerate() {
                        session.responses.push(WatchResponseRecord {
                            header_revision: e.revision,
                            events: vec![e.clone()],
                            progress: false,
                            fragment: j + 1 < events.len(),
                        });
                    }
                } else {
                    session.responses.push(response(events.clone()));
                }
            } else {
                session
                    .responses
                    .last_mut()
                    .unwrap()
                    .events
                    .extend(events.clone());
            }
            let seen = events[0].revision;
            // Caught up to just before the next revision it watches.
            let next = revisions.get(i + 1).map_or(last + 1, |r| r[0].revision);
            if cut % 4 == 0 {
                session
                    .responses
                    .push(progress(seen + (cut as i64 / 4) % (next - seen)));
            }
            if cut % 5 == 0 {
                let resumed_at = session.responses.iter().rev().find_map(|r| {
                    r.events
                        .last()
                        .map(|e| e.revision)
                        .or(r.progress.then_some(r.header_revision))
                });
                sessions.push(WatchSession {
                    start_revision: resumed_at.unwrap_or(seen).max(seen) + 1,
                    responses: Vec::new(),
                });
            }
        }
        w.sessions = sessions;
    }

    proptest::proptest! {
        #[test]
        fn what_a_correct_server_sends_passes(
            writes in proptest::collection::vec((0u8..5, 0u8..4, 0u8..3), 1..40),
            plan in proptest::collection::vec((0u8..6, 0u8..20), 1..20),
        ) {
            let keys = ["a/1", "a/2", "b", "c", "a0"];
            let mut history = Vec::new();
            for (i, &(key, more, kind)) in writes.iter().enumerate() {
                let revision = i as i64 + 1;
                for k in 0..=(more as usize % 3) {
                    let key = keys[(key as usize + k) % keys.len()];
                    history.push(if kind == 0 { delete(revision, key) } else { put(revision, key, &format!("v{i}")) });
                }
            }
            let mut watchers = vec![
                watcher("a/", "a0", Vec::new()),
                watcher("b", "", Vec::new()),
                watcher("\0", "\0", Vec::new()),
            ];
            for w in &mut watchers {
                served(&history, w, &plan);
            }
            let checked = check_watchers(&history, &watchers);
            proptest::prop_assert!(checked.is_ok(), "{}\n{:#?}", checked.unwrap_err(), watchers);
            // And any event altered is caught.
            let all = &mut watchers[2];
            let first = all.sessions.iter_mut().flat_map(|s| &mut s.responses).flat_map(|r| &mut r.events).next().unwrap();
            first.value.push(b'!');
            proptest::prop_assert!(check_watchers(&history, &watchers).is_err());
        }
    }
}
