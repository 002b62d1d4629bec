//! The dependency graph of a list-append history and the cycle to report
//! from it: the first kind that exists of G0, G1c, G-single, G2 and one
//! through real time, short, with each edge explained.

use super::index::{Index, Observed};
use super::{AnomalyKind, AppendAnomaly, AppendTxn, List, MicroOp, TxnOutcome};
use crate::graph::{Graph, Step, Times};

/// Edge kinds, as bits.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;

/// How many edges the search for a cycle to report may look at before it
/// settles for what it has.
const SEARCH_BUDGET: usize = 20_000_000;

/// The dependency graph of the txns that took effect: `ww` edges between
/// neighbours in each version order, `wr` from the writer of a read's last
/// element, `rw` to the writer of the element after a read's end, and
/// enough `rt` edges for real-time order.
pub(super) fn graph(index: &Index<'_>, observed: &[Vec<Observed>], effective: &[bool]) -> Graph {
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
    real_time(index.history, effective, &mut edges);
    Graph::new(index.history.len(), edges)
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
pub(super) fn find_cycle(
    history: &[AppendTxn],
    graph: &Graph,
    effective: &[bool],
) -> Option<Vec<Step>> {
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
pub(super) fn report_cycle(
    index: &Index<'_>,
    observed: &[Vec<Observed>],
    cycle: &[Step],
) -> AppendAnomaly {
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
