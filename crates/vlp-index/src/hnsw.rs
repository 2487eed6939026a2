//! Building an HNSW graph (Malkov & Yashunin, 2018), in parallel, and its file.
//!
//! Each node's links sit behind their own lock, as in hnswlib: an insertion walks the graph
//! reading one neighbour list at a time under its lock, links its node to the best `M` it found
//! (chosen by the paper's heuristic, which keeps a neighbour only when it is nearer the node than
//! any neighbour already kept, so links spread in every direction), then adds the reverse links,
//! pruning a list that overflows with the same heuristic. Layer 0 keeps up to `2M` links, the
//! others `M`. After each insertion, nodes that pruning left unreachable are linked back in.

use crate::exact::dot;
use crate::walk::{descend, prefetch_lines, search_layer, Layers, Near};
use crate::{IndexError, Result};
use rayon::prelude::*;
use std::sync::{Mutex, RwLock};

/// Layers above this are never drawn (1M nodes at M 16 reach about 5).
const MAX_LEVEL: usize = 15;

pub(crate) struct Builder {
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    /// `[nodes, dim]`.
    pub vectors: Vec<f32>,
    levels: Vec<u8>,
    /// Per node, its links on layers `0..=level`.
    links: Vec<Mutex<Vec<Vec<u32>>>>,
    /// The entry node and the top layer, once there is a node.
    entry: RwLock<Option<(u32, usize)>>,
    /// Nodes inserted since the last [`repair`](Self::repair).
    unrepaired: usize,
}

impl Builder {
    /// Node `n`'s vector, `dim` long.
    #[inline]
    pub(crate) fn vector(&self, n: u32) -> &[f32] {
        let n = n as usize;
        &self.vectors[n * self.dim..(n + 1) * self.dim]
    }

    pub fn new(dim: usize, m: usize, ef_construction: usize) -> Self {
        Builder {
            dim,
            m: m.max(2),
            ef_construction: ef_construction.max(m),
            vectors: Vec::new(),
            levels: Vec::new(),
            links: Vec::new(),
            entry: RwLock::new(None),
            unrepaired: 0,
        }
    }

