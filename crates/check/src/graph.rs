//! A directed graph whose edges carry kinds (a small bit set): strongly
//! connected components (Tarjan's, iteratively) and short cycles inside
//! them (breadth-first search).

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Directed edges between nodes `0..n`; parallel edges of several kinds
/// are one edge whose kind is the union.
pub(crate) struct Graph {
    adj: Vec<Vec<(usize, u8)>>,
}

/// Real-time order, for a search to follow without the graph holding all
/// of its edges: node `w` follows node `v` if `v` returned before `w` was
/// called.
pub(crate) struct Times<'a> {
    /// Each node's call.
    pub(crate) call: &'a [u64],
    /// Each node's return, if it may precede others.
    pub(crate) ret: &'a [Option<u64>],
    /// The kind such edges carry.
    pub(crate) kind: u8,
}

/// One step of a path or cycle: a node and the kinds of the edge that
/// leaves it for the next node.
pub(crate) type Step = (usize, u8);

impl Graph {
    /// A graph of `nodes` nodes with `edges` (from, to, kinds); self-loops
    /// are dropped.
    pub(crate) fn new(nodes: usize, mut edges: Vec<(usize, usize, u8)>) -> Graph {
        edges.retain(|&(a, b, _)| a != b);
        edges.sort_unstable();
        let mut adj: Vec<Vec<(usize, u8)>> = vec![Vec::new(); nodes];
        for (a, b, kinds) in edges {
            match adj[a].last_mut() {
                Some(last) if last.0 == b => last.1 |= kinds,
                _ => adj[a].push((b, kinds)),
            }
        }
        Graph { adj }
    }

    /// The number of edges (ordered pairs of distinct nodes).
    pub(crate) fn edges(&self) -> usize {
        self.adj.iter().map(Vec::len).sum()
    }

    /// The kinds of the edge `a → b` (0: none).
    #[cfg(test)]
    pub(crate) fn kinds(&self, a: usize, b: usize) -> u8 {
        self.adj[a]
            .binary_search_by_key(&b, |&(to, _)| to)
            .map_or(0, |i| self.adj[a][i].1)
    }

    /// The edges leaving `a`.
    pub(crate) fn out(&self, a: usize) -> &[(usize, u8)] {
        &self.adj[a]
    }

    /// The strongly connected components of more than one node, of the
    /// subgraph of the nodes `within` holds and the edges with a kind in
    /// `allowed`, smallest first.
    pub(crate) fn components(&self, allowed: u8, within: &[bool]) -> Vec<Vec<usize>> {
        const NONE: usize = usize::MAX;
        let n = self.adj.len();
        let mut index = vec![NONE; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut found = Vec::new();
        // The depth-first search's own stack: (node, next edge to try).
        let mut calls: Vec<(usize, usize)> = Vec::new();
        for root in 0..n {
            if !within[root] || index[root] != NONE {
                continue;
            }
            macro_rules! visit {
                ($v:expr) => {{
                    let v = $v;
                    index[v] = next;
                    low[v] = next;
                    next += 1;
                    stack.push(v);
                    on_stack[v] = true;
                    calls.push((v, 0));
                }};
            }
            visit!(root);
            while let Some(&(v, pos)) = calls.last() {
                if let Some(&(w, kinds)) = self.adj[v].get(pos) {
                    calls.last_mut().expect("not empty").1 += 1;
                    if kinds & allowed == 0 || !within[w] {
                        continue;
                    }
                    if index[w] == NONE {
                        visit!(w);
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(u, _)) = calls.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        component.sort_unstable();
                        found.push(component);
                    }
                }
            }
        }
        found.sort_by_key(Vec::len);
        found
    }

