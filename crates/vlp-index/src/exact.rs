//! Brute-force inner-product search: the answer for small corpora, and the ground truth that
//! HNSW's recall is measured against.

use rayon::prelude::*;

/// One result: the row and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// The inner product. On x86-64 with AVX2 and FMA (checked once, at run time) it runs eight lanes
/// wide; elsewhere four accumulators let the compiler vectorise. Every caller gets the same
/// function, so exact search and HNSW agree on every score to the last bit (ties are compared).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU was checked for both features
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
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

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes
    match KNOWN.load(Ordering::Relaxed) {
        0 => {
            let yes = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            KNOWN.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        k => k == 2,
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        s1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            s1,
        );
        i += 16;
    }
    if i + 8 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        i += 8;
    }
    let s = _mm256_add_ps(s0, s1);
    let quad = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
    let mut total = _mm_cvtss_f32(one);
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

/// Best first; ties by row ascending, so results are stable.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
}

/// The `k` rows of `vectors` (`[rows, dim]`) with the largest inner product with `query`,
/// among those `keep` accepts.
pub fn top_k(
    vectors: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Hit> {
    let rows = vectors.len() / dim.max(1);
    let chunk = 4096;
    let mut partial: Vec<Hit> = (0..rows.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut hits: Vec<Hit> = (c * chunk..((c + 1) * chunk).min(rows))
                .filter(|&r| keep(r))
                .map(|r| Hit {
                    row: r,
                    score: dot(query, &vectors[r * dim..(r + 1) * dim]),
                })
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
        let mut naive: Vec<Hit> = (0..10_000)
            .map(|r| Hit {
                row: r,
                score: v[r * 3],
            })
            .collect();
        sort_hits(&mut naive);
        assert_eq!(all, naive[..5]);
        let even = top_k(&v, dim, &q, 5, &|r| r % 2 == 0);
        assert!(even.iter().all(|h| h.row % 2 == 0));
        assert_eq!(
            dot(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 1.0, 1.0, 1.0, 2.0]),
            20.0
        );
        // every length through the wide, the eight-lane and the scalar tails
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n {n}");
            assert!((dot_portable(&a, &b) as f64 - want).abs() < 1e-4, "n {n}");
        }
    }
}
