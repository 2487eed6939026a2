//! Brute-force inner-product search: the answer for small corpora, and the ground truth that
//! HNSW's recall is measured against.

use rayon::prelude::*;

/// One result: the row and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // four accumulators let the compiler vectorise without reassociating one sum
    let mut acc = [0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// Best first; ties by row ascending, so results are stable.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
}

/// The `k` rows of `vectors` (`[rows, dim]`) with the largest inner product with `query`,
/// among those `keep` accepts.
pub fn top_k(vectors: &[f32], dim: usize, query: &[f32], k: usize, keep: &(dyn Fn(usize) -> bool + Sync)) -> Vec<Hit> {
    let rows = vectors.len() / dim.max(1);
    let chunk = 4096;
    let mut partial: Vec<Hit> = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut hits: Vec<Hit> = (c * chunk..((c + 1) * chunk).min(rows))
                .filter(|&r| keep(r))
                .map(|r| Hit { row: r, score: dot(query, &vectors[r * dim..(r + 1) * dim]) })
                .collect();
            sort_hits(&mut hits);
            hits.truncate(k);
            hits
        })
        .collect();
    sort_hits(&mut partial);
    partial.truncate(k);
    partial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_best_rows_in_order_and_honours_the_filter() {
        let dim = 3;
        let mut v = Vec::new();
        for i in 0..10_000 {
            let x = (i as f32 * 0.37).sin();
            v.extend([x, 1.0 - x.abs(), 0.5]);
        }
        let q = [1.0, 0.0, 0.0];
        let all = top_k(&v, dim, &q, 5, &|_| true);
        let mut naive: Vec<Hit> = (0..10_000).map(|r| Hit { row: r, score: v[r * 3] }).collect();
        sort_hits(&mut naive);
        assert_eq!(all, naive[..5]);
        let even = top_k(&v, dim, &q, 5, &|r| r % 2 == 0);
        assert!(even.iter().all(|h| h.row % 2 == 0));
        assert_eq!(dot(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 1.0, 1.0, 1.0, 2.0]), 20.0);
    }
}