    /// A shortest path from `from` to `to` (a cycle, if they are equal)
    /// over the nodes `within` holds and the edges with a kind in
    /// `allowed`, as the steps before `to`. Each edge looked at costs one
    /// unit of `budget`; `None` if there is no path or the budget ran out.
    /// With `times`, real-time order counts as edges too (all of them,
    /// not only those the graph holds).
    pub(crate) fn shortest_path(
        &self,
        from: usize,
        to: usize,
        allowed: u8,
        within: &[bool],
        times: Option<&Times<'_>>,
        budget: &mut usize,
    ) -> Option<Vec<Step>> {
        let mut parent: HashMap<usize, Step> = HashMap::new();
        // The nodes not reached yet, by call, for real-time edges.
        let mut by_call: BTreeSet<(u64, usize)> = BTreeSet::new();
        let times = times.filter(|t| t.kind & allowed != 0);
        if let Some(t) = times {
            by_call.extend(
                (0..within.len())
                    .filter(|&w| within[w] && w != from)
                    .map(|w| (t.call[w], w)),
            );
            if from == to {
                by_call.insert((t.call[from], from));
            }
        }
        let path_to = |parent: &HashMap<usize, Step>, v: usize, kinds: u8| {
            let mut path = vec![(v, kinds)];
            let mut at = v;
            while at != from {
                let step = parent[&at];
                path.push(step);
                at = step.0;
            }
            path.reverse();
            path
        };
        let mut queue = VecDeque::from([from]);
        while let Some(v) = queue.pop_front() {
            for &(w, kinds) in &self.adj[v] {
                *budget = budget.checked_sub(1)?;
                if kinds & allowed == 0 || !within[w] {
                    continue;
                }
                if w == to {
                    return Some(path_to(&parent, v, kinds & allowed));
                }
                if w != from && !parent.contains_key(&w) {
                    parent.insert(w, (v, kinds & allowed));
                    if let Some(t) = times {
                        by_call.remove(&(t.call[w], w));
                    }
                    queue.push_back(w);
                }
            }
            let Some((t, Some(ret))) = times.map(|t| (t, t.ret[v])) else {
                continue;
            };
            let later: Vec<(u64, usize)> = by_call
                .range((ret.saturating_add(1), 0)..)
                .copied()
                .collect();
            for (call, w) in later {
                *budget = budget.checked_sub(1)?;
                if w == to {
                    return Some(path_to(&parent, v, t.kind));
                }
                by_call.remove(&(call, w));
                parent.insert(w, (v, t.kind));
                queue.push_back(w);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_shortest_cycles() {
        // 0 → 1 → 2 → 0 and 2 → 3 → 4 → 3; 5 alone.
        let edges = vec![
            (0, 1, 1),
            (1, 2, 1),
            (2, 0, 2),
            (2, 3, 1),
            (3, 4, 1),
            (4, 3, 1),
            (4, 3, 4),
            (5, 5, 1),
        ];
        let g = Graph::new(6, edges);
        assert_eq!(g.edges(), 6);
        assert_eq!(g.kinds(4, 3), 5);
        let all = vec![true; 6];
        assert_eq!(g.components(0xff, &all), vec![vec![3, 4], vec![0, 1, 2]]);
        // Without kind 2 the first cycle is gone.
        assert_eq!(g.components(1, &all), vec![vec![3, 4]]);
        let mut budget = 100;
        let cycle = g
            .shortest_path(0, 0, 0xff, &all, None, &mut budget)
            .unwrap();
        assert_eq!(cycle, vec![(0, 1), (1, 1), (2, 2)]);
        assert_eq!(g.shortest_path(0, 0, 1, &all, None, &mut budget), None);
        let mut none = 0;
        assert_eq!(g.shortest_path(3, 3, 0xff, &all, None, &mut none), None);
        // Real time: 2 returned before 0 was called, so 2 → 0 directly,
        // and 1 → 2 by the graph.
        let times = Times {
            call: &[10, 0, 0, 0, 0, 0],
            ret: &[None, None, Some(5), None, None, None],
            kind: 16,
        };
        let cycle = g
            .shortest_path(0, 0, 1 | 16, &all, Some(&times), &mut budget)
            .unwrap();
        assert_eq!(cycle, vec![(0, 1), (1, 1), (2, 16)]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let mut edges: Vec<_> = (0..n - 1).map(|i| (i, i + 1, 1)).collect();
        edges.push((n - 1, 0, 1));
        let g = Graph::new(n, edges);
        let components = g.components(1, &vec![true; n]);
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].len(), n);
    }
}
