//! The history indexed for the list-append check, and the checks that
//! need no dependency graph: the lists' elements, reads against version
//! orders and against their own txn, lost and intermediate writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{AnomalyKind, AppendAnomaly, AppendTxn, List, MicroOp, TxnOutcome};

/// An append, as the element's index keeps it.
#[derive(Clone, Copy)]
pub(super) struct Appended {
    /// The txn.
    pub(super) txn: usize,
    /// The key.
    pub(super) key: usize,
    /// Whether the txn appends nothing after it to the same key.
    pub(super) last_on_key: bool,
}

/// A committed txn's read, reduced to what others wrote: the list read
/// without the txn's own appends at its end, which (once the version
/// orders are checked) is the first `len` elements of the key's version
/// order.
#[derive(Clone, Copy)]
pub(super) struct Observed {
    /// The key.
    pub(super) key: usize,
    /// How many elements of its version order.
    pub(super) len: usize,
}

/// A committed txn's read, with its list.
#[derive(Clone, Copy)]
struct Read<'a> {
    txn: usize,
    key: usize,
    list: &'a [u64],
}

/// The history, indexed.
pub(super) struct Index<'a> {
    /// The history.
    pub(super) history: &'a [AppendTxn],
    /// The keys, numbered.
    pub(super) keys: Vec<&'a str>,
    /// Each key's number.
    pub(super) key_of: HashMap<&'a str, usize>,
    /// Who appended each element, where.
    pub(super) appended: HashMap<u64, Appended>,
    /// Each key's version order, and whether it is the final list (or
    /// else the longest list read).
    pub(super) order: Vec<(Vec<u64>, bool)>,
    /// Each element's position in its key's version order.
    pub(super) position: HashMap<u64, usize>,
    /// Every committed read.
    reads: Vec<Read<'a>>,
}