    /// A node's level, drawn from an exponential with scale 1/ln M as the paper does, seeded by
    /// the node's number so a build's levels do not depend on thread timing.
    fn level_of(&self, node: u32) -> usize {
        let mut x = (node as u64).wrapping_add(0x9E3779B97F4A7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
        x ^= x >> 31;
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() / (self.m as f64).ln()) as usize).min(MAX_LEVEL)
    }

    fn max_links(&self, layer: usize) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// Appends nodes for `vectors` (`[new, dim]`) and links them in, in parallel on rayon's
    /// threads.
    pub fn insert(&mut self, vectors: Vec<f32>) {
        let first = self.nodes() as u32;
        let added = vectors.len() / self.dim.max(1);
        if self.vectors.is_empty() {
            self.vectors = vectors;
        } else {
            self.vectors.extend_from_slice(&vectors);
        }
        for n in first..first + added as u32 {
            let level = self.level_of(n);
            self.levels.push(level as u8);
            self.links.push(Mutex::new(vec![Vec::new(); level + 1]));
        }
        let this = &*self;
        let mut todo = first..first + added as u32;
        // the first node of an empty graph becomes the entry before anything walks to it
        if this.entry.read().expect("lock").is_none() {
            if let Some(n) = todo.next() {
                *this.entry.write().expect("lock") = Some((n, this.levels[n as usize] as usize));
            }
        }
        todo.into_par_iter().for_each(|n| this.link(n));
        // The repair walks every node, so it waits until an eighth of the graph is new (a
        // one-at-a-time caller such as `vlp filter --dedup` would otherwise pay a full pass per
        // row); `settle` forces it before a graph is written or frozen.
        self.unrepaired += added;
        if self.unrepaired * 8 >= self.nodes() {
            self.repair();
        }
    }

    /// Makes every node reachable, if an insertion since the last repair may have left one
    /// out: done before a graph is written or frozen.
    pub fn settle(&mut self) {
        if self.unrepaired > 0 {
            self.repair();
        }
    }

    /// Links in the nodes that no walk from the entry reaches on layer 0. Pruning by the
    /// heuristic can drop every link into a node (a few in a thousand on small clustered sets,
    /// which no ef then finds); each such node is linked from its nearest reachable node.
    fn repair(&mut self) {
        self.unrepaired = 0;
        let Some((entry, top)) = self.entry() else { return };
        let mut reached = vec![false; self.nodes()];
        let spread = |from: u32, reached: &mut Vec<bool>| {
            let mut stack = vec![from];
            while let Some(n) = stack.pop() {
                if std::mem::replace(&mut reached[n as usize], true) {
                    continue;
                }
                self.with_links(n, 0, |links| stack.extend(links.iter().copied().filter(|&t| !reached[t as usize])));
            }
        };
        spread(entry, &mut reached);
        for u in 0..self.nodes() as u32 {
            if reached[u as usize] {
                continue;
            }
            let q = self.vector(u);
            let start = descend(self, q, Near { dist: self.dist(q, entry), node: entry }, top, 1);
            let start = if reached[start.node as usize] { start } else { Near { dist: self.dist(q, entry), node: entry } };
            let nearest = search_layer(self, q, start, self.ef_construction, 0, &|c| reached[c as usize]).first().map(|n| n.node);
            if let Some(r) = nearest {
                // one link over the layer's maximum at most until the next pruning of `r`
                self.links[r as usize].lock().expect("lock")[0].push(u);
            }
            spread(u, &mut reached);
        }
    }

    fn link(&self, n: u32) {
        let level = self.levels[n as usize] as usize;
        let (entry, top) = self.entry.read().expect("lock").expect("an entry node");
        let q = self.vector(n);
        let mut cur = Near { dist: self.dist(q, entry), node: entry };
        if top > level {
            cur = descend(self, q, cur, top, level + 1);
        }
        for layer in (0..=level.min(top)).rev() {
            let found: Vec<Near> = search_layer(self, q, cur, self.ef_construction, layer, &|c| c != n);
            let Some(&nearest) = found.first() else { continue };
            let chosen = self.select(&found, self.m);
            self.links[n as usize].lock().expect("lock")[layer] = chosen.clone();
            for e in chosen {
                self.connect(e, n, layer);
            }
            cur = nearest;
        }
        if level > top {
            let mut e = self.entry.write().expect("lock");
            if e.is_none_or(|(_, t)| level > t) {
                *e = Some((n, level));
            }
        }
    }

    /// The paper's heuristic: from `candidates` (nearest first), up to `m` that are each nearer
    /// the query than any one already chosen.
    fn select(&self, candidates: &[Near], m: usize) -> Vec<u32> {
        if candidates.len() <= m {
            return candidates.iter().map(|c| c.node).collect();
        }
        let mut chosen: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if chosen.len() >= m {
                break;
            }
            let v = self.vector(c.node);
            if chosen.iter().all(|&s| -dot(v, self.vector(s)) >= c.dist) {
                chosen.push(c.node);
            }
        }
        chosen
    }

    /// Adds `n` to `e`'s links on `layer`, pruning them back to the most a layer holds.
    fn connect(&self, e: u32, n: u32, layer: usize) {
        let mut links = self.links[e as usize].lock().expect("lock");
        let list = &mut links[layer];
        if list.contains(&n) {
            return;
        }
        if list.len() < self.max_links(layer) {
            list.push(n);
            return;
        }
        let v = self.vector(e);
        let mut all: Vec<Near> = list.iter().chain(std::iter::once(&n)).map(|&c| Near { dist: -dot(v, self.vector(c)), node: c }).collect();
        all.sort();
        *list = self.select(&all, self.max_links(layer));
    }

    /// The entry node and top layer; `None` for an empty graph.
    pub fn entry(&self) -> Option<(u32, usize)> {
        *self.entry.read().expect("lock")
    }

    /// The node vectors, every node's links per layer, and the entry, for freezing.
    pub fn into_parts(mut self) -> (Vec<f32>, Vec<Vec<Vec<u32>>>, Option<(u32, usize)>) {
        self.settle();
        let entry = self.entry();
        let links = self.links.into_iter().map(|l| l.into_inner().expect("lock")).collect();
        (self.vectors, links, entry)
    }

    /// The file's body after the rows: levels, then each node's links layer by layer (a count,
    /// then the nodes), all little-endian.
    pub fn write_links(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.levels);
        for l in &self.links {
            for layer in l.lock().expect("lock").iter() {
                out.extend((layer.len() as u32).to_le_bytes());
                out.extend(layer.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
    }

    /// Reads what [`write_links`](Self::write_links) wrote for `vectors`' nodes; `what` names the
    /// file in errors. Returns the builder and the bytes left over.
    pub fn read_links<'a>(
        dim: usize,
        m: usize,
        ef_construction: usize,
        vectors: Vec<f32>,
        entry: Option<(u32, usize)>,
        mut bytes: &'a [u8],
        what: &str,
    ) -> Result<(Self, &'a [u8])> {
        let bad = |message: String| IndexError::Corrupt { path: what.to_string(), message };
        let nodes = vectors.len() / dim.max(1);
        if bytes.len() < nodes {
            return Err(bad("ends inside the node levels".into()));
        }
        let levels = bytes[..nodes].to_vec();
        bytes = &bytes[nodes..];
        let mut links = Vec::with_capacity(nodes);
        let take_u32 = |bytes: &mut &[u8]| -> Result<u32> {
            let (head, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| bad("ends inside the links".into()))?;
            *bytes = rest;
            Ok(u32::from_le_bytes(*head))
        };
        for (n, &level) in levels.iter().enumerate() {
            if level as usize > MAX_LEVEL {
                return Err(bad(format!("node {n} on level {level}, above {MAX_LEVEL}")));
            }
            let mut layers = Vec::with_capacity(level as usize + 1);
            for layer in 0..=level as usize {
                let count = take_u32(&mut bytes)? as usize;
                // a repair may add one link beyond 2M until the next pruning; more is damage
                if count > 4 * m.max(2) {
                    return Err(bad(format!("node {n} has {count} links on layer {layer}; M is {m}")));
                }
                let mut list = Vec::with_capacity(count);
                for _ in 0..count {
                    let to = take_u32(&mut bytes)?;
                    if to as usize >= nodes {
                        return Err(bad(format!("node {n} links to node {to} of {nodes}")));
                    }
                    list.push(to);
                }
                layers.push(list);
            }
            links.push(Mutex::new(layers));
        }
        if let Some((e, top)) = entry {
            if e as usize >= nodes || levels[e as usize] as usize != top {
                return Err(bad(format!("entry node {e} on layer {top} does not match the levels")));
            }
        }
        let b = Builder {
            dim,
            m: m.max(2),
            ef_construction: ef_construction.max(m),
            vectors,
            levels,
            links,
            entry: RwLock::new(entry),
            unrepaired: 0,
        };
        Ok((b, bytes))
    }
}

