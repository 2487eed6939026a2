//! The walk through an HNSW graph, shared by the graph while it is built ([`crate::hnsw`]) and
//! the same graph frozen for search ([`FlatGraph`]): greedy descent through the upper layers,
//! then a best-first search of one layer with `ef` candidates, visits marked in a per-thread
//! array that is reused, the next neighbour's vector fetched while this one is scored. This is
//! hnswlib's algorithm (Malkov & Yashunin, 2018, algorithms 2 and 5).
//!
//! Nodes are distinct vectors; [`crate::ann`] maps them back to rows.

use crate::exact::Rows;
use crate::store::Precision;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// A node and its distance to the query (`−inner product`: smaller is nearer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Near {
    pub dist: f32,
    pub node: u32,
}

impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.node.cmp(&other.node))
    }
}

/// What a walk reads: node distances and links per layer.
pub(crate) trait Layers: Sync {
    fn nodes(&self) -> usize;
    /// Calls `f` with node `n`'s links at `layer` (none above the node's level), in place.
    fn with_links<R>(&self, n: u32, layer: usize, f: impl FnOnce(&[u32]) -> R) -> R;
    /// `−inner product` of `query` and node `n`'s vector.
    fn dist(&self, query: &[f32], n: u32) -> f32;
    /// Starts bringing node `n`'s vector into cache.
    fn prefetch(&self, n: u32);
}

