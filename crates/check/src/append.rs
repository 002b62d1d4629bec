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

use std::collections::BTreeMap;
use std::fmt;

use index::Index;

mod cycles;
mod index;

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

/// Checks a list-append history for strict serializability. `final_lists`:
/// each key's list read at the end (linearizably, after healing). A key
/// missing from it was not read at the end: its version order is then the
/// longest list a committed txn read, and its appends are not checked for
/// loss. Reads of txns that did not commit are not used.
pub fn check_append(
    history: &[AppendTxn],
    final_lists: &BTreeMap<String, Vec<u64>>,
) -> Result<AppendSummary, AppendAnomaly> {
    let index = Index::build(history, final_lists)?;
    let observed = index.check_reads()?;
    let effective = index.effective();
    index.lost_writes(&effective)?;
    index.intermediate_reads(&observed)?;
    let graph = cycles::graph(&index, &observed, &effective);
    let count = |outcome| history.iter().filter(|t| t.outcome == outcome).count();
    let summary = AppendSummary {
        committed: count(TxnOutcome::Committed),
        unknown: count(TxnOutcome::Unknown),
        aborted: count(TxnOutcome::Aborted),
        keys: index.keys.len(),
        edges: graph.edges(),
    };
    match cycles::find_cycle(history, &graph, &effective) {
        None => Ok(summary),
        Some(cycle) => Err(cycles::report_cycle(&index, &observed, &cycle)),
    }
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
