//! Approximate nearest neighbours by inner product over normalised vectors.
//!
//! [`HnswGraph`] is the graph while it grows: `hnsw_rs` builds it, inserts into it and writes it
//! to disk. [`HnswIndex`] is the same graph frozen for search ([`crate::walk`]). Rows whose
//! vectors are identical (an image indexed under several ids, a caption shared by many items)
//! share one node: a graph over many copies of one point fills neighbour lists with the copies
//! and cuts regions off, which cost a duplicate-heavy corpus a tenth of its recall. A search
//! finds nodes and returns every row of each.
//!
//! `hnsw_rs` reads its own files without checking them, so [`crate::catalog`] records a checksum
//! of each file written here and checks it before handing them back.

use crate::exact::{dot, sort_hits, Hit};
use crate::walk::{FlatGraph, NodeLinks};
use crate::{IndexError, Result};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The graph's parameters (hnswlib's names: M, ef_construction, ef).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Links per node and layer.
    pub m: usize,
    pub ef_construction: usize,
    /// Candidates kept while searching; at least k is used.
    pub ef_search: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig { m: 16, ef_construction: 200, ef_search: 64 }
    }
}

/// `1 − a·b`: a distance for unit vectors. Ours rather than `anndists::DistDot`, whose portable
/// build sums in one scalar chain and asserts on rounding above 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct InnerProduct;

impl Distance<f32> for InnerProduct {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

const MAX_LAYERS: usize = 16;

/// Which node each row is, and the rows of each node.
#[derive(Debug, Clone, Default)]
struct Copies {
    row_node: Vec<u32>,
    /// Node vectors by the bits of their values, for finding a row's node.
    by_bits: HashMap<u64, Vec<u32>>,
    nodes: usize,
}

fn bits_key(v: &[f32]) -> u64 {
    // FNV-1a over the bit patterns: equal vectors, equal keys (−0.0 and 0.0 differ, which only
    // costs a node)
    v.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3))
}

impl Copies {
    /// Assigns `vectors`' rows to nodes, appending new nodes; returns the new nodes' rows
    /// (`node_vectors` is read for the existing ones and extended for the new).
    fn assign(&mut self, vectors: &[f32], dim: usize, node_vectors: &mut Vec<f32>) -> Vec<u32> {
        let mut fresh = Vec::new();
        for v in vectors.chunks(dim.max(1)) {
            let key = bits_key(v);
            let same = self.by_bits.get(&key).and_then(|ns| ns.iter().copied().find(|&n| &node_vectors[n as usize * dim..(n as usize + 1) * dim] == v));
            let node = match same {
                Some(n) => n,
                None => {
                    let n = self.nodes as u32;
                    self.nodes += 1;
                    self.by_bits.entry(key).or_default().push(n);
                    node_vectors.extend_from_slice(v);
                    fresh.push(n);
                    n
                }
            };
            self.row_node.push(node);
        }
        fresh
    }

    /// `rows[starts[n]..starts[n + 1]]` are node `n`'s rows, ascending.
    fn rows_by_node(&self) -> (Vec<u32>, Vec<u32>) {
        let mut starts = vec![0u32; self.nodes + 1];
        for &n in &self.row_node {
            starts[n as usize + 1] += 1;
        }
        for i in 0..self.nodes {
            starts[i + 1] += starts[i];
        }
        let mut next = starts.clone();
        let mut rows = vec![0u32; self.row_node.len()];
        for (r, &n) in self.row_node.iter().enumerate() {
            rows[next[n as usize] as usize] = r as u32;
            next[n as usize] += 1;
        }
        (starts, rows)
    }
}

/// An HNSW graph that can grow: built, inserted into, saved and loaded through `hnsw_rs`.
pub struct HnswGraph {
    graph: Hnsw<'static, f32, InnerProduct>,
    copies: Copies,
    /// `[nodes, dim]`: each distinct vector once.
    node_vectors: Vec<f32>,
    dim: usize,
    pub config: HnswConfig,
}

impl HnswGraph {
    /// Builds over `vectors` (`[rows, dim]`), inserting in parallel on rayon's threads.
    pub fn build(vectors: &[f32], dim: usize, config: HnswConfig) -> Self {
        let mut g = HnswGraph::with_capacity(vectors.len() / dim.max(1), dim, config);
        g.insert(vectors, dim);
        g
    }