/// Asks for the first cache lines of `v` (a node's vector), a hint that never faults.
#[inline]
pub(crate) fn prefetch_lines<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v.as_ptr() as *const i8;
        // SAFETY: prefetching is a hint and never faults; SSE is part of x86-64
        unsafe {
            for line in (0..std::mem::size_of_val(v)).step_by(64).take(4) {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// From `start`, moves to the nearest neighbour while one is nearer, on each layer from `from`
/// down to `to` (both included); returns where it stopped.
pub(crate) fn descend(g: &impl Layers, query: &[f32], mut cur: Near, from: usize, to: usize) -> Near {
    for layer in (to..=from).rev() {
        loop {
            let next = g.with_links(cur.node, layer, |links| {
                let mut best = cur;
                for &n in links {
                    let d = g.dist(query, n);
                    if d < best.dist {
                        best = Near { dist: d, node: n };
                    }
                }
                best
            });
            if next == cur {
                break;
            }
            cur = next;
        }
    }
    cur
}

/// Up to `ef` nodes of `layer` nearest `query` among those `accept` takes, nearest first. Nodes
/// `accept` refuses are still walked through, so a selective filter still finds its nodes
/// rather than an empty neighbourhood.
pub(crate) fn search_layer(
    g: &impl Layers,
    query: &[f32],
    start: Near,
    ef: usize,
    layer: usize,
    accept: &dyn Fn(u32) -> bool,
) -> Vec<Near> {
    VISITED.with(|v| {
        let mut visited = v.borrow_mut();
        visited.reset(g.nodes());
        // candidates: nearest first; found: farthest first, at most ef, accepted nodes only
        let mut candidates = BinaryHeap::new();
        let mut found: BinaryHeap<Near> = BinaryHeap::new();
        visited.mark(start.node);
        candidates.push(Reverse(start));
        let mut bound = f32::INFINITY;
        if accept(start.node) {
            found.push(start);
            bound = start.dist;
        }
        while let Some(Reverse(c)) = candidates.pop() {
            if c.dist > bound && found.len() >= ef {
                break;
            }
            g.with_links(c.node, layer, |links| {
                for (i, &n) in links.iter().enumerate() {
                    if let Some(&next) = links.get(i + 1) {
                        g.prefetch(next);
                    }
                    if !visited.mark(n) {
                        continue;
                    }
                    let d = g.dist(query, n);
                    if found.len() < ef || d < bound {
                        let near = Near { dist: d, node: n };
                        candidates.push(Reverse(near));
                        if accept(n) {
                            found.push(near);
                            if found.len() > ef {
                                found.pop();
                            }
                        }
                        if let Some(worst) = found.peek() {
                            bound = worst.dist;
                        }
                    }
                }
            });
        }
        found.into_sorted_vec()
    })
}

/// A whole search: from `entry` (node, top layer; `None` for an empty graph) down through the
/// upper layers, then up to `ef` nodes of layer 0 that `accept` takes, nearest first, as
/// (node, inner product).
pub(crate) fn search(
    g: &impl Layers,
    entry: Option<(u32, usize)>,
    query: &[f32],
    ef: usize,
    accept: &dyn Fn(u32) -> bool,
) -> Vec<(u32, f32)> {
    let Some((entry, top)) = entry.filter(|_| ef > 0) else { return Vec::new() };
    let start = Near { dist: g.dist(query, entry), node: entry };
    let start = if top > 0 { descend(g, query, start, top, 1) } else { start };
    search_layer(g, query, start, ef, 0, accept).into_iter().map(|n| (n.node, -n.dist)).collect()
}

/// Node vectors side by side, `[nodes, dim]`, as the index stores them.
enum NodeVectors {
    F32(Vec<f32>),
    /// f16 bits: half the memory, scored as stored.
    F16(Vec<u16>),
}

impl NodeVectors {
    fn rows(&self) -> Rows<'_> {
        match self {
            NodeVectors::F32(v) => Rows::F32(v),
            NodeVectors::F16(v) => Rows::F16(v),
        }
    }
}

/// An HNSW graph in arrays, read-only: node vectors side by side, layer-0 links in one CSR
/// table, upper layers apart since few nodes reach them.
pub(crate) struct FlatGraph {
    dim: usize,
    vectors: NodeVectors,
    /// Layer-0 links of node `n`: `links[starts[n]..starts[n + 1]]`.
    starts: Vec<u32>,
    links: Vec<u32>,
    /// Links above layer 0 of the nodes that reach it: `upper[&n][l − 1]`.
    upper: HashMap<u32, Vec<Vec<u32>>>,
    entry: u32,
    top_layer: usize,
}

impl FlatGraph {
    /// Lays out the nodes whose vectors are `vectors` (`[nodes, dim]`, kept at `precision`) and
    /// whose links per layer (0 first) are `node_links`.
    pub(crate) fn new(
        dim: usize,
        vectors: Vec<f32>,
        precision: Precision,
        node_links: Vec<Vec<Vec<u32>>>,
        entry: u32,
        top_layer: usize,
    ) -> Self {
        let mut starts = Vec::with_capacity(node_links.len() + 1);
        let mut links = Vec::with_capacity(node_links.iter().map(|l| l.first().map_or(0, Vec::len)).sum());
        let mut upper = HashMap::new();
        starts.push(0u32);
        for (n, mut layers) in node_links.into_iter().enumerate() {
            if let Some(l0) = layers.first() {
                links.extend_from_slice(l0);
            }
            starts.push(links.len() as u32);
            if layers.len() > 1 {
                layers.remove(0);
                upper.insert(n as u32, layers);
            }
        }
        let vectors = match precision {
            Precision::F32 => NodeVectors::F32(vectors),
            Precision::F16 => NodeVectors::F16(vectors.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect()),
        };
        FlatGraph { dim, vectors, starts, links, upper, entry, top_layer }
    }

    /// Up to `ef` nodes nearest `query` among those `accept` takes, nearest first, as
    /// (node, inner product).
    pub(crate) fn search(&self, query: &[f32], ef: usize, accept: &dyn Fn(u32) -> bool) -> Vec<(u32, f32)> {
        let entry = (self.nodes() > 0).then_some((self.entry, self.top_layer));
        search(self, entry, query, ef, accept)
    }
}

impl Layers for FlatGraph {
    fn nodes(&self) -> usize {
        self.starts.len() - 1
    }

    #[inline]
    fn dist(&self, query: &[f32], n: u32) -> f32 {
        -self.vectors.rows().score(query, n as usize)
    }

    #[inline]
    fn prefetch(&self, n: u32) {
        let range = n as usize * self.dim..(n as usize + 1) * self.dim;
        match &self.vectors {
            NodeVectors::F32(v) => prefetch_lines(&v[range]),
            NodeVectors::F16(v) => prefetch_lines(&v[range]),
        }
    }

    #[inline]
    fn with_links<R>(&self, n: u32, layer: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        if layer == 0 {
            f(&self.links[self.starts[n as usize] as usize..self.starts[n as usize + 1] as usize])
        } else {
            f(self.upper.get(&n).and_then(|ls| ls.get(layer - 1)).map_or(&[], Vec::as_slice))
        }
    }
}

/// Which nodes this search has seen: a stamp per node, so clearing is one increment.
#[derive(Default)]
struct Visited {
    stamps: Vec<u32>,
    current: u32,
}

impl Visited {
    fn reset(&mut self, nodes: usize) {
        if self.stamps.len() < nodes {
            self.stamps.resize(nodes, 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamps.iter_mut().for_each(|s| *s = 0);
            self.current = 1;
        }
    }

    /// Marks `n`; false when it was already marked in this search.
    fn mark(&mut self, n: u32) -> bool {
        let s = &mut self.stamps[n as usize];
        if *s == self.current {
            false
        } else {
            *s = self.current;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

#[cfg(test)]
mod tests {
    use super::Visited;

    /// After 2³² − 1 searches the stamp wraps: stamps left by searches of the last round must not
    /// read as "seen" in the next one.
    #[test]
    fn visit_stamps_survive_the_wrap_around() {
        let mut v = Visited::default();
        v.reset(4);
        assert!(v.mark(2) && !v.mark(2), "a node is seen once per search");
        // as if 2³² − 2 searches had run since: node 0 marked in this one, node 1 in the very
        // first (its stamp, 1, is the one the counter restarts at)
        v.current = u32::MAX;
        v.stamps = vec![u32::MAX, 1, 0, 7];
        assert!(!v.mark(0));
        v.reset(6); // wraps, and grows to a larger graph
        for n in 0..6 {
            assert!(v.mark(n), "node {n} must read as unseen in the first search after the wrap");
            assert!(!v.mark(n));
        }
        v.reset(6);
        assert!(v.mark(1), "node 1 must read as unseen in the search after that");
    }
}