impl<'a> Index<'a> {
    /// An anomaly of `kind` involving `txns`.
    pub(super) fn anomaly(
        &self,
        kind: AnomalyKind,
        explanation: String,
        txns: &[usize],
    ) -> AppendAnomaly {
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
    pub(super) fn is_prefix(&self, key: usize, list: &[u64]) -> bool {
        let order = &self.order[key].0;
        list.len() <= order.len() && order[..list.len()] == *list
    }

    /// The txn that appended the element at `pos` of `key`'s version
    /// order.
    pub(super) fn writer(&self, key: usize, pos: usize) -> usize {
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

    /// Indexes `history`: its keys, who appended each element (refusing
    /// an element appended twice), its committed reads and each key's
    /// version order — the final list, or else the longest read — whose
    /// elements it checks.
    pub(super) fn build(
        history: &'a [AppendTxn],
        final_lists: &'a BTreeMap<String, Vec<u64>>,
    ) -> Result<Index<'a>, AppendAnomaly> {
        let mut index = Index {
            history,
            keys: Vec::new(),
            key_of: HashMap::new(),
            appended: HashMap::new(),
            order: Vec::new(),
            position: HashMap::new(),
            reads: Vec::new(),
        };
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
            if txn.outcome != TxnOutcome::Committed {
                continue;
            }
            for op in &txn.ops {
                if let MicroOp::Read {
                    key,
                    value: Some(list),
                } = op
                {
                    let key = index.key_of[key.as_str()];
                    index.reads.push(Read { txn: t, key, list });
                }
            }
        }
        for key in 0..index.keys.len() {
            let order = match final_lists.get(index.keys[key]) {
                Some(list) => (list.clone(), true),
                None => {
                    let longest = index
                        .reads
                        .iter()
                        .filter(|r| r.key == key)
                        .map(|r| r.list)
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
        Ok(index)
    }

    /// Checks the committed reads: the elements of any that is not a
    /// prefix of its key's version order, each txn's reads against its own
    /// appends, then that every read is such a prefix. Returns each txn's
    /// reads as prefixes of the version orders.
    pub(super) fn check_reads(&self) -> Result<Vec<Vec<Observed>>, AppendAnomaly> {
        let mut incompatible = None;
        for r in &self.reads {
            if !self.is_prefix(r.key, r.list) {
                let what = format!("T{}'s read of {}", r.txn, self.keys[r.key]);
                self.elements(r.key, r.list, &what, Some(r.txn))?;
                incompatible.get_or_insert(*r);
            }
        }
        let mut observed: Vec<Vec<Observed>> = vec![Vec::new(); self.history.len()];
        let mut done = vec![false; self.history.len()];
        for r in &self.reads {
            if !std::mem::replace(&mut done[r.txn], true) {
                observed[r.txn] = self.internal(r.txn)?;
            }
        }
        match incompatible {
            Some(r) => Err(self.incompatible(r)),
            None => Ok(observed),
        }
    }

    /// The report of a read that is not a prefix of its key's version
    /// order.
    fn incompatible(&self, r: Read<'_>) -> AppendAnomaly {
        let (t, list) = (r.txn, r.list);
        let (order, is_final) = &self.order[r.key];
        let name = self.keys[r.key];
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
                self.reads
                    .iter()
                    .find(|o| o.key == r.key && o.list == order.as_slice())
                    .map(|o| o.txn),
            );
        }
        self.anomaly(AnomalyKind::IncompatibleOrder, explanation, &involved)
    }

    /// Which txns took effect: the committed ones, and those of unknown
    /// outcome with an append in a version order.
    pub(super) fn effective(&self) -> Vec<bool> {
        self.history
            .iter()
            .map(|txn| match txn.outcome {
                TxnOutcome::Committed => true,
                TxnOutcome::Aborted => false,
                TxnOutcome::Unknown => txn.ops.iter().any(|op| {
                    matches!(op, MicroOp::Append { element, .. } if self.position.contains_key(element))
                }),
            })
            .collect()
    }

    /// Checks that every append of a txn that took effect is in its key's
    /// final list (keys with one).
    pub(super) fn lost_writes(&self, effective: &[bool]) -> Result<(), AppendAnomaly> {
        for (t, txn) in self.history.iter().enumerate() {
            if !effective[t] {
                continue;
            }
            for op in &txn.ops {
                let MicroOp::Append { key, element } = op else {
                    continue;
                };
                let (order, is_final) = &self.order[self.key_of[key.as_str()]];
                if !*is_final || self.position.contains_key(element) {
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
                                if self.position.contains_key(element) =>
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
                return Err(self.anomaly(
                    AnomalyKind::LostWrite,
                    format!(
                        "T{t} {why}, yet its append of {element} is missing from {key}'s final list {}",
                        List(order)
                    ),
                    &[t],
                ));
            }
        }
        Ok(())
    }

    /// Checks that no read ends in an append its txn followed with
    /// another to the same key.
    pub(super) fn intermediate_reads(
        &self,
        observed: &[Vec<Observed>],
    ) -> Result<(), AppendAnomaly> {
        for (t, seen) in observed.iter().enumerate() {
            for o in seen.iter().filter(|o| o.len > 0) {
                let e = self.order[o.key].0[o.len - 1];
                let w = self.appended[&e];
                if w.txn != t && !w.last_on_key {
                    return Err(self.anomaly(
                        AnomalyKind::IntermediateRead,
                        format!(
                            "T{t} read {} ending in {e}, but T{} appended more to {} after {e}",
                            self.keys[o.key], w.txn, self.keys[o.key]
                        ),
                        &[t, w.txn],
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks committed txn `t`'s reads against its own appends: a read of a
    /// key after the txn appended to it ends with those appends, and equals
    /// the key's previous read plus them; no read holds an element the txn
    /// itself appends to that key, other than at that end. Returns its reads
    /// as prefixes of the version orders (which the caller has checked they
    /// are).
    fn internal(&self, t: usize) -> Result<Vec<Observed>, AppendAnomaly> {
        let txn = &self.history[t];
        // Per key: the last read (without own appends), own appends since.
        let mut state: HashMap<usize, (Option<&[u64]>, Vec<u64>)> = HashMap::new();
        let mut out = Vec::new();
        for op in &txn.ops {
            match op {
                MicroOp::Append { key, element } => {
                    let k = self.key_of[key.as_str()];
                    state.entry(k).or_default().1.push(*element);
                }
                MicroOp::Read { value: None, .. } => {}
                MicroOp::Read {
                    key,
                    value: Some(list),
                } => {
                    let k = self.key_of[key.as_str()];
                    let (before, own) = state.entry(k).or_default();
                    let wrong = |why: String| {
                        Err(self.anomaly(
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
                    let prefix = self.is_prefix(k, others);
                    for op in &txn.ops {
                        if let MicroOp::Append { key: k2, element } = op {
                            let inside = if prefix {
                                self.position
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
}