    /// An empty graph to [`insert`](Self::insert) into; `capacity` is a sizing hint, not a limit.
    pub fn with_capacity(capacity: usize, dim: usize, config: HnswConfig) -> Self {
        let graph = Hnsw::new(config.m.clamp(2, 255), capacity.max(1), MAX_LAYERS, config.ef_construction.max(config.m), InnerProduct);
        HnswGraph { graph, copies: Copies::default(), node_vectors: Vec::new(), dim, config }
    }

    /// Rows, copies included.
    pub fn len(&self) -> usize {
        self.copies.row_node.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Distinct vectors: the graph's nodes.
    pub fn nodes(&self) -> usize {
        self.copies.nodes
    }

    /// Appends `vectors`' rows, numbered on from [`len`](Self::len).
    pub fn insert(&mut self, vectors: &[f32], dim: usize) {
        assert_eq!(dim, self.dim, "rows {dim} wide inserted into a graph {} wide", self.dim);
        let fresh = self.copies.assign(vectors, dim, &mut self.node_vectors);
        let nv = &self.node_vectors;
        let items: Vec<(&[f32], usize)> = fresh.iter().map(|&n| (&nv[n as usize * dim..(n as usize + 1) * dim], n as usize)).collect();
        for chunk in items.chunks(100_000) {
            self.graph.parallel_insert_slice(&chunk.to_vec());
        }
    }

    /// The `k` best rows through `hnsw_rs`'s own walk, for a graph still growing (a frozen
    /// [`HnswIndex`] searches faster).
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Vec<Hit> {
        let ef = ef.unwrap_or(self.config.ef_search).max(k);
        let nodes: Vec<(u32, f32)> = self.graph.search(query, k, ef).into_iter().map(|n| (n.d_id as u32, 1.0 - n.distance)).collect();
        let (starts, rows) = self.copies.rows_by_node();
        expand(&nodes, &starts, &rows, k, None)
    }

    /// Writes `DIR/BASENAME.hnsw.graph`, `.hnsw.data` (the nodes) and `.hnsw.rows` (each row's
    /// node, u32 little-endian).
    /// An empty graph is written as empty files (`hnsw_rs` cannot dump one).
    pub fn save(&self, dir: &Path, basename: &str) -> Result<()> {
        if self.nodes() == 0 {
            for file in ["graph", "data"] {
                let path = dir.join(format!("{basename}.hnsw.{file}"));
                std::fs::write(&path, b"").map_err(|e| IndexError::io(&path, e))?;
            }
        } else {
            self.graph
                .file_dump(dir, basename)
                .map_err(|e| IndexError::Invalid(format!("{}: writing the HNSW graph: {e}", dir.display())))?;
        }
        let path = dir.join(format!("{basename}.hnsw.rows"));
        let bytes: Vec<u8> = self.copies.row_node.iter().flat_map(|n| n.to_le_bytes()).collect();
        std::fs::write(&path, bytes).map_err(|e| IndexError::io(&path, e))
    }

    /// Loads what [`save`](Self::save) wrote. The caller has checked the files' checksums.
    pub fn load(dir: &Path, basename: &str, dim: usize, config: HnswConfig) -> Result<Self> {
        let corrupt = |file: &str, message: String| IndexError::Corrupt { path: dir.join(format!("{basename}.hnsw.{file}")).display().to_string(), message };
        let graph_path = dir.join(format!("{basename}.hnsw.graph"));
        if std::fs::metadata(&graph_path).map_err(|e| IndexError::io(&graph_path, e))?.len() == 0 {
            let rows_path = dir.join(format!("{basename}.hnsw.rows"));
            if std::fs::metadata(&rows_path).map_err(|e| IndexError::io(&rows_path, e))?.len() != 0 {
                return Err(corrupt("graph", "empty, but the rows file is not".into()));
            }
            return Ok(HnswGraph::with_capacity(1, dim, config));
        }
        // The graph borrows its loader for as long as it lives; a graph is loaded once or twice
        // per process, so the loader is leaked rather than tied up in a self-referential struct.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let graph = io.load_hnsw::<f32, InnerProduct>().map_err(|e| corrupt("graph", e.to_string()))?;
        let rows_path = dir.join(format!("{basename}.hnsw.rows"));
        let bytes = std::fs::read(&rows_path).map_err(|e| IndexError::io(&rows_path, e))?;
        if bytes.len() % 4 != 0 {
            return Err(corrupt("rows", format!("{} bytes, not whole u32 rows", bytes.len())));
        }
        let row_node: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let nodes = graph.get_nb_point();
        if let Some(bad) = row_node.iter().find(|&&n| n as usize >= nodes) {
            return Err(corrupt("rows", format!("row's node {bad}, but the graph has {nodes} nodes")));
        }
        let mut node_vectors = vec![0f32; nodes * dim];
        let mut seen = 0;
        if nodes > 0 {
            for p in graph.get_point_indexation() {
                let (n, v) = (p.get_origin_id(), p.get_v());
                if n >= nodes || v.len() != dim {
                    return Err(corrupt("data", format!("node {n} of width {}; expected below {nodes}, width {dim}", v.len())));
                }
                node_vectors[n * dim..(n + 1) * dim].copy_from_slice(v);
                seen += 1;
            }
        }
        if seen != nodes {
            return Err(corrupt("graph", format!("{seen} of {nodes} nodes found")));
        }
        let mut by_bits: HashMap<u64, Vec<u32>> = HashMap::new();
        for (n, v) in node_vectors.chunks(dim.max(1)).enumerate().take(nodes) {
            by_bits.entry(bits_key(v)).or_default().push(n as u32);
        }
        Ok(HnswGraph { graph, copies: Copies { row_node, by_bits, nodes }, node_vectors, dim, config })
    }

    /// The graph frozen for fast search.
    pub fn freeze(&self) -> HnswIndex {
        let nodes = self.nodes();
        let dim = self.dim;
        let top = self.graph.get_max_level_observed() as usize;
        let points = self.graph.get_point_indexation();
        let entry = if nodes == 0 { 0 } else { points.get_layer_iterator(top).next().map(|p| p.get_origin_id() as u32).unwrap_or(0) };
        let links: Vec<NodeLinks> = if nodes == 0 {
            Vec::new()
        } else {
            points
                .into_iter()
                .map(|p| {
                    let n = p.get_origin_id();
                    let layers = p.get_neighborhood_id().into_iter().map(|l| l.into_iter().map(|nb| nb.d_id as u32).collect()).collect();
                    NodeLinks { node: n as u32, vector: &self.node_vectors[n * dim..(n + 1) * dim], layers }
                })
                .collect()
        };
        let flat = FlatGraph::new(dim, nodes, links.into_iter(), entry, top);
        let (starts, rows) = self.copies.rows_by_node();
        HnswIndex { flat, starts, rows, config: self.config }
    }
}

/// A built HNSW graph, read-only, searched by [`crate::walk`].
pub struct HnswIndex {
    flat: FlatGraph,
    /// Node `n`'s rows: `rows[starts[n]..starts[n + 1]]`.
    starts: Vec<u32>,
    rows: Vec<u32>,
    pub config: HnswConfig,
}

impl HnswIndex {
    /// Builds and freezes in one go.
    pub fn build(vectors: &[f32], dim: usize, config: HnswConfig) -> Self {
        HnswGraph::build(vectors, dim, config).freeze()
    }

