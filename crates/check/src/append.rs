//! The list-append check: transactions that read lists and append unique
//! elements to them, checked for strict serializability by the cycles of
//! their dependency graph.
//!
//! Each key's list shows the order in which its appends took effect (its
//! version order): the final list, read at the end, is the whole order,
//! and every list a committed transaction read must be a prefix of it.
//! From the version orders come the dependencies between transactions:
//! write-write (`ww`: T2's append comes next after T1's on some key),
//! write-read (`wr`: T2 read a list whose last element T1 appended) and
//! read-write anti-dependencies (`rw`: T1 read a list that lacks the next
//! element, which T2 appended), plus real-time order (`rt`: T1 returned
//! before T2 was called). A serializable history has no cycle of
//! `ww`/`wr`/`rw` edges; a strictly serializable one none with `rt` either.
//! A cycle is reported as the first kind of these that exists, in this
//! order: G0 (`ww` only), G1c (`ww` and `wr`), G-single (exactly one
//! `rw`), G2 (more), real-time (needs an `rt` edge).
//!
//! Only committed transactions' reads count; an aborted transaction had no
//! effect; one whose outcome is unknown joins the graph if any of its
//! appends was observed (then it committed), and is otherwise left out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::graph::{Graph, Step, Times};

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MicroOp {
    /// Read a key's list: `None` before the txn returned or if unknown;
    /// `Some(list)` as read (empty list: key absent).
    Read {
        /// The key.
        key: String,
        /// What was read, if known.
        value: Option<Vec<u64>>,
    },
    /// Append a unique element (unique across the whole history) to a
    /// key's list.
    Append {
        /// The key.
        key: String,
        /// The element.
        element: u64,
    },
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnOutcome {
    /// It took effect, and the client heard so.
    Committed,
    /// It definitely had no effect (e.g. a txn whose compare failed).
    Aborted,
    /// Unknown: it may or may not have taken effect (timeout, connection
    /// lost).
    Unknown,
}

/// One transaction of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendTxn {
    /// The client that ran it.
    pub client: usize,
    /// When it was called (any monotonic clock, e.g. nanoseconds).
    pub call: u64,
    /// When it returned; `None` if it never did. An `Unknown` txn counts
    /// as never returned whatever this says (it may still take effect).
    pub ret: Option<u64>,
    /// Its operations, in order.
    pub ops: Vec<MicroOp>,
    /// How it ended.
    pub outcome: TxnOutcome,
}

/// What a history that passed held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Committed transactions.
    pub committed: usize,
    /// Transactions whose outcome is unknown.
    pub unknown: usize,
    /// Aborted transactions.
    pub aborted: usize,
    /// Keys, in the history or the final lists.
    pub keys: usize,
    /// Edges of the dependency graph (ordered pairs of distinct
    /// transactions with a `ww`, `wr`, `rw` or `rt` edge between them).
    pub edges: usize,
}

/// The kinds of anomaly, in the order they are looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// Two appends of the same element: the history itself is malformed.
    DuplicateAppend,
    /// An element twice in one list.
    DuplicateElement,
    /// An element observed in a key's list that no txn appended to it.
    GarbageRead,
    /// An element appended by an aborted txn was observed (G1a).
    AbortedRead,
    /// A txn's reads disagree with its own appends or with each other.
    Internal,
    /// A read list is not a prefix of the key's version order.
    IncompatibleOrder,
    /// An append of a txn that committed is missing from the final list.
    LostWrite,
    /// A read saw a txn's append to a key but not its later append to the
    /// same key (G1b).
    IntermediateRead,
    /// A cycle of write-write dependencies.
    G0,
    /// A cycle of write-write and write-read dependencies.
    G1c,
    /// A cycle with exactly one anti-dependency.
    GSingle,
    /// A cycle with more than one anti-dependency.
    G2,
    /// A cycle that needs a real-time edge: not strictly serializable.
    RealTime,
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnomalyKind::DuplicateAppend => "malformed history (an element appended twice)",
            AnomalyKind::DuplicateElement => "duplicate element",
            AnomalyKind::GarbageRead => "garbage read",
            AnomalyKind::AbortedRead => "aborted read (G1a)",
            AnomalyKind::Internal => "internal inconsistency",
            AnomalyKind::IncompatibleOrder => "incompatible version orders",
            AnomalyKind::LostWrite => "lost acknowledged write",
            AnomalyKind::IntermediateRead => "intermediate read (G1b)",
            AnomalyKind::G0 => "G0 (write cycle)",
            AnomalyKind::G1c => "G1c (circular information flow)",
            AnomalyKind::GSingle => "G-single (a cycle with one anti-dependency)",
            AnomalyKind::G2 => "G2 (a cycle of anti-dependencies)",
            AnomalyKind::RealTime => "not strictly serializable (a cycle through real-time order)",
        })
    }
}

/// Why a history is not strictly serializable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendAnomaly {
    /// What kind of anomaly.
    pub kind: AnomalyKind,
    /// What happened, in words naming the txns (`T<index in the
    /// history>`); for a cycle, one line per edge.
    pub explanation: String,
    /// The txns involved, with their index in the history.
    pub txns: Vec<(usize, AppendTxn)>,
}

