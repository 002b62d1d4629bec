//! The safety properties of Raft, checked as the simulation runs. Each check
//! is incremental, so that it can run after every step of a long simulation.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use keel_raft::{Entry, Index, NodeId, StorageError, Term};

/// Which property broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// At most one leader per term.
    ElectionSafety,
    /// Same index and term ⇒ same entry and identical prefix.
    LogMatching,
    /// A committed entry is in the log of every leader of a later term.
    LeaderCompleteness,
    /// No two nodes apply different entries at one index; each node applies
    /// every index once, in order; a snapshot installed at an index holds
    /// the state every node that applied that index has.
    StateMachineSafety,
    /// Commit and applied indexes never go backwards on a node.
    Monotonicity,
    /// A read returned a state older than one a completed operation had
    /// already produced before the read started.
    Linearizability,
    /// A proposal answered with a response got its own command's.
    ClientResponse,
    /// Once faults stop, a leader is elected and every proposal commits in time.
    Liveness,
    /// The node itself or its storage reported something impossible.
    NodeError,
}

/// A broken property, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property.
    pub property: Property,
    /// What happened, in words.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} violated: {}", self.property, self.detail)
    }
}

fn violation(property: Property, detail: String) -> Result<(), Violation> {
    Err(Violation { property, detail })
}

/// What the checker remembers about an entry it has seen in some log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SeenEntry {
    data: Bytes,
    prev_term: Term,
}

/// An entry some node reported committed.
#[derive(Clone, Debug)]
struct CommittedEntry {
    term: Term,
    data: Bytes,
    /// The lowest term of a node seen holding it as committed: the entry was
    /// committed by a leader of this term or earlier.
    committed_by_term: Term,
}

/// An entry some node applied, and the state it led to.
#[derive(Clone, Debug)]
struct AppliedEntry {
    term: Term,
    data: Bytes,
    digest: u64,
}

/// The global record the properties are checked against.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// Every (index, term) any log has held: the entry and the term before it.
    /// Log Matching holds exactly when this map is consistent, by induction
    /// on the index.
    seen: BTreeMap<(Index, Term), SeenEntry>,
    committed: BTreeMap<Index, CommittedEntry>,
    /// Every index any node applied: the entry, and the state machine digest
    /// right after it.
    applied: BTreeMap<Index, AppliedEntry>,
    /// Per node: the highest commit index seen in memory during the current
    /// life, the highest persisted one, and the highest applied one.
    commit_in_life: BTreeMap<NodeId, Index>,
    commit_durable: BTreeMap<NodeId, Index>,
    applied_by_node: BTreeMap<NodeId, Index>,
    /// Leaders already checked for completeness, by (node, term).
    checked_leaders: BTreeMap<(NodeId, Term), ()>,
}