    /// Loads a saved graph and freezes it.
    pub fn load(dir: &Path, basename: &str, dim: usize, config: HnswConfig) -> Result<Self> {
        Ok(HnswGraph::load(dir, basename, dim, config)?.freeze())
    }

    /// Rows, copies included.
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    /// Distinct vectors.
    pub fn nodes(&self) -> usize {
        self.flat.len()
    }

    /// The `k` best rows for `query`, among those `keep` accepts (filtered during the walk, so
    /// a selective filter still fills k). Rows sharing a vector tie; ties go by row.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>, keep: Option<&(dyn Fn(usize) -> bool + Sync)>) -> Vec<Hit> {
        let ef = ef.unwrap_or(self.config.ef_search).max(k);
        let node_rows = |n: u32| &self.rows[self.starts[n as usize] as usize..self.starts[n as usize + 1] as usize];
        let nodes = match keep {
            None => self.flat.search(query, ef, &|_| true),
            Some(f) => self.flat.search(query, ef, &|n| node_rows(n).iter().any(|&r| f(r as usize))),
        };
        expand(&nodes, &self.starts, &self.rows, k, keep)
    }
}

/// Rows of `nodes` (best first), those `keep` takes, until `k`.
fn expand(nodes: &[(u32, f32)], starts: &[u32], rows: &[u32], k: usize, keep: Option<&(dyn Fn(usize) -> bool + Sync)>) -> Vec<Hit> {
    let mut hits = Vec::with_capacity(k);
    for &(n, score) in nodes {
        // every row of a node scores the same, so the k-th node's copies are all taken and
        // the cut is made after sorting by row
        for &r in &rows[starts[n as usize] as usize..starts[n as usize + 1] as usize] {
            if keep.is_none_or(|f| f(r as usize)) {
                hits.push(Hit { row: r as usize, score });
            }
        }
        if hits.len() >= k {
            break;
        }
    }
    sort_hits(&mut hits);
    hits.truncate(k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::top_k;

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let row: Vec<f32> = (0..dim)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
                })
                .collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(row.iter().map(|x| x / norm));
        }
        out
    }

    #[test]
    fn recall_against_brute_force_and_survives_save_and_load() {
        let (n, dim) = (3000, 32);
        let v = unit_vectors(n, dim, 1);
        let q = unit_vectors(50, dim, 2);
        let graph = HnswGraph::build(&v, dim, HnswConfig::default());
        let index = graph.freeze();
        let dir = tempfile::tempdir().unwrap();
        graph.save(dir.path(), "t").unwrap();
        let loaded = HnswIndex::load(dir.path(), "t", dim, HnswConfig::default()).unwrap();
        let (mut found, mut total) = (0, 0);
        for query in q.chunks(dim) {
            let truth: Vec<usize> = top_k(&v, dim, query, 10, &|_| true).iter().map(|h| h.row).collect();
            let got = loaded.search(query, 10, Some(128), None);
            assert_eq!(got.iter().map(|h| h.row).collect::<Vec<_>>(), index.search(query, 10, Some(128), None).iter().map(|h| h.row).collect::<Vec<_>>());
            found += got.iter().filter(|h| truth.contains(&h.row)).count();
            total += 10;
            let even = loaded.search(query, 10, Some(128), Some(&|r| r % 2 == 0));
            assert!(even.len() == 10 && even.iter().all(|h| h.row % 2 == 0));
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn copies_share_a_node_and_all_come_back_tied_by_row() {
        let (distinct, copies, dim) = (2000, 5, 32);
        let v = unit_vectors(distinct, dim, 3);
        // row r is distinct vector r % distinct: five copies of each, interleaved
        let rows: Vec<f32> = (0..distinct * copies).flat_map(|r| v[(r % distinct) * dim..(r % distinct + 1) * dim].to_vec()).collect();
        let mut graph = HnswGraph::build(&rows[..distinct * 3 * dim], dim, HnswConfig::default());
        graph.insert(&rows[distinct * 3 * dim..], dim);
        assert_eq!((graph.len(), graph.nodes()), (distinct * copies, distinct));
        let dir = tempfile::tempdir().unwrap();
        graph.save(dir.path(), "c").unwrap();
        let index = HnswIndex::load(dir.path(), "c", dim, HnswConfig::default()).unwrap();
        assert_eq!((index.len(), index.nodes()), (distinct * copies, distinct));
        let (mut found, mut total) = (0, 0);
        for query in unit_vectors(50, dim, 4).chunks(dim) {
            let truth: Vec<usize> = top_k(&rows, dim, query, 10, &|_| true).iter().map(|h| h.row).collect();
            let got: Vec<usize> = index.search(query, 10, None, None).iter().map(|h| h.row).collect();
            found += got.iter().filter(|r| truth.contains(r)).count();
            total += 10;
            // the best vector's five copies lead, by row
            let best = truth[0] % distinct;
            if got[0] % distinct == best {
                assert_eq!(&got[..5], &(0..copies).map(|c| best + c * distinct).collect::<Vec<_>>()[..]);
            }
            let odd = index.search(query, 10, None, Some(&|r| r % 2 == 1));
            assert!(odd.len() == 10 && odd.iter().all(|h| h.row % 2 == 1));
            let grown = graph.search(query, 10, None);
            assert_eq!(grown.len(), 10);
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn an_empty_graph_searches_to_nothing_and_survives_save_and_load() {
        let graph = HnswGraph::with_capacity(10, 4, HnswConfig::default());
        assert!(graph.freeze().search(&[1.0, 0.0, 0.0, 0.0], 3, None, None).is_empty());
        let dir = tempfile::tempdir().unwrap();
        graph.save(dir.path(), "e").unwrap();
        let loaded = HnswGraph::load(dir.path(), "e", 4, HnswConfig::default()).unwrap();
        assert!(loaded.is_empty());
    }
}