impl fmt::Display for AppendAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.kind, self.explanation)?;
        writeln!(f, "transactions (times as recorded, ? = no answer):")?;
        for (i, txn) in &self.txns {
            writeln!(f, "  T{i} = {txn}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AppendAnomaly {}

/// A list, shortened when long: the first two elements and the last
/// three.
struct List<'a>(&'a [u64]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |f: &mut fmt::Formatter<'_>, part: &[u64]| -> fmt::Result {
            let text: Vec<String> = part.iter().map(u64::to_string).collect();
            f.write_str(&text.join(" "))
        };
        let l = self.0;
        f.write_str("[")?;
        if l.len() <= 7 {
            show(f, l)?;
        } else {
            show(f, &l[..2])?;
            write!(f, " …{} more… ", l.len() - 5)?;
            show(f, &l[l.len() - 3..])?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for AppendTxn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = self.ret.map_or("?".into(), |r| r.to_string());
        let outcome = match self.outcome {
            TxnOutcome::Committed => "committed",
            TxnOutcome::Aborted => "aborted",
            TxnOutcome::Unknown => "unknown",
        };
        write!(
            f,
            "client {} [{} .. {}] {outcome}:",
            self.client, self.call, ret
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            match op {
                MicroOp::Read { key, value: None } => write!(f, "{sep}r {key} ?")?,
                MicroOp::Read {
                    key,
                    value: Some(v),
                } => write!(f, "{sep}r {key} {}", List(v))?,
                MicroOp::Append { key, element } => write!(f, "{sep}append {key} {element}")?,
            }
        }
        Ok(())
    }
}

/// Edge kinds, as bits.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;

/// How many edges the search for a cycle to report may look at before it
/// settles for what it has.
const SEARCH_BUDGET: usize = 20_000_000;

/// An append, as the element's index keeps it.
#[derive(Clone, Copy)]
struct Appended {
    txn: usize,
    key: usize,
    /// Whether the txn appends nothing after it to the same key.
    last_on_key: bool,
}

/// A committed txn's read, reduced to what others wrote: the list read
/// without the txn's own appends at its end, which (once the version
/// orders are checked) is the first `len` elements of the key's version
/// order.
#[derive(Clone, Copy)]
struct Observed {
    key: usize,
    len: usize,
}

/// The history, indexed.
struct Index<'a> {
    history: &'a [AppendTxn],
    keys: Vec<&'a str>,
    key_of: HashMap<&'a str, usize>,
    appended: HashMap<u64, Appended>,
    /// Each key's version order, and whether it is the final list (or
    /// else the longest list read).
    order: Vec<(Vec<u64>, bool)>,
    /// Each element's position in its key's version order.
    position: HashMap<u64, usize>,
}

impl<'a> Index<'a> {
    fn anomaly(&self, kind: AnomalyKind, explanation: String, txns: &[usize]) -> AppendAnomaly {
        let mut txns: Vec<usize> = txns.to_vec();
        txns.sort_unstable();
        txns.dedup();
        AppendAnomaly {
            kind,
            explanation,
            txns: txns
                .into_iter()
                .map(|i| (i, self.history[i].clone()))
                .collect(),
        }
    }

    /// Whether `list` is a prefix of `key`'s version order.
    fn is_prefix(&self, key: usize, list: &[u64]) -> bool {
        let order = &self.order[key].0;
        list.len() <= order.len() && order[..list.len()] == *list
    }

    /// The txn that appended the element at `pos` of `key`'s version
    /// order.
    fn writer(&self, key: usize, pos: usize) -> usize {
        self.appended[&self.order[key].0[pos]].txn
    }

