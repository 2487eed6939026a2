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
        if simd().avx2_fma {
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

/// What the CPU offers beyond x86-64's baseline, checked once.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Simd {
    avx2_fma: bool,
    /// Also F16C: eight halves widened in one instruction.
    f16c: bool,
}

#[cfg(target_arch = "x86_64")]
fn simd() -> Simd {
    use std::sync::atomic::{AtomicU8, Ordering};
    static KNOWN: AtomicU8 = AtomicU8::new(0); // 0 unknown, else 1 | avx2_fma << 1 | f16c << 2
    let mut k = KNOWN.load(Ordering::Relaxed);
    if k == 0 {
        let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let f16c = avx2_fma && is_x86_feature_detected!("f16c");
        k = 1 | (avx2_fma as u8) << 1 | (f16c as u8) << 2;
        KNOWN.store(k, Ordering::Relaxed);
    }
    Simd { avx2_fma: k & 2 != 0, f16c: k & 4 != 0 }
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
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), s1);
        i += 16;
    }
    if i + 8 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
        i += 8;
    }
    let mut total = sum_lanes(_mm256_add_ps(s0, s1));
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lanes(s: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let quad = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
}

/// The inner product of an f32 query with a row stored as f16 bits, widened as it is read.
pub fn dot_f16(a: &[f32], b: &[u16]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if simd().f16c {
            // SAFETY: the CPU was checked for all three features
            return unsafe { dot_f16_avx2(a, b) };
        }
    }
    dot_f16_portable(a, b)
}

/// Eight f16 values at `p`, widened.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn half8(p: *const u16) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

fn dot_f16_portable(a: &[f32], b: &[u16]) -> f32 {
    a.iter().zip(b).map(|(x, h)| x * half::f16::from_bits(*h).to_f32()).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_avx2(a: &[f32], b: &[u16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), half8(pb.add(i)), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), half8(pb.add(i + 8)), s1);
        i += 16;
    }
    if i + 8 <= n {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), half8(pb.add(i)), s0);
        i += 8;
    }
    let mut total = sum_lanes(_mm256_add_ps(s0, s1));
    while i < n {
        total += *pa.add(i) * half::f16::from_bits(*pb.add(i)).to_f32();
        i += 1;
    }
    total
}

/// Vectors as a store holds them, `[rows, dim]` row-major: f32, or f16 bits scored without
/// widening the whole table.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
}

impl<'a> From<&'a [f32]> for Rows<'a> {
    fn from(v: &'a [f32]) -> Self {
        Rows::F32(v)
    }
}

impl<'a> From<&'a Vec<f32>> for Rows<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        Rows::F32(v)
    }
}

impl Rows<'_> {
    /// Values in all (`rows × dim`).
    pub fn values(&self) -> usize {
        match self {
            Rows::F32(v) => v.len(),
            Rows::F16(v) => v.len(),
        }
    }

    /// Appends row `r` (`dim` wide), as f32, to `out`.
    pub fn extend_row(&self, r: usize, dim: usize, out: &mut Vec<f32>) {
        match self {
            Rows::F32(v) => out.extend_from_slice(&v[r * dim..(r + 1) * dim]),
            Rows::F16(v) => out.extend(v[r * dim..(r + 1) * dim].iter().map(|h| half::f16::from_bits(*h).to_f32())),
        }
    }

    /// The inner product of `query` with row `r`.
    #[inline]
    pub fn score(&self, query: &[f32], r: usize) -> f32 {
        let d = query.len();
        match self {
            Rows::F32(v) => dot(query, &v[r * d..(r + 1) * d]),
            Rows::F16(v) => dot_f16(query, &v[r * d..(r + 1) * d]),
        }
    }
}

/// Best first; ties by row ascending, so results are stable.
pub fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
}

/// The `k` rows of `rows` (`[rows, dim]`) with the largest inner product with `query`,
/// among those `keep` accepts.
pub fn top_k<'a>(rows: impl Into<Rows<'a>>, dim: usize, query: &[f32], k: usize, keep: &(dyn Fn(usize) -> bool + Sync)) -> Vec<Hit> {
    let rows = rows.into();
    debug_assert_eq!(query.len(), dim);
    let n = rows.values() / dim.max(1);
    let chunk = 4096;
    let mut partial: Vec<Hit> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .flat_map_iter(|c| {
            let mut hits: Vec<Hit> =
                (c * chunk..((c + 1) * chunk).min(n)).filter(|&r| keep(r)).map(|r| Hit { row: r, score: rows.score(query, r) }).collect();
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
        // every length through the wide, the eight-lane and the scalar tails
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "n {n}");
            assert!((dot_portable(&a, &b) as f64 - want).abs() < 1e-4, "n {n}");
            // the f16 path scores the rounded values: against the same sum in f64
            let h: Vec<u16> = b.iter().map(|x| half::f16::from_f32(*x).to_bits()).collect();
            let want_h: f64 = a.iter().zip(&h).map(|(x, y)| *x as f64 * half::f16::from_bits(*y).to_f32() as f64).sum();
            assert!((dot_f16(&a, &h) as f64 - want_h).abs() < 1e-4, "n {n}");
            assert!((dot_f16_portable(&a, &h) as f64 - want_h).abs() < 1e-4, "n {n}");
        }
    }
}
