//! Approximate nearest neighbours by inner product over normalised vectors: HNSW.
//!
//! [`HnswGraph`] is the graph while it grows (the private `hnsw` module builds it, in parallel);
//! it is written to one file and read back. [`HnswIndex`] is the same graph frozen for search
//! (the private `walk` module). Rows whose vectors are identical (an image indexed under several
//! ids, a caption shared by many items) share one node: a graph over many copies of one point fills
//! neighbour lists with the copies and cuts regions off, which cost a duplicate-heavy corpus a
//! tenth of its recall. A search finds nodes and returns every row of each.
//!
//! Node vectors are not written: they are rows of the index's vector store, which the file
//! names by row, so the graph file holds links only.

use crate::exact::{sort_hits, Hit, Rows};
use crate::hnsw::Builder;
use crate::store::Precision;
use crate::walk::{self, FlatGraph, Layers};
use crate::{IndexError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The graph's parameters (hnswlib's names: M, ef_construction, ef).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Links per node and layer (twice as many on layer 0).
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

/// Which node each row is, and each node's rows: a list threaded through the rows, kept up to
/// date as rows are appended, so neither a growing graph's search nor a freeze has to regroup
/// the rows.
#[derive(Debug, Clone, Default)]
struct Copies {
    row_node: Vec<u32>,
    /// Per node, its first and last row; per row, the next row of its node (`NONE` at the end).
    first_row: Vec<u32>,
    last_row: Vec<u32>,
    next_copy: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Copies {
    /// Appends a row of `node` (an existing node, or the next new one).
    fn push(&mut self, node: u32) {
        let row = self.row_node.len() as u32;
        self.row_node.push(node);
        self.next_copy.push(NONE);
        match self.first_row.get(node as usize) {
            Some(_) => {
                self.next_copy[self.last_row[node as usize] as usize] = row;
                self.last_row[node as usize] = row;
            }
            None => {
                debug_assert_eq!(node as usize, self.first_row.len(), "nodes are numbered in order");
                self.first_row.push(row);
                self.last_row.push(row);
            }
        }
    }

    fn nodes(&self) -> usize {
        self.first_row.len()
    }

    /// Node `n`'s rows, ascending.
    fn rows_of(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(self.first_row[n as usize]), |&r| Some(self.next_copy[r as usize]).filter(|&r| r != NONE))
    }
}

fn bits_key(v: &[f32]) -> u64 {
    // a hash of the bit patterns: equal vectors, equal keys (−0.0 and 0.0 differ, which only
    // costs a node)
    crate::checksum::xxh3_f32(v)
}

const MAGIC: &[u8; 8] = b"VLPHNSW1";

/// An HNSW graph that can grow: built, inserted into, written and read.
pub struct HnswGraph {
    graph: Builder,
    copies: Copies,
    /// Nodes by the bits of their vectors, for finding a new row's node.
    by_bits: HashMap<u64, Vec<u32>>,
    pub config: HnswConfig,
}

impl HnswGraph {
    /// Builds over `vectors` (`[rows, dim]`), inserting in parallel on rayon's threads.
    pub fn build(vectors: &[f32], dim: usize, config: HnswConfig) -> Self {
        let mut g = HnswGraph::new(dim, config);
        g.insert(vectors, dim);
        g
    }

    /// An empty graph to [`insert`](Self::insert) into.
    pub fn new(dim: usize, config: HnswConfig) -> Self {
        HnswGraph { graph: Builder::new(dim, config.m, config.ef_construction), copies: Copies::default(), by_bits: HashMap::new(), config }
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
        self.graph.nodes()
    }

    /// Appends `vectors`' rows, numbered on from [`len`](Self::len).
    pub fn insert(&mut self, vectors: &[f32], dim: usize) {
        assert_eq!(dim, self.graph.dim, "rows {dim} wide inserted into a graph {} wide", self.graph.dim);
        let existing = self.nodes();
        let mut fresh: Vec<f32> = Vec::new();
        for v in vectors.chunks(dim.max(1)) {
            let key = bits_key(v);
            let vector_of = |n: u32| {
                let n = n as usize;
                if n < existing {
                    self.graph.vector(n as u32)
                } else {
                    &fresh[(n - existing) * dim..(n - existing + 1) * dim]
                }
            };
            let node = match self.by_bits.get(&key).and_then(|ns| ns.iter().copied().find(|&n| vector_of(n) == v)) {
                Some(n) => n,
                None => {
                    let n = (existing + fresh.len() / dim.max(1)) as u32;
                    self.by_bits.entry(key).or_default().push(n);
                    fresh.extend_from_slice(v);
                    n
                }
            };
            self.copies.push(node);
        }
        self.graph.insert(fresh);
    }