    /// Checks one list's elements: no duplicates, none nobody appended to
    /// this key, none an aborted txn appended. `what` says whose list it
    /// is; `reader` is the txn that read it, if one did.
    fn elements(
        &self,
        key: usize,
        list: &[u64],
        what: &str,
        reader: Option<usize>,
    ) -> Result<(), AppendAnomaly> {
        let mut seen = HashSet::with_capacity(list.len());
        let name = self.keys[key];
        let involved =
            |other: Option<usize>| -> Vec<usize> { reader.into_iter().chain(other).collect() };
        for (pos, &e) in list.iter().enumerate() {
            let writer = self.appended.get(&e);
            if !seen.insert(e) {
                return Err(self.anomaly(
                    AnomalyKind::DuplicateElement,
                    format!(
                        "{what} {} holds {e} twice (again at position {pos})",
                        List(list)
                    ),
                    &involved(writer.map(|w| w.txn)),
                ));
            }
            match writer {
                None => {
                    return Err(self.anomaly(
                        AnomalyKind::GarbageRead,
                        format!("{what} {} holds {e}, which no txn appended", List(list)),
                        &involved(None),
                    ))
                }
                Some(w) if w.key != key => {
                    return Err(self.anomaly(
                        AnomalyKind::GarbageRead,
                        format!(
                            "{what} {} holds {e}, which T{} appended to {}, not {name}",
                            List(list),
                            w.txn,
                            self.keys[w.key]
                        ),
                        &involved(Some(w.txn)),
                    ))
                }
                Some(w) if self.history[w.txn].outcome == TxnOutcome::Aborted => {
                    return Err(self.anomaly(
                        AnomalyKind::AbortedRead,
                        format!(
                            "{what} {} holds {e}, appended by T{}, which aborted",
                            List(list),
                            w.txn
                        ),
                        &involved(Some(w.txn)),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Checks a list-append history for strict serializability. `final_lists`:
/// each key's list read at the end (linearizably, after healing). A key
/// missing from it was not read at the end: its version order is then the
/// longest list a committed txn read, and its appends are not checked for
/// loss.
pub fn check_append(
    history: &[AppendTxn],
    final_lists: &BTreeMap<String, Vec<u64>>,
) -> Result<AppendSummary, AppendAnomaly> {
    let mut index = Index {
        history,
        keys: Vec::new(),
        key_of: HashMap::new(),
        appended: HashMap::new(),
        order: Vec::new(),
        position: HashMap::new(),
    };
    // Keys, and every append.
    let all_keys = final_lists
        .keys()
        .map(String::as_str)
        .chain(history.iter().flat_map(|t| {
            t.ops.iter().map(|op| match op {
                MicroOp::Read { key, .. } | MicroOp::Append { key, .. } => key.as_str(),
            })
        }));
    for key in all_keys {
        if !index.key_of.contains_key(key) {
            index.key_of.insert(key, index.keys.len());
            index.keys.push(key);
        }
    }
    for (t, txn) in history.iter().enumerate() {
        for (i, op) in txn.ops.iter().enumerate() {
            let MicroOp::Append { key, element } = op else {
                continue;
            };
            let last_on_key = !txn.ops[i + 1..]
                .iter()
                .any(|later| matches!(later, MicroOp::Append { key: k, .. } if k == key));
            let appended = Appended {
                txn: t,
                key: index.key_of[key.as_str()],
                last_on_key,
            };
            if let Some(before) = index.appended.insert(*element, appended) {
                return Err(index.anomaly(
                    AnomalyKind::DuplicateAppend,
                    format!(
                        "T{} and T{t} both append {element}: elements must be unique",
                        before.txn
                    ),
                    &[before.txn, t],
                ));
            }
        }
    }
    // Every committed read: (txn, op index, key).
    let mut reads: Vec<(usize, usize, usize)> = Vec::new();
    for (t, txn) in history.iter().enumerate() {
        if txn.outcome != TxnOutcome::Committed {
            continue;
        }
        for (i, op) in txn.ops.iter().enumerate() {
            if let MicroOp::Read {
                key,
                value: Some(_),
            } = op
            {
                reads.push((t, i, index.key_of[key.as_str()]));
            }
        }
    }
    let read_list = |&(t, i, _): &(usize, usize, usize)| -> &[u64] {
        match &history[t].ops[i] {
            MicroOp::Read { value: Some(v), .. } => v,
            _ => unreachable!("only reads with values are kept"),
        }
    };
    // Version orders: the final list, or the longest read.
    for key in 0..index.keys.len() {
        let order = match final_lists.get(index.keys[key]) {
            Some(list) => (list.clone(), true),
            None => {
                let longest = reads
                    .iter()
                    .filter(|r| r.2 == key)
                    .map(read_list)
                    .max_by_key(|l| l.len())
                    .unwrap_or(&[]);
                (longest.to_vec(), false)
            }
        };
        index.order.push(order);
    }
    for key in 0..index.keys.len() {
        let (list, is_final) = &index.order[key];
        let what = if *is_final {
            format!("the final list of {}", index.keys[key])
        } else {
            format!("the longest read of {}", index.keys[key])
        };
        index.elements(key, list, &what, None)?;
    }
    for (list, _) in &index.order {
        for (pos, &e) in list.iter().enumerate() {
            index.position.insert(e, pos);
        }
    }
    // Reads that are not prefixes of their key's version order: first
    // whatever is wrong with their elements.
    let mut incompatible = None;
    for r in &reads {
        let list = read_list(r);
        if !index.is_prefix(r.2, list) {
            let what = format!("T{}'s read of {}", r.0, index.keys[r.2]);
            index.elements(r.2, list, &what, Some(r.0))?;
            incompatible.get_or_insert(*r);
        }
    }
    // Internal consistency, and each read reduced to what others wrote.
    let mut observed: Vec<Vec<Observed>> = vec![Vec::new(); history.len()];
    let mut done = vec![false; history.len()];
    for &(t, _, _) in &reads {
        if std::mem::replace(&mut done[t], true) {
            continue;
        }
        observed[t] = internal(&index, t)?;
    }
    if let Some(r) = incompatible {
        let (t, key, list) = (r.0, r.2, read_list(&r));
        let (order, is_final) = &index.order[key];
        let name = index.keys[key];
        let diverge = list
            .iter()
            .zip(order)
            .position(|(a, b)| a != b)
            .unwrap_or(list.len().min(order.len()));
        let explanation = if *is_final {
            let at = match (list.get(diverge), order.get(diverge)) {
                (Some(a), Some(b)) => {
                    format!("at position {diverge} it has {a}, the final list {b}")
                }
                _ => format!("the final list ends at position {diverge}"),
            };
            format!(
                "T{t} read {name} = {}, which is not a prefix of {name}'s final list {}: {at}",
                List(list),
                List(order)
            )
        } else {
            format!(
                "T{t} read {name} = {}, which is not a prefix of the longest read of {name}, {} \
                 (and {name} has no final list): they differ at position {diverge}",
                List(list),
                List(order)
            )
        };
        let mut involved = vec![t];
        if !is_final {
            involved.extend(
                reads
                    .iter()
                    .find(|r| r.2 == key && read_list(r) == order.as_slice())
                    .map(|r| r.0),
            );
        }
        return Err(index.anomaly(AnomalyKind::IncompatibleOrder, explanation, &involved));
    }
    // Which txns took effect: committed ones, and unknown ones that were
    // observed.
    let effective: Vec<bool> = history
        .iter()
        .map(|txn| match txn.outcome {
            TxnOutcome::Committed => true,
            TxnOutcome::Aborted => false,
            TxnOutcome::Unknown => txn.ops.iter().any(|op| {
                matches!(op, MicroOp::Append { element, .. } if index.position.contains_key(element))
            }),
        })
        .collect();
    // Lost writes.
    for (t, txn) in history.iter().enumerate() {
        if !effective[t] {
            continue;
        }
        for op in &txn.ops {
            let MicroOp::Append { key, element } = op else {
                continue;
            };
            let k = index.key_of[key.as_str()];
            let (order, is_final) = &index.order[k];
            if !*is_final || index.position.contains_key(element) {
                continue;
            }
            let why = if txn.outcome == TxnOutcome::Committed {
                "committed".to_string()
            } else {
                let seen = txn
                    .ops
                    .iter()
                    .find_map(|op| match op {
                        MicroOp::Append { key, element }
                            if index.position.contains_key(element) =>
                        {
                            Some(format!("{element} (to {key})"))
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                format!(
                    "had an unknown outcome but took effect (its append of {seen} was observed)"
                )
            };
            return Err(index.anomaly(
                AnomalyKind::LostWrite,
                format!(
                    "T{t} {why}, yet its append of {element} is missing from {key}'s final list {}",
                    List(order)
                ),
                &[t],
            ));
        }
    }
    // Intermediate reads.
    for (t, seen) in observed.iter().enumerate() {
        for o in seen.iter().filter(|o| o.len > 0) {
            let e = index.order[o.key].0[o.len - 1];
            let w = index.appended[&e];
            if w.txn != t && !w.last_on_key {
                return Err(index.anomaly(
                    AnomalyKind::IntermediateRead,
                    format!(
                        "T{t} read {} ending in {e}, but T{} appended more to {} after {e}",
                        index.keys[o.key], w.txn, index.keys[o.key]
                    ),
                    &[t, w.txn],
                ));
            }
        }
    }
    // The dependency graph.
    let mut edges: Vec<(usize, usize, u8)> = Vec::new();
    for key in 0..index.keys.len() {
        for pos in 1..index.order[key].0.len() {
            edges.push((index.writer(key, pos - 1), index.writer(key, pos), WW));
        }
    }
    for (t, seen) in observed.iter().enumerate() {
        for o in seen {
            if o.len > 0 {
                edges.push((index.writer(o.key, o.len - 1), t, WR));
            }
            if o.len < index.order[o.key].0.len() {
                edges.push((t, index.writer(o.key, o.len), RW));
            }
        }
    }
    real_time(history, &effective, &mut edges);
    let graph = Graph::new(history.len(), edges);
    let summary = AppendSummary {
        committed: count(history, TxnOutcome::Committed),
        unknown: count(history, TxnOutcome::Unknown),
        aborted: count(history, TxnOutcome::Aborted),
        keys: index.keys.len(),
        edges: graph.edges(),
    };
    match find_cycle(history, &graph, &effective) {
        None => Ok(summary),
        Some(cycle) => Err(report_cycle(&index, &observed, &cycle)),
    }
}

fn count(history: &[AppendTxn], outcome: TxnOutcome) -> usize {
    history.iter().filter(|t| t.outcome == outcome).count()
}

/// Checks committed txn `t`'s reads against its own appends: a read of a
/// key after the txn appended to it ends with those appends, and equals
/// the key's previous read plus them; no read holds an element the txn
/// itself appends to that key, other than at that end. Returns its reads
/// as prefixes of the version orders (which the caller has checked they
/// are).
fn internal(index: &Index<'_>, t: usize) -> Result<Vec<Observed>, AppendAnomaly> {
    let txn = &index.history[t];
    // Per key: the last read (without own appends), own appends since.
    let mut state: HashMap<usize, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
    let mut out = Vec::new();
    for op in &txn.ops {
        match op {
            MicroOp::Append { key, element } => {
                let k = index.key_of[key.as_str()];
                state.entry(k).or_default().1.push(*element);
            }
            MicroOp::Read { value: None, .. } => {}
            MicroOp::Read {
                key,
                value: Some(list),
            } => {
                let k = index.key_of[key.as_str()];
                let (before, own) = state.entry(k).or_default();
                let wrong = |why: String| {
                    Err(index.anomaly(
                        AnomalyKind::Internal,
                        format!("T{t} read {key} = {}, but {why}", List(list)),
                        &[t],
                    ))
                };
                if !list.ends_with(own) {
                    return wrong(format!(
                        "it had appended {} to it, which the read should end with",
                        List(own)
                    ));
                }
                let others = &list[..list.len() - own.len()];
                if let Some(b) = before {
                    if *b != others {
                        return wrong(format!(
                            "it read {key} = {} before (plus its own appends since, {})",
                            List(b),
                            List(own)
                        ));
                    }
                }
                // Its own appends sit, in the version order, at or after
                // the end of what it read from others.
                let prefix = index.is_prefix(k, others);
                for op in &txn.ops {
                    if let MicroOp::Append { key: k2, element } = op {
                        let inside = if prefix {
                            index
                                .position
                                .get(element)
                                .is_some_and(|&at| at < others.len())
                        } else {
                            others.contains(element)
                        };
                        if k2 == key && inside {
                            return wrong(format!(
                                "{element}, which it appends itself, is not at the end of the read"
                            ));
                        }
                    }
                }
                *before = Some(others);
                own.clear();
                out.push(Observed {
                    key: k,
                    len: others.len(),
                });
            }
        }
    }
    Ok(out)
}

/// Adds `rt` edges: T1 → T2 when T1 returned before T2 was called. Not
/// all of them: a sweep in time order links each txn to the *frontier*,
/// the txns that returned before it was called and that no other such txn
/// follows; the rest follow by transitivity. Only committed txns that
/// returned are sources (an unknown one may take effect any time after
/// its call).
fn real_time(history: &[AppendTxn], effective: &[bool], edges: &mut Vec<(usize, usize, u8)>) {
    // (time, 0 = call / 1 = return, txn): at equal times calls come first,
    // so the two count as concurrent.
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (t, txn) in history.iter().enumerate() {
        if !effective[t] {
            continue;
        }
        events.push((txn.call, 0, t));
        if let (TxnOutcome::Committed, Some(ret)) = (txn.outcome, txn.ret) {
            events.push((ret, 1, t));
        }
    }
    events.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    for (_, kind, t) in events {
        if kind == 0 {
            edges.extend(frontier.iter().map(|&f| (f, t, RT)));
        } else {
            let call = history[t].call;
            frontier.retain(|&f| history[f].ret.is_some_and(|r| r >= call));
            frontier.push(t);
        }
    }
}

/// A cycle of the first kind that exists: G0, G1c, G-single, G2, then
/// one through real time.
fn find_cycle(history: &[AppendTxn], graph: &Graph, effective: &[bool]) -> Option<Vec<Step>> {
    let all = WW | WR | RW | RT;
    let components = graph.components(all, effective);
    if components.is_empty() {
        return None;
    }
    let mut within = vec![false; effective.len()];
    for &v in components.iter().flatten() {
        within[v] = true;
    }
    let mut budget = SEARCH_BUDGET;
    for allowed in [WW, WW | WR] {
        if let Some(cycle) = shortest_cycle(graph, allowed, &within, None, &mut budget) {
            return Some(cycle);
        }
    }
    if let Some(cycle) = single_anti_dependency(graph, &within, &mut budget) {
        return Some(cycle);
    }
    if let Some(cycle) = shortest_cycle(graph, WW | WR | RW, &within, None, &mut budget) {
        return Some(cycle);
    }
    // Through real time: the graph holds only enough rt edges to connect
    // what real time does; the search follows all of them.
    let call: Vec<u64> = history.iter().map(|t| t.call).collect();
    let ret: Vec<Option<u64>> = history
        .iter()
        .map(|t| t.ret.filter(|_| t.outcome == TxnOutcome::Committed))
        .collect();
    let times = Times {
        call: &call,
        ret: &ret,
        kind: RT,
    };
    if let Some(cycle) = shortest_cycle(graph, all, &within, Some(&times), &mut budget) {
        return Some(cycle);
    }
    // The budget ran out: any cycle will do.
    let mut unlimited = usize::MAX;
    let c = &components[0];
    graph.shortest_path(c[0], c[0], all, &within, None, &mut unlimited)
}

/// A short cycle over `allowed` edges: the shortest through each of a few
/// nodes of the smallest component that has one. The nodes tried first
/// are the targets of the edges that go furthest back in time (a cycle
/// must go back somewhere: a stale read's anti-dependency, typically).
fn shortest_cycle(
    graph: &Graph,
    allowed: u8,
    within: &[bool],
    times: Option<&Times<'_>>,
    budget: &mut usize,
) -> Option<Vec<Step>> {
    let mut component = graph.components(allowed, within).into_iter().next()?;
    let mut inside = vec![false; within.len()];
    for &v in &component {
        inside[v] = true;
    }
    if let Some(t) = times {
        // How far back the furthest edge into each node goes.
        let mut back = vec![0u64; within.len()];
        for &a in &component {
            for &(b, _) in graph.out(a) {
                if inside[b] {
                    let gap = t.call[a].saturating_sub(t.ret[b].unwrap_or(u64::MAX));
                    back[b] = back[b].max(gap);
                }
            }
        }
        component.sort_by_key(|&v| std::cmp::Reverse(back[v]));
    }
    let mut best: Option<Vec<Step>> = None;
    for &start in component.iter().take(16) {
        let Some(cycle) = graph.shortest_path(start, start, allowed, &inside, times, budget) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| cycle.len() < b.len()) {
            best = Some(cycle);
        }
    }
    best
}

/// A cycle with exactly one `rw` edge: an `rw` edge T1 → T2 and a path of
/// `ww`/`wr` edges from T2 back to T1.
fn single_anti_dependency(graph: &Graph, within: &[bool], budget: &mut usize) -> Option<Vec<Step>> {
    let mut best: Option<Vec<Step>> = None;
    for component in graph.components(WW | WR | RW, within) {
        let mut inside = vec![false; within.len()];
        for &v in &component {
            inside[v] = true;
        }
        for &a in &component {
            for &(b, kinds) in graph.out(a) {
                if kinds & RW == 0 || !inside[b] {
                    continue;
                }
                if let Some(path) = graph.shortest_path(b, a, WW | WR, &inside, None, budget) {
                    let mut cycle = vec![(a, RW)];
                    cycle.extend(path);
                    if best.as_ref().is_none_or(|c| cycle.len() < c.len()) {
                        best = Some(cycle);
                    }
                }
                if *budget == 0 || best.as_ref().is_some_and(|c| c.len() == 2) {
                    return best;
                }
            }
        }
        if best.is_some() {
            return best;
        }
    }
    best
}

/// The cycle's kind and one line per edge.
fn report_cycle(index: &Index<'_>, observed: &[Vec<Observed>], cycle: &[Step]) -> AppendAnomaly {
    // Each edge as one kind: the first of ww, wr, rw, rt it has.
    let labels: Vec<u8> = cycle
        .iter()
        .map(|&(_, kinds)| 1 << kinds.trailing_zeros())
        .collect();
    let rw = labels.iter().filter(|&&l| l == RW).count();
    let kind = if labels.contains(&RT) {
        AnomalyKind::RealTime
    } else if rw == 1 {
        AnomalyKind::GSingle
    } else if rw > 1 {
        AnomalyKind::G2
    } else if labels.contains(&WR) {
        AnomalyKind::G1c
    } else {
        AnomalyKind::G0
    };
    let mut text = format!("a cycle of {} txns:", cycle.len());
    for (i, (&(a, _), &label)) in cycle.iter().zip(&labels).enumerate() {
        let b = cycle[(i + 1) % cycle.len()].0;
        text.push_str(&format!(
            "\n  {}",
            explain_edge(index, observed, a, b, label)
        ));
    }
    let txns: Vec<usize> = cycle.iter().map(|s| s.0).collect();
    index.anomaly(kind, text, &txns)
}

/// Why `a → b` is an edge of kind `label`.
fn explain_edge(
    index: &Index<'_>,
    observed: &[Vec<Observed>],
    a: usize,
    b: usize,
    label: u8,
) -> String {
    let keys = &index.keys;
    match label {
        WW => {
            for op in &index.history[a].ops {
                let MicroOp::Append { element, .. } = op else {
                    continue;
                };
                let Some(&pos) = index.position.get(element) else {
                    continue;
                };
                let k = index.appended[element].key;
                if pos + 1 < index.order[k].0.len() && index.writer(k, pos + 1) == b {
                    let next = index.order[k].0[pos + 1];
                    return format!(
                        "T{a} -ww-> T{b}: on {}, T{a}'s {element} comes right before T{b}'s {next}",
                        keys[k]
                    );
                }
            }
        }
        WR => {
            for o in observed[b].iter().filter(|o| o.len > 0) {
                if index.writer(o.key, o.len - 1) == a {
                    let e = index.order[o.key].0[o.len - 1];
                    return format!(
                        "T{a} -wr-> T{b}: T{b} read {} ending in {e}, which T{a} appended",
                        keys[o.key]
                    );
                }
            }
        }
        RW => {
            for o in &observed[a] {
                let order = &index.order[o.key].0;
                if o.len < order.len() && index.writer(o.key, o.len) == b {
                    return format!(
                        "T{a} -rw-> T{b}: T{a} read {} = {} without {}, which T{b} appended next",
                        keys[o.key],
                        List(&order[..o.len]),
                        order[o.len]
                    );
                }
            }
        }
        _ => {
            let (ta, tb) = (&index.history[a], &index.history[b]);
            return format!(
                "T{a} -rt-> T{b}: T{a} returned at {} before T{b} was called at {}",
                ta.ret.unwrap_or(0),
                tb.call
            );
        }
    }
    format!("T{a} -> T{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: &str, list: &[u64]) -> MicroOp {
        MicroOp::Read {
            key: key.into(),
            value: Some(list.to_vec()),
        }
    }

    fn a(key: &str, element: u64) -> MicroOp {
        MicroOp::Append {
            key: key.into(),
            element,
        }
    }

    fn txn(call: u64, ret: u64, outcome: TxnOutcome, ops: Vec<MicroOp>) -> AppendTxn {
        AppendTxn {
            client: call as usize % 7,
            call,
            ret: (outcome != TxnOutcome::Unknown).then_some(ret),
            ops,
            outcome,
        }
    }

    /// A committed txn over [call, ret].
    fn ok(call: u64, ret: u64, ops: Vec<MicroOp>) -> AppendTxn {
        txn(call, ret, TxnOutcome::Committed, ops)
    }

    fn lists(of: &[(&str, &[u64])]) -> BTreeMap<String, Vec<u64>> {
        of.iter()
            .map(|(k, l)| (k.to_string(), l.to_vec()))
            .collect()
    }

    fn anomaly(history: &[AppendTxn], finals: &[(&str, &[u64])]) -> AppendAnomaly {
        check_append(history, &lists(finals)).expect_err("an anomaly")
    }

    #[test]
    fn a_clean_history_passes() {
        let history = [
            ok(0, 10, vec![r("x", &[]), a("x", 1)]),
            // Concurrent with the first, on another key.
            ok(5, 15, vec![r("y", &[]), a("y", 2)]),
            ok(
                20,
                30,
                vec![r("x", &[1]), r("y", &[2]), a("x", 3), r("x", &[1, 3])],
            ),
            // A read-only txn, and one whose compare failed.
            ok(40, 50, vec![r("x", &[1, 3]), r("y", &[2])]),
            txn(41, 49, TxnOutcome::Aborted, vec![r("y", &[]), a("y", 4)]),
        ];
        let summary = check_append(&history, &lists(&[("x", &[1, 3]), ("y", &[2])])).unwrap();
        assert_eq!(
            summary,
            AppendSummary {
                committed: 4,
                unknown: 0,
                aborted: 1,
                keys: 2,
                edges: summary.edges,
            }
        );
        assert!(summary.edges >= 4, "{summary:?}");
    }

    #[test]
    fn duplicate_elements_are_caught() {
        let history = [ok(0, 1, vec![a("x", 1)])];
        let e = anomaly(&history, &[("x", &[1, 1])]);
        assert_eq!(e.kind, AnomalyKind::DuplicateElement, "{e}");
        let twice = [ok(0, 1, vec![a("x", 1)]), ok(2, 3, vec![a("y", 1)])];
        let e = anomaly(&twice, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::DuplicateAppend, "{e}");
    }

    #[test]
    fn reads_must_be_prefixes_of_the_final_list() {
        let history = [
            ok(0, 10, vec![a("x", 1)]),
            ok(0, 10, vec![a("x", 2)]),
            ok(11, 12, vec![r("x", &[2])]),
        ];
        let e = anomaly(&history, &[("x", &[1, 2])]);
        assert_eq!(e.kind, AnomalyKind::IncompatibleOrder, "{e}");
        assert!(e.to_string().contains("T2 read x = [2]"), "{e}");
        // Without a final list, two reads that disagree.
        let history = [
            ok(0, 10, vec![a("x", 1)]),
            ok(0, 10, vec![a("x", 2)]),
            ok(11, 12, vec![r("x", &[2, 1])]),
            ok(11, 12, vec![r("x", &[1])]),
        ];
        let e = anomaly(&history, &[]);
        assert_eq!(e.kind, AnomalyKind::IncompatibleOrder, "{e}");
        assert_eq!(e.txns.len(), 2, "{e}");
    }

    #[test]
    fn an_aborted_append_observed_is_caught() {
        let history = [
            txn(0, 10, TxnOutcome::Aborted, vec![a("x", 1)]),
            ok(11, 12, vec![r("x", &[1])]),
        ];
        let e = anomaly(&history, &[("x", &[])]);
        assert_eq!(e.kind, AnomalyKind::AbortedRead, "{e}");
        assert!(
            e.to_string().contains("appended by T0, which aborted"),
            "{e}"
        );
        // In the final list too.
        let e = anomaly(&history[..1], &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::AbortedRead, "{e}");
    }

    #[test]
    fn garbage_is_caught() {
        let history = [ok(0, 1, vec![a("y", 5)]), ok(2, 3, vec![r("x", &[7])])];
        let e = anomaly(&history, &[("y", &[5])]);
        assert_eq!(e.kind, AnomalyKind::GarbageRead, "{e}");
        assert!(e.explanation.contains("7, which no txn appended"), "{e}");
        // An element of another key.
        let e = anomaly(&history[..1], &[("x", &[5]), ("y", &[5])]);
        assert_eq!(e.kind, AnomalyKind::GarbageRead, "{e}");
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let history = [ok(0, 1, vec![a("x", 1)]), ok(2, 3, vec![a("x", 2)])];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::LostWrite, "{e}");
        assert!(e.explanation.contains("T1 committed"), "{e}");
        // An unknown txn that took effect must have taken effect whole.
        let history = [txn(0, 0, TxnOutcome::Unknown, vec![a("x", 1), a("y", 2)])];
        let e = anomaly(&history, &[("x", &[1]), ("y", &[])]);
        assert_eq!(e.kind, AnomalyKind::LostWrite, "{e}");
    }

    #[test]
    fn internal_inconsistency_is_caught() {
        // A read after its own append must end with it.
        let history = [ok(0, 1, vec![a("x", 1), r("x", &[])])];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::Internal, "{e}");
        // Two reads of one key in one txn must agree.
        let history = [
            ok(0, 10, vec![a("x", 1)]),
            ok(0, 10, vec![r("x", &[]), r("x", &[1])]),
        ];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::Internal, "{e}");
        // A read cannot hold the txn's own later append.
        let history = [ok(0, 1, vec![r("x", &[1]), a("x", 1)])];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::Internal, "{e}");
    }

    #[test]
    fn an_intermediate_read_is_caught() {
        let history = [
            ok(0, 10, vec![a("x", 1), a("x", 2)]),
            ok(0, 10, vec![r("x", &[1])]),
        ];
        let e = anomaly(&history, &[("x", &[1, 2])]);
        assert_eq!(e.kind, AnomalyKind::IntermediateRead, "{e}");
    }

    #[test]
    fn g0_write_cycle() {
        // T0 before T1 on x, T1 before T0 on y.
        let history = [
            ok(0, 10, vec![a("x", 1), a("y", 4)]),
            ok(0, 10, vec![a("x", 2), a("y", 3)]),
        ];
        let e = anomaly(&history, &[("x", &[1, 2]), ("y", &[3, 4])]);
        assert_eq!(e.kind, AnomalyKind::G0, "{e}");
        let shown = e.to_string();
        assert!(
            shown.contains("T0 -ww-> T1: on x, T0's 1 comes right before T1's 2"),
            "{shown}"
        );
        assert!(shown.contains("T1 -ww-> T0: on y"), "{shown}");
        assert!(
            shown.contains("T0 = client 0 [0 .. 10] committed: append x 1, append y 4"),
            "{shown}"
        );
    }

    #[test]
    fn g1c_circular_information_flow() {
        let history = [
            ok(0, 10, vec![a("x", 1), r("y", &[2])]),
            ok(0, 10, vec![a("y", 2), r("x", &[1])]),
        ];
        let e = anomaly(&history, &[("x", &[1]), ("y", &[2])]);
        assert_eq!(e.kind, AnomalyKind::G1c, "{e}");
    }

    #[test]
    fn g_single_lost_update() {
        // Both read x empty and appended: one update is lost as a
        // read-modify-write, though the final list has both.
        let history = [
            ok(0, 10, vec![r("x", &[]), a("x", 1)]),
            ok(0, 10, vec![r("x", &[]), a("x", 2)]),
        ];
        let e = anomaly(&history, &[("x", &[1, 2])]);
        assert_eq!(e.kind, AnomalyKind::GSingle, "{e}");
        assert!(
            e.to_string()
                .contains("T1 -rw-> T0: T1 read x = [] without 1"),
            "{e}"
        );
    }

    #[test]
    fn g2_write_skew() {
        let history = [
            ok(0, 10, vec![r("x", &[]), a("y", 1)]),
            ok(0, 10, vec![r("y", &[]), a("x", 2)]),
        ];
        let e = anomaly(&history, &[("x", &[2]), ("y", &[1])]);
        assert_eq!(e.kind, AnomalyKind::G2, "{e}");
    }

    #[test]
    fn a_stale_read_breaks_real_time_order() {
        let history = [ok(0, 1, vec![a("x", 1)]), ok(2, 3, vec![r("x", &[])])];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::RealTime, "{e}");
        assert!(
            e.to_string()
                .contains("T0 -rt-> T1: T0 returned at 1 before T1 was called at 2"),
            "{e}"
        );
        // Overlapping, the same read is fine.
        let history = [ok(0, 2, vec![a("x", 1)]), ok(2, 3, vec![r("x", &[])])];
        assert!(check_append(&history, &lists(&[("x", &[1])])).is_ok());
    }

    /// The append's outcome is unknown, and it was observed: it
    /// committed, so the read is no garbage and the list no lost write.
    #[test]
    fn an_unknown_txn_that_took_effect() {
        let history = [
            txn(0, 0, TxnOutcome::Unknown, vec![r("x", &[]), a("x", 1)]),
            ok(5, 6, vec![r("x", &[1])]),
            ok(7, 8, vec![r("x", &[1]), a("x", 2)]),
        ];
        let summary = check_append(&history, &lists(&[("x", &[1, 2])])).unwrap();
        assert_eq!((summary.committed, summary.unknown), (2, 1));
        // It still joins the graph: read before its call, then after the
        // read that saw it, it is out of real-time order.
        let history = [
            ok(0, 1, vec![r("x", &[1])]),
            txn(5, 0, TxnOutcome::Unknown, vec![a("x", 1)]),
        ];
        let e = anomaly(&history, &[("x", &[1])]);
        assert_eq!(e.kind, AnomalyKind::RealTime, "{e}");
    }

    #[test]
    fn an_unknown_txn_that_never_took_effect() {
        let history = [
            txn(0, 0, TxnOutcome::Unknown, vec![a("x", 1)]),
            ok(5, 6, vec![r("x", &[]), a("x", 2)]),
            ok(7, 8, vec![r("x", &[2])]),
        ];
        assert!(check_append(&history, &lists(&[("x", &[2])])).is_ok());
    }

    /// A history of a real strictly serializable store: each txn takes
    /// effect at one instant inside its interval (an unknown one at any
    /// instant after its call, or never; an aborted one never).
    fn real_history(
        plan: &[(u8, u8, u64, u64, u64, u8)],
    ) -> (Vec<AppendTxn>, BTreeMap<String, Vec<u64>>) {
        let keys = ["k0", "k1", "k2", "k3"];
        let mut txns = Vec::new();
        for (i, &(k, mask, call, len, at, fate)) in plan.iter().enumerate() {
            let call = call * 100;
            let ret = call + len * 100 + 99;
            let effect = match fate {
                // Unknown: late, or never.
                0 => Some(ret + at * 50 + i as u64).filter(|_| at % 2 == 0),
                1 => None,
                _ => Some(call + (at % (len + 1)) * 100 + i as u64),
            };
            let outcome = match fate {
                0 => TxnOutcome::Unknown,
                1 => TxnOutcome::Aborted,
                _ => TxnOutcome::Committed,
            };
            let touched: Vec<&str> = (0..3)
                .map(|j| keys[(k as usize + j) % 4])
                .take(1 + mask as usize % 3)
                .collect();
            let appends: Vec<bool> = (0..touched.len()).map(|j| mask & (8 << j) != 0).collect();
            txns.push((effect, i, call, ret, outcome, touched, appends));
        }
        let mut order: Vec<usize> = (0..txns.len()).collect();
        order.sort_by_key(|&i| txns[i].0);
        let mut store: BTreeMap<String, Vec<u64>> =
            keys.iter().map(|k| (k.to_string(), Vec::new())).collect();
        let mut history = vec![None; txns.len()];
        for i in order {
            let (effect, id, call, ret, outcome, touched, appends) = &txns[i];
            let mut ops = Vec::new();
            for key in touched {
                let value = (*outcome == TxnOutcome::Committed).then(|| store[*key].clone());
                ops.push(MicroOp::Read {
                    key: key.to_string(),
                    value,
                });
            }
            for (j, key) in touched.iter().enumerate() {
                if appends[j] {
                    let element = (*id as u64) * 10 + j as u64;
                    ops.push(a(key, element));
                    if effect.is_some() {
                        store.get_mut(*key).unwrap().push(element);
                    }
                }
            }
            history[*id] = Some(txn(*call, *ret, *outcome, ops));
        }
        (history.into_iter().map(Option::unwrap).collect(), store)
    }

    proptest::proptest! {
        #[test]
        fn histories_of_a_real_store_pass(
            plan in proptest::collection::vec((0u8..4, 0u8..64, 0u64..60, 0u64..20, 0u64..20, 0u8..8), 1..60)
        ) {
            let (history, finals) = real_history(&plan);
            let checked = check_append(&history, &finals);
            proptest::prop_assert!(checked.is_ok(), "{}", checked.unwrap_err());
        }
    }

    #[test]
    fn twenty_thousand_txns_are_checked_quickly() {
        let plan: Vec<_> = (0..20_000u64)
            .map(|i| {
                (
                    (i % 4) as u8,
                    (i * 7 % 64) as u8,
                    i / 3,
                    i % 5,
                    i % 11,
                    (i % 13) as u8,
                )
            })
            .collect();
        let (history, finals) = real_history(&plan);
        let started = std::time::Instant::now();
        let summary = check_append(&history, &finals).unwrap();
        assert!(summary.edges > 20_000, "{summary:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // Break it: a late read of nothing.
        let mut broken = history.clone();
        broken.push(ok(u64::MAX - 1, u64::MAX, vec![r("k0", &[])]));
        let e = check_append(&broken, &finals).unwrap_err();
        assert_eq!(e.kind, AnomalyKind::RealTime, "{e}");
        assert!(e.txns.len() <= 4, "{e}");
    }
}