impl Layers for Builder {
    fn nodes(&self) -> usize {
        self.levels.len()
    }

    #[inline]
    fn dist(&self, query: &[f32], n: u32) -> f32 {
        -dot(query, self.vector(n))
    }

    #[inline]
    fn prefetch(&self, n: u32) {
        prefetch_lines(self.vector(n));
    }

    /// Holds the node's lock while `f` runs, as hnswlib does; `f` takes no other lock.
    fn with_links<R>(&self, n: u32, layer: usize, f: impl FnOnce(&[u32]) -> R) -> R {
        let links = self.links[n as usize].lock().expect("lock");
        f(links.get(layer).map_or(&[], Vec::as_slice))
    }
}

#[cfg(test)]
mod tests {
    use super::Builder;
    use crate::walk::Layers;

    /// `n` unit vectors of `dim` in `clusters` tight clusters (the data `repair` exists for:
    /// the heuristic prunes links into a cluster from outside it).
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut next = || rng.gen_range(-0.5f32..0.5);
        let centres: Vec<Vec<f32>> = (0..clusters).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let v: Vec<f32> = centres[i % clusters].iter().map(|c| c + 0.01 * next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }

    /// The graph's invariants: every link points at another node that lives on that layer, no
    /// list repeats a node, lists keep to their layer's bound (but for the few a repair extends),
    /// the entry sits on the top layer, and every node is reachable from the entry on layer 0.
    fn check(b: &Builder) {
        let nodes = b.nodes();
        let (entry, top) = b.entry().expect("a graph with nodes has an entry");
        assert_eq!(b.levels[entry as usize] as usize, top, "the entry lives on the top layer");
        let mut over = 0;
        for n in 0..nodes as u32 {
            let level = b.levels[n as usize] as usize;
            assert!(level <= top, "node {n} is above the top layer");
            for layer in 0..=level {
                b.with_links(n, layer, |links| {
                    // a repair links a lost node from its nearest reachable one without pruning,
                    // so a layer-0 list may run past 2M until that node's next pruning; a graph
                    // file holds up to 4M
                    let bound = if layer == 0 { 2 * b.max_links(0) } else { b.max_links(layer) };
                    assert!(links.len() <= bound, "node {n} has {} links on layer {layer}", links.len());
                    over += usize::from(links.len() > b.max_links(layer));
                    let mut seen = std::collections::HashSet::new();
                    for &t in links {
                        assert!((t as usize) < nodes && t != n, "node {n} links to {t} on layer {layer}");
                        assert!(b.levels[t as usize] as usize >= layer, "node {n} links on layer {layer} to {t}, which is not on it");
                        assert!(seen.insert(t), "node {n} links to {t} twice on layer {layer}");
                    }
                });
            }
        }
        assert!(over * 100 <= nodes, "{over} of {nodes} link lists are over their layer's bound: more than repairs make");
        let mut reached = vec![false; nodes];
        let mut stack = vec![entry];
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut reached[n as usize], true) {
                continue;
            }
            b.with_links(n, 0, |links| stack.extend(links.iter().copied().filter(|&t| !reached[t as usize])));
        }
        let lost: Vec<usize> = (0..nodes).filter(|&n| !reached[n]).collect();
        assert!(lost.is_empty(), "{} of {nodes} nodes unreachable from the entry, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    }

    #[test]
    fn every_node_stays_reachable_on_clustered_data_after_build_and_additions() {
        let (dim, m) = (16, 8);
        let mut b = Builder::new(dim, m, 40);
        b.insert(clustered(1500, dim, 30, 1));
        b.settle();
        check(&b);
        // additions in small groups, as `vlp index add` and `vlp filter --dedup` make them
        for round in 0..5 {
            b.insert(clustered(40, dim, 30, 100 + round));
            b.settle();
            check(&b);
        }
        assert_eq!(b.nodes(), 1700);
    }
}
