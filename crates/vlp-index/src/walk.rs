//! The search side of HNSW: a built graph laid out flat for reading, and the walk over it.
//!
//! `hnsw_rs` builds the graph and keeps it on disk, but its own search goes through a lock and an
//! `Arc` per neighbour list and allocates per visit, which made it a quarter of hnswlib's speed.
//! A built graph does not change, so here it is copied once into plain arrays (node vectors side
//! by side, layer-0 links in one CSR table, upper layers apart since few nodes reach them) and
//! walked the way hnswlib walks: greedy descent through the upper layers, then a best-first
//! search of layer 0 with `ef` candidates, visits marked in a per-thread array that is reused.
//!
//! Nodes are distinct vectors; [`crate::ann`] maps them back to rows.

use crate::exact::dot;
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// A node and its distance to the query (`−inner product`: smaller is nearer).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near {
    dist: f32,
    node: u32,
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

/// An HNSW graph in arrays, read-only.
pub(crate) struct FlatGraph {
    dim: usize,
    /// `[nodes, dim]`, in node order.
    vectors: Vec<f32>,
    /// Layer-0 links of node `n`: `links[starts[n]..starts[n + 1]]`.
    starts: Vec<u32>,
    links: Vec<u32>,
    /// Links above layer 0 of the nodes that reach it: `upper[&n][l − 1]`.
    upper: HashMap<u32, Vec<Vec<u32>>>,
    entry: u32,
    top_layer: usize,
}

/// One node as the graph builder knows it: its vector and its links per layer (0 first).
pub(crate) struct NodeLinks<'a> {
    pub node: u32,
    pub vector: &'a [f32],
    pub layers: Vec<Vec<u32>>,
}

impl FlatGraph {
    /// Lays out `nodes` (each node exactly once, any order); `entry` is a node of the top layer.
    pub(crate) fn new<'a>(dim: usize, count: usize, nodes: impl Iterator<Item = NodeLinks<'a>>, entry: u32, top_layer: usize) -> Self {
        let mut vectors = vec![0f32; count * dim];
        let mut level0: Vec<Vec<u32>> = vec![Vec::new(); count];
        let mut upper = HashMap::new();
        for NodeLinks { node, vector, mut layers } in nodes {
            let n = node as usize;
            vectors[n * dim..(n + 1) * dim].copy_from_slice(vector);
            if layers.is_empty() {
                continue;
            }
            level0[n] = std::mem::take(&mut layers[0]);
            if layers.len() > 1 && layers[1..].iter().any(|l| !l.is_empty()) {
                layers.remove(0);
                upper.insert(node, layers);
            }
        }
        let mut starts = Vec::with_capacity(count + 1);
        let mut links = Vec::with_capacity(level0.iter().map(Vec::len).sum());
        starts.push(0u32);
        for l in level0 {
            links.extend(l);
            starts.push(links.len() as u32);
        }
        FlatGraph { dim, vectors, starts, links, upper, entry, top_layer }
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn vector(&self, n: u32) -> &[f32] {
        let n = n as usize;
        &self.vectors[n * self.dim..(n + 1) * self.dim]
    }

    fn dist(&self, query: &[f32], n: u32) -> f32 {
        -dot(query, self.vector(n))
    }

    fn links_at(&self, n: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            &self.links[self.starts[n as usize] as usize..self.starts[n as usize + 1] as usize]
        } else {
            self.upper.get(&n).and_then(|ls| ls.get(layer - 1)).map(Vec::as_slice).unwrap_or(&[])
        }
    }

    /// Up to `ef` nodes nearest `query` among those `accept` takes, nearest first, as
    /// (node, inner product). Nodes `accept` refuses are still walked through, so a selective
    /// filter still finds its nodes rather than an empty neighbourhood.
    pub(crate) fn search(&self, query: &[f32], ef: usize, accept: &dyn Fn(u32) -> bool) -> Vec<(u32, f32)> {
        if self.len() == 0 || ef == 0 {
            return Vec::new();
        }
        let mut cur = Near { dist: self.dist(query, self.entry), node: self.entry };
        for layer in (1..=self.top_layer).rev() {
            loop {
                let mut moved = false;
                for &n in self.links_at(cur.node, layer) {
                    let d = self.dist(query, n);
                    if d < cur.dist {
                        cur = Near { dist: d, node: n };
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            visited.reset(self.len());
            self.search_layer0(query, cur, ef, accept, &mut visited)
        })
    }

    fn search_layer0(&self, query: &[f32], start: Near, ef: usize, accept: &dyn Fn(u32) -> bool, visited: &mut Visited) -> Vec<(u32, f32)> {
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
            for &n in self.links_at(c.node, 0) {
                if !visited.mark(n) {
                    continue;
                }
                let d = self.dist(query, n);
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
        }
        let mut out: Vec<(u32, f32)> = found.into_iter().map(|n| (n.node, -n.dist)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
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