impl Checker {
    /// Election Safety: `node` is leader in `term`.
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => violation(
                Property::ElectionSafety,
                format!("nodes {other} and {node} are both leader in term {term}"),
            ),
            _ => Ok(()),
        }
    }

    /// Whether `(node, term)` still needs a Leader Completeness check.
    pub fn needs_completeness_check(&mut self, node: NodeId, term: Term) -> bool {
        self.checked_leaders.insert((node, term), ()).is_none()
    }

    /// Leader Completeness: a new leader of `term` must hold every entry
    /// committed by a leader of an earlier term. `term_at` reads its log; an
    /// index it reports compacted is covered by the leader's snapshot, which
    /// holds only committed entries (checked when snapshots are installed).
    pub fn check_leader_log(
        &self,
        node: NodeId,
        term: Term,
        term_at: impl Fn(Index) -> Result<Term, StorageError>,
    ) -> Result<(), Violation> {
        // By Log Matching it is enough to find the highest such entry.
        let Some((index, entry)) = self
            .committed
            .iter()
            .rev()
            .find(|(_, c)| c.committed_by_term < term)
        else {
            return Ok(());
        };
        match term_at(*index) {
            Ok(t) if t == entry.term => Ok(()),
            Err(StorageError::Compacted(_)) => Ok(()),
            found => violation(
                Property::LeaderCompleteness,
                format!(
                    "node {node} became leader of term {term} without committed entry {index} \
                     (term {}, committed by term {}); its log has {found:?} there",
                    entry.term, entry.committed_by_term
                ),
            ),
        }
    }

    /// Log Matching: `node`'s log holds `entries`, the first of which follows
    /// an entry of term `prev_term`.
    pub fn observe_log(
        &mut self,
        node: NodeId,
        prev_term: Term,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let mut prev_term = prev_term;
        for e in entries {
            let seen = SeenEntry {
                data: e.data.clone(),
                prev_term,
            };
            match self.seen.get(&(e.index, e.term)) {
                Some(existing) if *existing != seen => {
                    return violation(
                        Property::LogMatching,
                        format!(
                            "node {node} holds entry {}/{} as {:?} after term {}, another log as {:?} after term {}",
                            e.index, e.term, seen.data, seen.prev_term, existing.data, existing.prev_term
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    self.seen.insert((e.index, e.term), seen);
                }
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// `node`, in `term`, holds `entries` as committed.
    pub fn observe_committed(
        &mut self,
        node: NodeId,
        term: Term,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        for e in entries {
            match self.committed.get_mut(&e.index) {
                Some(c) if c.term != e.term || c.data != e.data => {
                    return violation(
                        Property::StateMachineSafety,
                        format!(
                            "node {node} committed {}/{} but {}/{} was committed before",
                            e.index, e.term, e.index, c.term
                        ),
                    );
                }
                Some(c) => c.committed_by_term = c.committed_by_term.min(term),
                None => {
                    self.committed.insert(
                        e.index,
                        CommittedEntry {
                            term: e.term,
                            data: e.data.clone(),
                            committed_by_term: term,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety: `node` applies `entry` next, and its state
    /// machine's digest becomes `digest`.
    pub fn observe_apply(
        &mut self,
        node: NodeId,
        entry: &Entry,
        digest: u64,
    ) -> Result<(), Violation> {
        let last = self.applied_by_node.entry(node).or_default();
        if entry.index != *last + 1 {
            return violation(
                Property::StateMachineSafety,
                format!("node {node} applied {} right after {}", entry.index, last),
            );
        }
        *last = entry.index;
        match self.applied.get(&entry.index) {
            Some(a) if a.term != entry.term || a.data != entry.data => violation(
                Property::StateMachineSafety,
                format!(
                    "node {node} applied {}/{} where another node applied {}/{}",
                    entry.index, entry.term, entry.index, a.term
                ),
            ),
            Some(a) if a.digest != digest => violation(
                Property::StateMachineSafety,
                format!(
                    "node {node} reached state {digest:#x} at {}, another node {:#x}",
                    entry.index, a.digest
                ),
            ),
            Some(_) => Ok(()),
            None => {
                let applied = AppliedEntry {
                    term: entry.term,
                    data: entry.data.clone(),
                    digest,
                };
                self.applied.insert(entry.index, applied);
                Ok(())
            }
        }
    }

    /// State Machine Safety: `node` installed a snapshot of the state at
    /// `index` with `digest`. Some node must have applied `index` and reached
    /// that very state; the node's applied index jumps to `index`.
    pub fn observe_snapshot(
        &mut self,
        node: NodeId,
        index: Index,
        digest: u64,
    ) -> Result<(), Violation> {
        let last = self.applied_by_node.entry(node).or_default();
        if index <= *last {
            return violation(
                Property::StateMachineSafety,
                format!("node {node} installed a snapshot at {index} after applying {last}"),
            );
        }
        *last = index;
        match self.applied.get(&index) {
            Some(a) if a.digest == digest => Ok(()),
            found => violation(
                Property::StateMachineSafety,
                format!(
                    "node {node} installed a snapshot at {index} with state {digest:#x}; \
                     nodes that applied {index} reached {:?}",
                    found.map(|a| a.digest)
                ),
            ),
        }
    }

    /// The applied index a node resumes from after a restart.
    pub fn applied_index(&self, node: NodeId) -> Index {
        self.applied_by_node.get(&node).copied().unwrap_or(0)
    }

    /// Monotonicity: `node`'s in-memory commit index is `commit`.
    pub fn observe_commit(&mut self, node: NodeId, commit: Index) -> Result<(), Violation> {
        let last = self.commit_in_life.entry(node).or_default();
        if commit < *last {
            return violation(
                Property::Monotonicity,
                format!("node {node} commit index went from {last} back to {commit}"),
            );
        }
        *last = commit;
        let applied = self.applied_index(node);
        if applied > commit {
            return violation(
                Property::Monotonicity,
                format!("node {node} applied {applied} beyond its commit index {commit}"),
            );
        }
        Ok(())
    }

    /// Monotonicity across restarts: `node` persists commit index `commit`.
    pub fn observe_durable_commit(&mut self, node: NodeId, commit: Index) -> Result<(), Violation> {
        let last = self.commit_durable.entry(node).or_default();
        if commit < *last {
            return violation(
                Property::Monotonicity,
                format!("node {node} persisted commit index {commit} after {last}"),
            );
        }
        *last = commit;
        Ok(())
    }

    /// `node` restarted: its in-memory state starts again from disk.
    pub fn observe_restart(&mut self, node: NodeId) {
        let durable = self.commit_durable.get(&node).copied().unwrap_or(0);
        self.commit_in_life.insert(node, durable);
    }

    /// `node` restarted with its state machine restored from the snapshot
    /// its disk names (`(index, digest)`), or empty: its applied index goes
    /// back there (the state machine is rebuilt from the snapshot and the
    /// log, as keel-node rebuilds an in-memory one), and the snapshot must
    /// hold the state nodes reached at its index.
    pub fn observe_recovery(
        &mut self,
        node: NodeId,
        snapshot: Option<(Index, u64)>,
    ) -> Result<(), Violation> {
        let Some((index, digest)) = snapshot else {
            self.applied_by_node.insert(node, 0);
            return Ok(());
        };
        self.applied_by_node.insert(node, index.saturating_sub(1));
        self.observe_snapshot(node, index, digest)
    }

    /// The highest index any node has applied.
    pub fn max_applied(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }

    /// The payload applied at `index`, if any node applied it.
    pub fn applied_entry(&self, index: Index) -> Option<&Bytes> {
        self.applied.get(&index).map(|a| &a.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(term: Term, index: Index, data: &'static [u8]) -> Entry {
        Entry::normal(term, index, Bytes::from_static(data))
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut c = Checker::default();
        c.observe_leader(1, 3).unwrap();
        c.observe_leader(1, 3).unwrap();
        c.observe_leader(2, 4).unwrap();
        assert_eq!(
            c.observe_leader(2, 3).unwrap_err().property,
            Property::ElectionSafety
        );
    }

    #[test]
    fn diverging_logs_are_caught() {
        let mut c = Checker::default();
        c.observe_log(1, 0, &[ent(1, 1, b"a"), ent(1, 2, b"b")])
            .unwrap();
        c.observe_log(2, 0, &[ent(1, 1, b"a")]).unwrap();
        let err = c.observe_log(2, 1, &[ent(1, 2, b"x")]).unwrap_err();
        assert_eq!(err.property, Property::LogMatching);
        // Same entry, different history before it.
        let err = c.observe_log(3, 2, &[ent(1, 2, b"b")]).unwrap_err();
        assert_eq!(err.property, Property::LogMatching);
    }

    #[test]
    fn applying_different_entries_is_caught() {
        let mut c = Checker::default();
        c.observe_apply(1, &ent(1, 1, b"a"), 11).unwrap();
        assert!(c.observe_apply(2, &ent(2, 1, b"b"), 11).is_err());
        assert!(
            c.observe_apply(3, &ent(1, 1, b"a"), 12).is_err(),
            "another state"
        );
        assert!(c.observe_apply(1, &ent(1, 3, b"c"), 13).is_err(), "a gap");
    }

    #[test]
    fn snapshots_of_another_state_are_caught() {
        let mut c = Checker::default();
        c.observe_apply(1, &ent(1, 1, b"a"), 11).unwrap();
        c.observe_apply(1, &ent(1, 2, b"b"), 12).unwrap();
        c.observe_snapshot(2, 2, 12).unwrap();
        c.observe_apply(2, &ent(1, 3, b"c"), 13).unwrap();
        let err = c.observe_snapshot(3, 2, 99).unwrap_err();
        assert_eq!(err.property, Property::StateMachineSafety);
        assert!(c.observe_snapshot(4, 7, 0).is_err(), "nobody applied 7");
    }

    #[test]
    fn leader_missing_a_committed_entry_is_caught() {
        let mut c = Checker::default();
        c.observe_committed(1, 2, &[ent(2, 1, b"a")]).unwrap();
        let log = |i: Index| {
            if i == 1 {
                Ok(1)
            } else {
                Err(StorageError::Unavailable(i))
            }
        };
        assert!(
            c.check_leader_log(3, 2, log).is_ok(),
            "same-term leaders are exempt"
        );
        let err = c.check_leader_log(3, 3, log).unwrap_err();
        assert_eq!(err.property, Property::LeaderCompleteness);
        let compacted = |i: Index| Err(StorageError::Compacted(i));
        assert!(
            c.check_leader_log(3, 3, compacted).is_ok(),
            "a snapshot covers it"
        );
    }

    #[test]
    fn commit_going_back_is_caught() {
        let mut c = Checker::default();
        c.observe_commit(1, 5).unwrap();
        assert!(c.observe_commit(1, 4).is_err());
        c.observe_durable_commit(1, 3).unwrap();
        c.observe_restart(1);
        c.observe_commit(1, 3).unwrap();
        assert!(c.observe_durable_commit(1, 2).is_err());
    }
}
