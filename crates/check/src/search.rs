//! The linearizability search: Wing and Gong's, with Lowe's memoization,
//! run on each key's operations alone.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Input, Operation, Output};
use crate::shrink::{shrink, Violation};

/// Checks that `history` is linearizable for a store of independent
/// registers, one per key. The first key whose operations are not comes
/// back with a small sub-history that shows it.
pub fn linearizable(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if !register_linearizable(&ops) {
            return Err(Violation {
                key: key.to_string(),
                witness: shrink(ops, register_linearizable, with_writers),
            });
        }
    }
    Ok(())
}

/// `candidate` with the operations of `all` that wrote a value it saw
/// (read, or compared against).
fn with_writers(mut candidate: Vec<Operation>, all: &[Operation]) -> Vec<Operation> {
    let seen: HashSet<String> = candidate
        .iter()
        .flat_map(|op| {
            let read = match &op.output {
                Output::Value(Some(v)) => Some(v.clone()),
                _ => None,
            };
            let compared = match &op.input {
                Input::Cas {
                    expect: Some(v), ..
                } if op.output == Output::Swapped(true) => Some(v.clone()),
                _ => None,
            };
            read.into_iter().chain(compared)
        })
        .collect();
    let writes = |op: &Operation| match &op.input {
        Input::Put(v) => seen.contains(v),
        Input::Cas { new: Some(v), .. } => seen.contains(v),
        _ => false,
    };
    let missing: Vec<Operation> = all
        .iter()
        .filter(|op| writes(op) && !candidate.contains(op))
        .cloned()
        .collect();
    candidate.extend(missing);
    candidate
}

/// The register's value after `op` if `op`'s output is what a register
/// holding `value` gives; `None` if it cannot be.
fn step(value: &Option<String>, op: &Operation) -> Option<Option<String>> {
    let unknown = op.is_unknown();
    match (&op.input, &op.output) {
        (Input::Get, _) if unknown => Some(value.clone()),
        (Input::Get, Output::Value(read)) => (read == value).then(|| value.clone()),
        (Input::Put(v), Output::Done) => Some(Some(v.clone())),
        (Input::Put(v), _) if unknown => Some(Some(v.clone())),
        (Input::Delete, Output::Done) => Some(None),
        (Input::Delete, _) if unknown => Some(None),
        (Input::Cas { expect, new }, Output::Swapped(true)) => {
            (expect == value).then(|| new.clone())
        }
        (Input::Cas { expect, .. }, Output::Swapped(false)) => {
            (expect != value).then(|| value.clone())
        }
        (Input::Cas { expect, new }, _) if unknown => Some(if expect == value {
            new.clone()
        } else {
            value.clone()
        }),
        // An answer of the wrong kind: no register gives it.
        _ => None,
    }
}

/// A call or return, in time order, linked to its neighbours so that an
/// operation's two events can be taken out and put back in O(1).
struct Events {
    /// (is a call, operation) per event.
    kinds: Vec<(bool, usize)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's (call, return) events.
    of_op: Vec<(usize, usize)>,
}

/// The list's head (before the first event) and end (after the last).
const HEAD: usize = 0;

impl Events {
    fn new(ops: &[Operation]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            // At equal times a call sorts before a return: the two
            // operations count as concurrent.
            order.push((op.call, false, i));
            order.push((op.end(), true, i));
        }
        order.sort();
        let n = order.len();
        // Slot 0 is the head, slots 1..=n the events, slot n + 1 the end.
        let mut kinds = vec![(false, usize::MAX); n + 2];
        let mut of_op = vec![(0, 0); ops.len()];
        for (slot, &(_, is_return, op)) in order.iter().enumerate() {
            kinds[slot + 1] = (!is_return, op);
            if is_return {
                of_op[op].1 = slot + 1;
            } else {
                of_op[op].0 = slot + 1;
            }
        }
        Events {
            kinds,
            next: (1..=n + 2).collect(),
            prev: std::iter::once(0).chain(0..=n).collect(),
            of_op,
        }
    }

    fn end(&self) -> usize {
        self.kinds.len() - 1
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    /// Takes operation `op`'s call and return out of the list.
    fn lift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts them back (in the reverse order of [`lift`](Self::lift)).
    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        self.relink(ret);
        self.relink(call);
    }
}

