//! `y = x · W + b` in f32 for embedding on the CPU: a packed matrix product with the bias added
//! in its first pass, for x86-64 with AVX2 and FMA (elsewhere the caller keeps burn's matmul).
//!
//! Measured on the 2-core AMD EPYC (Zen 3) build machine at a ViT-B/32 block's shapes, batch 32
//! (`cargo run --release -p vlp-model --example vit_ops`, PyTorch's peer in
//! `benches/openclip/gemm_bench.py`): burn-flex's matmul (the `gemm` crate, with a fresh output
//! and the bias as a second pass) ran the MLP's `[1600, 768] · [768, 3072]` at 96–121 GFLOP/s,
//! PyTorch's MKL `addmm` at 120–150, this kernel at 135–160 with the weight packed on every call
//! (the machine's FMA peak is 200; its timings wander by ±10 % from minute to minute). It is the BLIS scheme: a 6 × 16 register tile (12
//! accumulators), `k` in blocks of `KC` so that a packed 16-column panel of `W` (16 KB) stays
//! in L1 while packed rows of `x` stream past it from L2, the output tile's earlier sum
//! prefetched while the next pass computes, row blocks shared among the threads.

use super::pack::packed;
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::ops::Range;

/// Rows of the register tile.
const MR: usize = 6;
/// Columns of the register tile: two 8-lane registers.
pub(super) const NR: usize = 16;
/// Depth of one pass: a `[KC, NR]` panel of `W` is 16 KB.
const KC: usize = 256;
/// Rows each thread task takes, about (its packed `x` block, `ROWS × KC`, stays in L2): tasks
/// split whole register tiles, so one may take up to `2 · MR` more.
const ROWS: usize = 128;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The right operand `W`, `[k, n]`: columns `cols` of a row-major `[k, ·]` matrix with row
/// stride `stride` (a weight stored `[in, out]`, or a column range of one, as attention's fused
/// `[w, 3w]`), or with `transposed`, rows `cols` of a row-major `[·, k]` matrix holding `Wᵀ`
/// (a convolution's `[out, in·kh·kw]` weight, a head's keys).
#[derive(Clone, Debug)]
pub struct Weight<'a> {
    pub values: &'a [f32],
    pub stride: usize,
    pub cols: Range<usize>,
    pub transposed: bool,
    /// The tensor whose storage `values` is, when it is a model's parameter: its packed form may
    /// then be kept between products ([`super::pack::keep_packed_weights`]).
    pub owner: Option<&'a FlexTensor>,
}

impl<'a> Weight<'a> {
    /// All of a row-major `[k, n]` matrix.
    pub fn whole(values: &'a [f32], n: usize) -> Self {
        Weight { values, stride: n, cols: 0..n, transposed: false, owner: None }
    }

    /// All of `W` from a row-major `[n, k]` matrix holding `Wᵀ`.
    pub fn transposed(values: &'a [f32], k: usize) -> Self {
        Weight { values, stride: k, cols: 0..values.len() / k.max(1), transposed: true, owner: None }
    }

    /// This weight, its values the storage of `owner` (a model's parameter).
    pub fn owned_by(self, owner: &'a FlexTensor) -> Self {
        Weight { owner: Some(owner), ..self }
    }

    /// Whether `values` holds every element of a `[k, cols.len()]` W.
    fn fits(&self, k: usize) -> bool {
        if k == 0 || self.cols.is_empty() {
            return true;
        }
        match self.transposed {
            false => self.cols.end <= self.stride && self.values.len() >= (k - 1) * self.stride + self.cols.end,
            true => k <= self.stride && self.values.len() >= (self.cols.end - 1) * self.stride + k,
        }
    }
}

/// `x · w (+ bias)`: `x` is row-major `[m, k]`, the result row-major `[m, n]` with
/// `n = w.cols.len()`; `bias`, when given, has `n` values. `None` where [`available`] is false.
///
/// Panics when the shapes disagree (callers pass tensors whose shapes they have checked).
pub fn matmul(x: &[f32], m: usize, k: usize, w: Weight, bias: Option<&[f32]>) -> Option<Vec<f32>> {
    matmul_fused(x, m, k, w, Fused { bias, ..Fused::default() })
}

/// An elementwise function applied to a product's rows in place, as each thread finishes them
/// (while they are still in its cache): the activation after an MLP's first layer.
pub type Epilogue<'a> = &'a (dyn Fn(&mut [f32]) + Sync);

