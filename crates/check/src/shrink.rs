//! Shrinking a history that fails a check to a small one that still does,
//! and showing it.

use std::fmt;

use crate::history::Operation;

/// A key whose operations are not linearizable, and a small sub-history of
/// them that is not either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operations that show it, in the order they were called.
    pub witness: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: these {} operations are not linearizable (times as recorded, ? = no answer):",
            self.key,
            self.witness.len()
        )?;
        for op in &self.witness {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// Drops chunks of `ops` (halves, then quarters, down to single
/// operations) while what is left still fails `holds`: a sub-history in
/// which every operation matters, or nearly. `support` adds back to a
/// candidate what it needs to be readable (the writes of the values its
/// reads saw), so that a witness does not end as a read of a value nobody
/// wrote.
pub(crate) fn shrink(
    mut ops: Vec<Operation>,
    holds: impl Fn(&[Operation]) -> bool,
    support: impl Fn(Vec<Operation>, &[Operation]) -> Vec<Operation>,
) -> Vec<Operation> {
    let mut chunk = ops.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < ops.len() && ops.len() > 1 {
            let end = (start + chunk).min(ops.len());
            let rest: Vec<Operation> = ops[..start].iter().chain(&ops[end..]).cloned().collect();
            let rest = support(rest, &ops);
            if !rest.is_empty() && rest.len() < ops.len() && !holds(&rest) {
                ops = rest;
            } else {
                start = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    ops.sort_by_key(|op| op.call);
    ops
}

#[cfg(test)]
mod tests {
    use crate::{linearizable, Input, Operation, Output};

    #[test]
    fn the_witness_is_small_and_readable() {
        let mut history = Vec::new();
        // Plenty of harmless traffic around one stale read.
        for i in 0..40u64 {
            history.push(Operation {
                client: 0,
                key: "k".into(),
                input: Input::Put(format!("v{i}")),
                output: Output::Done,
                call: 10 * i,
                ret: Some(10 * i + 1),
            });
        }
        history.push(Operation {
            client: 1,
            key: "k".into(),
            input: Input::Get,
            output: Output::Value(Some("v3".into())),
            call: 500,
            ret: Some(501),
        });
        let violation = linearizable(&history).unwrap_err();
        assert!(violation.witness.len() <= 3, "{violation}");
        let shown = violation.to_string();
        assert!(shown.contains("get => v3"), "{shown}");
        assert!(shown.contains("client 1 [500 .. 501]"), "{shown}");
    }
}
