//! Approximate nearest neighbours by inner product: `hnsw_rs` over normalised vectors.
//!
//! `hnsw_rs` reads its own files without checking them, so [`crate::catalog`] records a checksum
//! of each file it dumps and checks it before handing them back here.

use crate::exact::{dot, sort_hits, Hit};
use crate::{IndexError, Result};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{Distance, Hnsw};
use serde::{Deserialize, Serialize};
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

pub struct HnswIndex {
    graph: Hnsw<'static, f32, InnerProduct>,
    pub config: HnswConfig,
}

const MAX_LAYERS: usize = 16;

impl HnswIndex {
    /// Builds over `vectors` (`[rows, dim]`), inserting in parallel on rayon's threads.
    pub fn build(vectors: &[f32], dim: usize, config: HnswConfig) -> Self {
        let rows = vectors.len() / dim.max(1);
        let graph = Hnsw::new(config.m.clamp(2, 255), rows.max(1), MAX_LAYERS, config.ef_construction.max(config.m), InnerProduct);
        let items: Vec<(&[f32], usize)> = (0..rows).map(|r| (&vectors[r * dim..(r + 1) * dim], r)).collect();
        for chunk in items.chunks(100_000) {
            graph.parallel_insert_slice(&chunk.to_vec());
        }
        HnswIndex { graph, config }
    }

    /// An empty index to [`insert`](Self::insert) into; `capacity` is a sizing hint, not a limit.
    pub fn with_capacity(capacity: usize, config: HnswConfig) -> Self {
        let graph = Hnsw::new(config.m.clamp(2, 255), capacity.max(1), MAX_LAYERS, config.ef_construction.max(config.m), InnerProduct);
        HnswIndex { graph, config }
    }

    pub fn len(&self) -> usize {
        self.graph.get_nb_point()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends rows numbered from `first_row`.
    pub fn insert(&self, vectors: &[f32], dim: usize, first_row: usize) {
        let items: Vec<(&[f32], usize)> = vectors.chunks(dim).enumerate().map(|(i, v)| (v, first_row + i)).collect();
        self.graph.parallel_insert_slice(&items);
    }

    /// Writes `DIR/BASENAME.hnsw.graph` and `.hnsw.data`.
    pub fn save(&self, dir: &Path, basename: &str) -> Result<()> {
        self.graph
            .file_dump(dir, basename)
            .map(|_| ())
            .map_err(|e| IndexError::Invalid(format!("{}: writing the HNSW graph: {e}", dir.display())))
    }

    /// Loads what [`save`](Self::save) wrote. The caller has checked the files' checksums.
    pub fn load(dir: &Path, basename: &str, config: HnswConfig) -> Result<Self> {
        // The graph borrows its loader for as long as it lives; an index is opened once per
        // process, so the loader is leaked rather than tied up in a self-referential struct.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let graph = io.load_hnsw::<f32, InnerProduct>().map_err(|e| IndexError::Corrupt {
            path: dir.join(format!("{basename}.hnsw.graph")).display().to_string(),
            message: e.to_string(),
        })?;
        Ok(HnswIndex { graph, config })
    }

    /// The `k` best rows for `query`, among those `keep` accepts (filtered during the walk, so
    /// a selective filter still fills k).
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>, keep: Option<&(dyn Fn(usize) -> bool + Sync)>) -> Vec<Hit> {
        let ef = ef.unwrap_or(self.config.ef_search).max(k);
        let found = match keep {
            None => self.graph.search(query, k, ef),
            Some(f) => {
                let filter = |id: &usize| f(*id);
                self.graph.search_filter(query, k, ef, Some(&filter))
            }
        };
        let mut hits: Vec<Hit> = found.into_iter().map(|n| Hit { row: n.d_id, score: 1.0 - n.distance }).collect();
        sort_hits(&mut hits);
        hits
    }
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
        let index = HnswIndex::build(&v, dim, HnswConfig::default());
        let dir = tempfile::tempdir().unwrap();
        index.save(dir.path(), "t").unwrap();
        let loaded = HnswIndex::load(dir.path(), "t", HnswConfig::default()).unwrap();
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
}