/// What a product adds to `x · W`, and does after, in the same pass over its rows.
#[derive(Clone, Copy, Default)]
pub struct Fused<'a> {
    /// `[n]`, added to every row: the layer's bias.
    pub bias: Option<&'a [f32]>,
    /// `[m, n]` row-major, added to the product: a transformer block's skip connection (each
    /// thread copies its rows into the output before the product adds to them, instead of a
    /// separate add on one core afterwards).
    pub residual: Option<&'a [f32]>,
    /// Applied to the rows last, in place.
    pub then: Option<Epilogue<'a>>,
}

/// [`matmul`] with a bias, a residual and an epilogue fused in: `then(x · w + bias + residual)`.
pub fn matmul_fused(x: &[f32], m: usize, k: usize, w: Weight, fused: Fused) -> Option<Vec<f32>> {
    if !available() {
        return None;
    }
    let Fused { bias, residual, then } = fused;
    let n = w.cols.len();
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert!(w.fits(k), "w does not hold [{k}, {}]", w.cols.len());
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "bias is not [{n}]");
    }
    if let Some(r) = residual {
        assert_eq!(r.len(), m * n, "residual is not [{m}, {n}]");
    }
    if m == 0 || n == 0 || k == 0 {
        // no depth: the bias and the residual alone
        let mut out: Vec<f32> = match bias {
            Some(b) => b.iter().copied().cycle().take(m * n).collect(),
            None => vec![0.0; m * n],
        };
        if let Some(r) = residual {
            out.iter_mut().zip(r).for_each(|(o, r)| *o += r);
        }
        if let Some(then) = then {
            then(&mut out);
        }
        return Some(out);
    }
    // every element is stored by the first depth pass (or the residual's copy) before anything
    // reads it (and before `set_len` below), so the buffer is not zeroed first (perf put memset
    // at 2 % of a ViT-B/32 batch before; this buffer was part of it)
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let panels = packed(&w, k, true);
    // the bias padded to whole panels, so the kernel can read 16 values for the last one
    let bias: Option<Vec<f32>> = bias.map(|b| {
        let mut padded = b.to_vec();
        padded.resize(n.div_ceil(NR) * NR, 0.0);
        padded
    });
    let threads = rayon::current_num_threads().max(1);
    let tasks = threads * m.div_ceil(threads * ROWS);
    // tasks split whole register tiles, so only the last task runs a part-filled one (splitting
    // rows, ViT-B/32's 1600 went out as 114 and 115: 270 tile passes for 267 tiles' work)
    let tiles = m.div_ceil(MR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let (r0, r1) = ((t * tiles / tasks * MR).min(m), ((t + 1) * tiles / tasks * MR).min(m));
        let rows = r1 - r0;
        if rows == 0 {
            return;
        }
        // SAFETY: tasks cover disjoint row ranges of `out`; `available()` checked the CPU.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if let Some(r) = residual {
                std::ptr::copy_nonoverlapping(r[r0 * n..r1 * n].as_ptr(), out_ptr.at(r0 * n), rows * n);
            }
            let start = Start { bias: bias.as_deref(), accumulate: residual.is_some() };
            avx2::rows(&x[r0 * k..r1 * k], k, rows, k, &panels, n, start, out_ptr.at(r0 * n), n);
            if let Some(then) = then {
                then(std::slice::from_raw_parts_mut(out_ptr.at(r0 * n), rows * n));
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, out_ptr);
    });
    // SAFETY: the tasks stored all `m · n` values (their row ranges cover 0..m; each stores
    // every column of its rows in the first pass, or copied the residual's)
    unsafe { out.set_len(m * n) };
    Some(out)
}

/// Where a product's first depth pass starts: from the bias (or zero), and, with `accumulate`,
/// adding what the output already holds.
#[derive(Clone, Copy)]
struct Start<'a> {
    bias: Option<&'a [f32]>,
    accumulate: bool,
}