    /// The `k` best rows, for a graph still growing; a frozen [`HnswIndex`] searches faster.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Vec<Hit> {
        let ef = ef.unwrap_or(self.config.ef_search).max(k);
        let nodes = walk::search(&self.graph, self.graph.entry(), query, ef, &|_| true);
        expand(&nodes, &self.copies, k, None)
    }

    /// Writes `path`: a header, each row's node, then the links. Vectors are not written (the
    /// caller keeps the rows; [`load`](Self::load) takes them back).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.graph.settle();
        let mut out = Vec::with_capacity(64 + 4 * self.len() + self.nodes() * (1 + 4 * 2 * self.config.m));
        out.extend_from_slice(MAGIC);
        let (entry, top) = self.graph.entry().map_or((u32::MAX, 0), |(e, t)| (e, t as u32));
        for x in [self.graph.dim as u64, self.config.m as u64, self.config.ef_construction as u64, self.len() as u64, self.nodes() as u64] {
            out.extend(x.to_le_bytes());
        }
        out.extend(entry.to_le_bytes());
        out.extend(top.to_le_bytes());
        out.extend(self.copies.row_node.iter().flat_map(|n| n.to_le_bytes()));
        self.graph.write_links(&mut out);
        std::fs::write(path, out).map_err(|e| IndexError::io(path, e))
    }

    /// Reads what [`save`](Self::save) wrote, for the rows `vectors` (`[rows, dim]`) it was
    /// built from. The caller has checked the file's checksum; the structure is checked here.
    pub fn load<'a>(path: &Path, vectors: impl Into<Rows<'a>>, dim: usize, config: HnswConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
        Self::from_bytes(&bytes, path, vectors, dim, config)
    }

    /// [`load`](Self::load) from bytes already read from `path`. Only the nodes' rows are read
    /// from `vectors` (widened when stored as f16).
    pub fn from_bytes<'a>(bytes: &[u8], path: &Path, vectors: impl Into<Rows<'a>>, dim: usize, config: HnswConfig) -> Result<Self> {
        let vectors = vectors.into();
        let stored = vectors.values() / dim.max(1);
        let what = path.display().to_string();
        let bad = |message: String| IndexError::Corrupt { path: what.clone(), message };
        let rest =
            bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| bad("not a vlp HNSW graph (bad magic), or from another version".into()))?;
        if rest.len() < 48 {
            return Err(bad("ends inside the header".into()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes")) as usize;
        let (file_dim, m, ef_c, rows, nodes) = (u64_at(0), u64_at(1), u64_at(2), u64_at(3), u64_at(4));
        let entry = u32::from_le_bytes(rest[40..44].try_into().expect("4 bytes"));
        let top = u32::from_le_bytes(rest[44..48].try_into().expect("4 bytes")) as usize;
        if file_dim != dim || m != config.m || ef_c != config.ef_construction {
            return Err(bad(format!(
                "width {file_dim}, M {m}, ef_construction {ef_c}; index.json says {dim}, {}, {}",
                config.m, config.ef_construction
            )));
        }
        if rows != stored || nodes > rows || rest.len() < 48 + 4 * rows {
            return Err(bad(format!("{rows} rows and {nodes} nodes, for {stored} stored rows")));
        }
        // nodes are numbered by their first row, as `insert` numbers them
        let mut copies = Copies::default();
        for (r, b) in rest[48..48 + 4 * rows].chunks_exact(4).enumerate() {
            let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if n as usize > copies.nodes() || n as usize >= nodes {
                return Err(bad(format!("row {r} is node {n}, with {} of {nodes} nodes seen", copies.nodes())));
            }
            copies.push(n);
        }
        if copies.nodes() != nodes {
            return Err(bad(format!("{} of {nodes} nodes have rows", copies.nodes())));
        }
        // each node's vector is its first row's
        let mut node_vectors = Vec::with_capacity(nodes * dim);
        let mut by_bits: HashMap<u64, Vec<u32>> = HashMap::new();
        for (n, &r) in copies.first_row.iter().enumerate() {
            vectors.extend_row(r as usize, dim, &mut node_vectors);
            let v = &node_vectors[n * dim..(n + 1) * dim];
            by_bits.entry(bits_key(v)).or_default().push(n as u32);
        }
        let entry = (nodes > 0).then_some((entry, top));
        let (graph, left) = Builder::read_links(dim, m, ef_c, node_vectors, entry, &rest[48 + 4 * rows..], &what)?;
        if !left.is_empty() {
            return Err(bad(format!("{} bytes after the last node's links", left.len())));
        }
        Ok(HnswGraph { graph, copies, by_bits, config })
    }

    /// The graph frozen for fast search, its node vectors kept at `precision` (at f32 its
    /// arrays move, nothing is copied).
    pub fn freeze(self, precision: Precision) -> HnswIndex {
        let dim = self.graph.dim;
        let (vectors, links, entry) = self.graph.into_parts();
        let (entry, top) = entry.unwrap_or((0, 0));
        HnswIndex { flat: FlatGraph::new(dim, vectors, precision, links, entry, top), copies: self.copies, config: self.config }
    }
}

/// A built HNSW graph, read-only, searched by the private `walk` module.
pub struct HnswIndex {
    flat: FlatGraph,
    copies: Copies,
    pub config: HnswConfig,
}

impl HnswIndex {
    /// Rows, copies included.
    pub fn len(&self) -> usize {
        self.copies.row_node.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Distinct vectors.
    pub fn nodes(&self) -> usize {
        self.flat.nodes()
    }

    /// The `k` best rows for `query`, among those `keep` accepts (filtered during the walk, so
    /// a selective filter still fills k). Rows sharing a vector tie; ties go by row.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>, keep: Option<&(dyn Fn(usize) -> bool + Sync)>) -> Vec<Hit> {
        let ef = ef.unwrap_or(self.config.ef_search).max(k);
        let nodes = match keep {
            None => self.flat.search(query, ef, &|_| true),
            Some(f) => self.flat.search(query, ef, &|n| self.copies.rows_of(n).any(|r| f(r as usize))),
        };
        expand(&nodes, &self.copies, k, keep)
    }
}

/// Rows of `nodes` (best first), those `keep` takes, until `k`.
fn expand(nodes: &[(u32, f32)], copies: &Copies, k: usize, keep: Option<&(dyn Fn(usize) -> bool + Sync)>) -> Vec<Hit> {
    let mut hits = Vec::with_capacity(k);
    for &(n, score) in nodes {
        // every row of a node scores the same, so the k-th node's copies are all taken and
        // the cut is made after sorting by row
        for r in copies.rows_of(n) {
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
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let row: Vec<f32> = (0..dim).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
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
        let mut graph = HnswGraph::build(&v, dim, HnswConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.hnsw");
        graph.save(&path).unwrap();
        let index = graph.freeze(Precision::F32);
        let loaded = HnswGraph::load(&path, &v, dim, HnswConfig::default()).unwrap().freeze(Precision::F32);
        // a cut anywhere is refused with the file's name, never a panic
        let bytes = std::fs::read(&path).unwrap();
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let e = HnswGraph::load(&path, &v, dim, HnswConfig::default()).err().unwrap_or_else(|| panic!("cut at {cut} accepted"));
            assert!(e.to_string().contains("t.hnsw"), "{e}");
        }
        let other = HnswConfig { m: 8, ..HnswConfig::default() };
        std::fs::write(&path, &bytes).unwrap();
        assert!(HnswGraph::load(&path, &v, dim, other).err().unwrap().to_string().contains("M 16"));
        let (mut found, mut total) = (0, 0);
        for query in q.chunks(dim) {
            let truth: Vec<usize> = top_k(&v, dim, query, 10, &|_| true).iter().map(|h| h.row).collect();
            let got = loaded.search(query, 10, Some(128), None);
            assert_eq!(
                got.iter().map(|h| h.row).collect::<Vec<_>>(),
                index.search(query, 10, Some(128), None).iter().map(|h| h.row).collect::<Vec<_>>()
            );
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
        let path = dir.path().join("c.hnsw");
        graph.save(&path).unwrap();
        let index = HnswGraph::load(&path, &rows, dim, HnswConfig::default()).unwrap().freeze(Precision::F32);
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
        let mut graph = HnswGraph::new(4, HnswConfig::default());
        assert!(graph.search(&[1.0, 0.0, 0.0, 0.0], 3, None).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.hnsw");
        graph.save(&path).unwrap();
        let loaded = HnswGraph::load(&path, Rows::F32(&[]), 4, HnswConfig::default()).unwrap();
        assert!(loaded.is_empty());
        assert!(loaded.freeze(Precision::F32).search(&[1.0, 0.0, 0.0, 0.0], 3, None, None).is_empty());
        // damage: every cut of the file is refused with its name, never a panic
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(HnswGraph::load(&path, Rows::F32(&[]), 4, HnswConfig::default()).err().unwrap().to_string().contains("e.hnsw"));
    }
}