/// Whether one register's operations are linearizable.
pub(crate) fn register_linearizable(ops: &[Operation]) -> bool {
    let mut events = Events::new(ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // The operations linearized so far, each with the value before it.
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut value: Option<String> = None;
    let end = events.end();
    let mut e = events.next[HEAD];
    while e != end {
        let (is_call, op) = events.kinds[e];
        if is_call {
            if let Some(after) = step(&value, &ops[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), after.clone())) {
                    stack.push((op, std::mem::replace(&mut value, after)));
                    events.lift(op);
                    e = events.next[HEAD];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            e = events.next[e];
        } else {
            // An operation returned before it could be placed: undo the
            // last placement and try the next candidate after it.
            let Some((last, before)) = stack.pop() else {
                return false;
            };
            linearized[last / 64] &= !(1 << (last % 64));
            value = before;
            events.unlift(last);
            e = events.next[events.of_op[last].0];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operation on key "x".
    fn op(client: usize, call: u64, ret: Option<u64>, input: Input, output: Output) -> Operation {
        Operation {
            client,
            key: "x".into(),
            input,
            output,
            call,
            ret,
        }
    }

    fn put(client: usize, call: u64, ret: u64, v: &str) -> Operation {
        op(client, call, Some(ret), Input::Put(v.into()), Output::Done)
    }

    fn get(client: usize, call: u64, ret: u64, v: Option<&str>) -> Operation {
        op(
            client,
            call,
            Some(ret),
            Input::Get,
            Output::Value(v.map(String::from)),
        )
    }

    fn cas(
        client: usize,
        call: u64,
        ret: u64,
        from: Option<&str>,
        to: &str,
        ok: bool,
    ) -> Operation {
        let input = Input::Cas {
            expect: from.map(String::from),
            new: Some(to.into()),
        };
        op(client, call, Some(ret), input, Output::Swapped(ok))
    }

    #[test]
    fn sequential_and_overlapping_histories_that_are_linearizable() {
        let sequential = [
            put(0, 0, 1, "a"),
            get(0, 2, 3, Some("a")),
            cas(0, 4, 5, Some("a"), "b", true),
            get(0, 6, 7, Some("b")),
        ];
        assert!(linearizable(&sequential).is_ok());
        // A read overlapping a write may see either value.
        for seen in [None, Some("a")] {
            let overlapping = [put(0, 0, 10, "a"), get(1, 5, 6, seen)];
            assert!(linearizable(&overlapping).is_ok(), "{seen:?}");
        }
        // Two overlapping writes: a later read picks the order.
        let writes = [
            put(0, 0, 10, "a"),
            put(1, 0, 10, "b"),
            get(2, 11, 12, Some("a")),
            get(2, 13, 14, Some("a")),
        ];
        assert!(linearizable(&writes).is_ok());
    }

    #[test]
    fn a_stale_read_is_caught() {
        let history = [
            put(0, 0, 1, "a"),
            put(0, 2, 3, "b"),
            get(1, 4, 5, Some("a")),
        ];
        let violation = linearizable(&history).unwrap_err();
        assert_eq!(violation.key, "x");
        // The stale read, with the writes that show it stale.
        assert_eq!(violation.witness, history, "{violation}");
    }

    #[test]
    fn reads_must_agree_on_one_order_of_concurrent_writes() {
        // Both writes overlap both reads' past, but the reads see the two
        // orders one after the other: no single order explains both.
        let history = [
            put(0, 0, 10, "a"),
            put(1, 0, 10, "b"),
            get(2, 11, 12, Some("a")),
            get(2, 13, 14, Some("b")),
            get(2, 15, 16, Some("a")),
        ];
        assert!(linearizable(&history).is_err());
    }

    #[test]
    fn two_swaps_from_the_same_value_cannot_both_win() {
        let history = [
            put(0, 0, 1, "a"),
            cas(1, 2, 10, Some("a"), "b", true),
            cas(2, 2, 10, Some("a"), "c", true),
        ];
        assert!(linearizable(&history).is_err());
        let one_lost = [
            put(0, 0, 1, "a"),
            cas(1, 2, 10, Some("a"), "b", true),
            cas(2, 2, 10, Some("a"), "c", false),
            get(0, 11, 12, Some("b")),
        ];
        assert!(linearizable(&one_lost).is_ok());
    }

    /// A write whose client never heard back was read, long after it was
    /// sent: only a checker that lets an unknown outcome take effect (at
    /// any time after its call) accepts this. Treating it as failed would
    /// call the read impossible; as done when it was called, the read of
    /// the old value before it would be.
    #[test]
    fn an_unknown_outcome_may_take_effect_late_or_never() {
        let history = [
            put(0, 0, 1, "a"),
            op(1, 2, None, Input::Put("b".into()), Output::Unknown),
            get(2, 3, 4, Some("a")),
            get(2, 100, 101, Some("b")),
        ];
        assert!(linearizable(&history).is_ok());
        let never = [
            put(0, 0, 1, "a"),
            op(1, 2, None, Input::Put("b".into()), Output::Unknown),
            get(2, 100, 101, Some("a")),
        ];
        assert!(linearizable(&never).is_ok());
        // But it cannot take effect before it was sent.
        let too_early = [
            put(0, 0, 1, "a"),
            get(2, 2, 3, Some("b")),
            op(1, 5, None, Input::Put("b".into()), Output::Unknown),
        ];
        assert!(linearizable(&too_early).is_err());
    }

    #[test]
    fn deletes_and_absent_keys() {
        let history = [
            get(0, 0, 1, None),
            put(0, 2, 3, "a"),
            op(0, 4, Some(5), Input::Delete, Output::Done),
            get(1, 6, 7, None),
            cas(1, 8, 9, None, "b", true),
            get(1, 10, 11, Some("b")),
        ];
        assert!(linearizable(&history).is_ok());
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut y = put(0, 0, 1, "a");
        y.key = "y".into();
        let history = [put(0, 0, 1, "a"), y, get(1, 2, 3, None)];
        // x was written before the read of x began: None is stale.
        let violation = linearizable(&history).unwrap_err();
        assert_eq!(violation.key, "x");
    }

    proptest::proptest! {
        /// Histories of a real register, each operation taking effect at
        /// a random instant inside its interval (or, for those whose
        /// answer was lost, at any instant after its call, or never): all
        /// linearizable.
        #[test]
        fn histories_of_a_real_register_pass(
            plan in proptest::collection::vec((0u8..4, 0u8..3, 0u64..50, 1u64..20, 0u64..20, 0u8..10), 1..24)
        ) {
            let mut ops = Vec::new();
            for (i, &(kind, v, call, len, at, lose)) in plan.iter().enumerate() {
                let v = format!("v{v}");
                let input = match kind {
                    0 => Input::Get,
                    1 => Input::Put(v),
                    2 => Input::Delete,
                    _ => Input::Cas { expect: Some("v0".into()), new: Some(v) },
                };
                // The instant it takes effect, inside [call, call + len].
                let effect = call * 100 + (at % (len + 1)) * 100 + i as u64;
                ops.push((effect, i, input, call * 100, (call + len) * 100 + 99, lose == 0));
            }
            ops.sort_by_key(|o| o.0);
            let mut value: Option<String> = None;
            let mut history = Vec::new();
            for (effect, client, input, call, ret, lost) in ops {
                let output = match &input {
                    Input::Get => Output::Value(value.clone()),
                    Input::Put(v) => { value = Some(v.clone()); Output::Done }
                    Input::Delete => { value = None; Output::Done }
                    Input::Cas { expect, new } => {
                        let swapped = *expect == value;
                        if swapped { value = new.clone(); }
                        Output::Swapped(swapped)
                    }
                };
                let _ = effect;
                let (output, ret) = if lost { (Output::Unknown, None) } else { (output, Some(ret)) };
                history.push(op(client, call, ret, input, output));
            }
            proptest::prop_assert!(linearizable(&history).is_ok(), "{:?}", linearizable(&history));
        }
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 12 clients, each writing its own value then reading, all
        // overlapping: many orders, memoization keeps it small.
        let mut history = Vec::new();
        for c in 0..12u64 {
            history.push(put(c as usize, 0, 100, &c.to_string()));
        }
        history.push(get(99, 101, 102, Some("7")));
        let started = std::time::Instant::now();
        assert!(linearizable(&history).is_ok());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