/// `out[i · ldc + j] = Σ_p x[i · lda + p] · w[p, j]` for `i < m`, `j < w.cols.len()`, `p < k`,
/// on the calling thread: the small products of [`super::self_attention`], one per head. `x` and
/// `out` may be strided views (a head's queries inside the fused projection, its slot of the
/// output). Panics where [`available`] is false or a slice is too short.
pub(super) fn matmul_strided(x: &[f32], lda: usize, m: usize, k: usize, w: &Weight, out: &mut [f32], ldc: usize) {
    assert!(available(), "matmul_strided without AVX2 and FMA");
    let n = w.cols.len();
    if m == 0 || n == 0 {
        return;
    }
    assert!(x.len() >= (m - 1) * lda + k && out.len() >= (m - 1) * ldc + n, "x or out too short for {m} rows");
    assert!(w.fits(k), "w does not hold [{k}, {n}]");
    if k == 0 {
        (0..m).for_each(|i| out[i * ldc..i * ldc + n].fill(0.0));
        return;
    }
    let panels = packed(w, k, false);
    // SAFETY: the CPU has AVX2 and FMA; the rows written lie inside `out` (checked above).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::rows(x, lda, m, k, &panels, n, Start { bias: None, accumulate: false }, out.as_mut_ptr(), ldc)
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer `offset` values on (a method, so that closures capture the `SendPtr`).
    ///
    /// # Safety
    /// `offset` lies inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: used only to hand each task its own rows of one output buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::pack::Line;
    use super::{Start, KC, MR, NR};
    use std::arch::x86_64::*;

    /// `out[rows, n] = x[rows, k] · W (+ bias) (+ out, with start.accumulate)` for one task's
    /// rows, `x` with row stride `lda`, `out` with row stride `ldc`; `panels` is W from
    /// [`super::super::pack::pack_weight`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)] // the operands of a strided product
    pub(super) unsafe fn rows(
        x: &[f32],
        lda: usize,
        rows: usize,
        k: usize,
        panels: &[Line],
        n: usize,
        start: Start,
        out: *mut f32,
        ldc: usize,
    ) {
        let tiles = rows.div_ceil(MR);
        let mut packed_x = vec![0f32; tiles * MR * KC.min(k)];
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            pack_rows(x, lda, rows, pc, kc, &mut packed_x[..tiles * MR * kc]);
            let first = pc == 0;
            let accumulate = !first || start.accumulate;
            for j in 0..n.div_ceil(NR) {
                let panel = panels.as_ptr().add(j * k + pc) as *const f32;
                let bias = start.bias.filter(|_| first).map(|b| b.as_ptr().add(j * NR));
                let width = NR.min(n - j * NR);
                for i in 0..tiles {
                    let tile_rows = MR.min(rows - i * MR);
                    let xs = packed_x.as_ptr().add(i * MR * kc);
                    let c = out.add(i * MR * ldc + j * NR);
                    if width == NR {
                        tile(tile_rows, kc, xs, panel, c, ldc, bias, accumulate);
                    } else {
                        // the last, narrower panel: through a full-width scratch tile
                        let mut scratch = [0f32; MR * NR];
                        for r in 0..tile_rows {
                            std::ptr::copy_nonoverlapping(c.add(r * ldc), scratch.as_mut_ptr().add(r * NR), width);
                        }
                        tile(tile_rows, kc, xs, panel, scratch.as_mut_ptr(), NR, bias, accumulate);
                        for r in 0..tile_rows {
                            std::ptr::copy_nonoverlapping(scratch.as_ptr().add(r * NR), c.add(r * ldc), width);
                        }
                    }
                }
            }
            pc += kc;
        }
    }

    /// Columns `pc..pc + kc` of `x`'s rows as tiles of [`MR`] rows, each `[kc, MR]` (the rows of
    /// one depth step side by side; zeros past the last row).
    fn pack_rows(x: &[f32], lda: usize, rows: usize, pc: usize, kc: usize, packed: &mut [f32]) {
        for (i, tile) in packed.chunks_exact_mut(MR * kc).enumerate() {
            for r in 0..MR {
                let row = i * MR + r;
                if row < rows {
                    let src = &x[row * lda + pc..row * lda + pc + kc];
                    for (p, &v) in src.iter().enumerate() {
                        tile[p * MR + r] = v;
                    }
                } else {
                    for p in 0..kc {
                        tile[p * MR + r] = 0.0;
                    }
                }
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the operands of one register tile
    unsafe fn tile(
        rows: usize,
        kc: usize,
        xs: *const f32,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: Option<*const f32>,
        accumulate: bool,
    ) {
        match rows {
            6 => kernel::<6>(kc, xs, panel, c, ldc, bias, accumulate),
            5 => kernel::<5>(kc, xs, panel, c, ldc, bias, accumulate),
            4 => kernel::<4>(kc, xs, panel, c, ldc, bias, accumulate),
            3 => kernel::<3>(kc, xs, panel, c, ldc, bias, accumulate),
            2 => kernel::<2>(kc, xs, panel, c, ldc, bias, accumulate),
            _ => kernel::<1>(kc, xs, panel, c, ldc, bias, accumulate),
        }
    }

    /// One `[R, 16]` tile of the output over depth `kc`: starts from the bias (given in the first
    /// pass) or zero, and with `accumulate` adds what the tile holds (earlier passes' sums or the
    /// residual, whose lines it prefetches while it computes).
    #[inline(always)]
    unsafe fn kernel<const R: usize>(
        kc: usize,
        xs: *const f32,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        bias: Option<*const f32>,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if let Some(b) = bias {
            acc = [[_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8))]; R];
        }
        if accumulate {
            for r in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + NR - 1) as *const i8);
            }
        }
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(panel.add(p * NR));
            let b1 = _mm256_loadu_ps(panel.add(p * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = _mm256_broadcast_ss(&*xs.add(p * MR + r));
                acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * ldc);
            let (mut lo, mut hi) = (acc[0], acc[1]);
            if accumulate {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(row.add(8)));
            }
            _mm256_storeu_ps(row, lo);
            _mm256_storeu_ps(row.add(8), hi);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the product summed in f64, over shapes that leave partial tiles, panels and
    //! depth blocks, with and without a bias and a column range.

    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(m: usize, k: usize, n_total: usize, cols: Range<usize>, with_bias: bool) {
        let mut rng = ChaCha8Rng::seed_from_u64((m * 31 + k * 7 + n_total) as u64);
        let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let w: Vec<f32> = (0..k * n_total).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let n = cols.len();
        let bias: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let weight = Weight { values: &w, stride: n_total, cols: cols.clone(), transposed: false, owner: None };
        let Some(got) = matmul(&x, m, k, weight, with_bias.then_some(&bias[..])) else {
            eprintln!("no AVX2/FMA here: nothing to check");
            return;
        };
        // the same W stored transposed, `[n_total, k]`
        let w_t: Vec<f32> = (0..n_total * k).map(|i| w[(i % k) * n_total + i / k]).collect();
        let transposed = Weight { values: &w_t, stride: k, cols: cols.clone(), transposed: true, owner: None };
        assert_eq!(matmul(&x, m, k, transposed, with_bias.then_some(&bias[..])), Some(got.clone()));
        // a residual added in: the same sums plus it (up to the order of the additions)
        let residual: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let weight = Weight { values: &w, stride: n_total, cols: cols.clone(), transposed: false, owner: None };
        let fused = Fused { bias: with_bias.then_some(&bias[..]), residual: Some(&residual), then: None };
        let with_residual = matmul_fused(&x, m, k, weight, fused).expect("available");
        for ((g, r), want) in with_residual.iter().zip(&residual).zip(&got) {
            assert!((g - r - want).abs() <= 1e-5 * (k as f32).sqrt().max(1.0), "[{m}, {k}]·[{k}, {n}] + residual: {g} - {r} vs {want}");
        }
        for i in 0..m {
            for j in 0..n {
                let mut want = if with_bias { bias[j] as f64 } else { 0.0 };
                for p in 0..k {
                    want += x[i * k + p] as f64 * w[p * n_total + cols.start + j] as f64;
                }
                let g = got[i * n + j] as f64;
                assert!((g - want).abs() <= 1e-5 * (k as f64).sqrt().max(1.0), "[{m}, {k}]·[{k}, {n}] at ({i}, {j}): {g} vs {want}");
            }
        }
    }

    #[test]
    fn matches_f64_products() {
        check(1, 1, 1, 0..1, false);
        check(7, 3, 16, 0..16, true);
        check(13, 300, 40, 0..40, true); // partial tiles, a second depth pass, a narrow last panel
        check(64, 513, 48, 16..40, true); // a column range (attention's third of the fused weight)
        check(300, 64, 33, 0..33, false); // several tasks
        check(517, 20, 17, 0..17, true); // several tasks, the last with a part-filled tile
        check(0, 5, 8, 0..8, true);
        check(4, 0, 8, 0..8, true); // no depth: the bias
    }
}
