//! Multi-head self-attention for embedding on the CPU, from the fused QKV projection to the output
//! projection, with the heads read and written in place.
//!
//! Measured on the 2-core build machine, one ViT-B/32 block at batch 32 (`[32, 50, 768]`, 12
//! heads; `cargo run --release -p vlp-model --example vit_ops`): burn-flex's attention op took
//! 13–16 ms for 0.25 GFLOP (two `gemm` calls per head and batch row, each mostly packing for a
//! 50 × 64 product), the three q/k/v products 20–22 ms each with a bias pass apiece, and the
//! head swaps before and after it two more copies. Here one [`super::gemm`] product makes q, k
//! and v together; per batch row and head, the scores are one small product of the queries by
//! the keys, both read where they lie in it, the softmax a vectorised pass, and the output one
//! product written straight into the head's columns: 5.7–7.3 ms for the attention.

use super::flex::{flex_f32, flex_result, values};
use super::gemm::{self, Fused, Weight};
use super::linear::{flex_parameters, takes_kernel};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The block of [`crate::attention::SelfAttention`] through [`self_attention`] when `B` is Flex,
/// the tensors f32, no bf16 scope open and the CPU has the kernel; `None` otherwise (the caller
/// runs burn's ops). `x`: `[batch, tokens, width]`; `pad`: `[batch, tokens]`, true at padding;
/// `residual`, `[batch, tokens, width]`, is added to the result when given.
pub(crate) fn flex_block<B: Backend>(
    x: &Tensor<B, 3>,
    qkv: &Linear<B>,
    out: &Linear<B>,
    heads: usize,
    pad: Option<&Tensor<B, 2, Bool>>,
    causal: bool,
    residual: Option<&Tensor<B, 3>>,
) -> Option<Tensor<B, 3>> {
    let dims = x.dims();
    if !takes_kernel(dims[0] * dims[1]) {
        return None;
    }
    let x = flex_f32(x.clone())?;
    let residual = match residual {
        Some(r) => Some(flex_f32(r.clone())?),
        None => None,
    };
    let (qkv, out) = (flex_parameters(&qkv.weight, &qkv.bias)?, flex_parameters(&out.weight, &out.bias)?);
    // through integers: a backend may store a bool tensor as bytes or as native bools
    let pad: Option<Vec<bool>> = pad.map(|p| p.clone().int().into_data().iter::<i64>().map(|v| v != 0).collect());
    let weights = Weights {
        qkv: Weight::whole(values(&qkv.0), 3 * dims[2]).owned_by(&qkv.0),
        qkv_bias: qkv.1.as_ref().map(values),
        out: Weight::whole(values(&out.0), dims[2]).owned_by(&out.0),
        out_bias: out.1.as_ref().map(values),
        heads,
    };
    let y = self_attention(values(&x), dims, &weights, pad.as_deref(), causal, residual.as_ref().map(values))?;
    Some(flex_result(y, dims))
}

/// Softmax attention of every head of every batch row.
///
/// `qkv`: `[batch · tokens, 3 · width]`, each row one token's queries, keys and values, each of
/// those `[heads, head_dim]`. `pad`: `[batch · tokens]`, true where a key is padding. With
/// `causal`, query `i` sees keys `0..=i`. Returns `[batch · tokens, width]`, the heads side by side
/// (a query that may see no key gets zeros). The scale is `1/√head_dim`. Panics where
/// [`gemm::available`] is false.
pub fn attend(qkv: &[f32], batch: usize, tokens: usize, heads: usize, head_dim: usize, pad: Option<&[bool]>, causal: bool) -> Vec<f32> {
    assert!(gemm::available(), "attend without AVX2 and FMA");
    let width = heads * head_dim;
    assert_eq!(qkv.len(), batch * tokens * 3 * width, "qkv is not [{batch}·{tokens}, 3·{width}]");
    if let Some(pad) = pad {
        assert_eq!(pad.len(), batch * tokens, "pad is not [{batch}·{tokens}]");
    }
    let len = batch * tokens * width;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    // each task zeroes its own rows, in its cache, rather than the calling thread all of them
    // while the pool waits
    out.spare_capacity_mut()[..len].par_chunks_mut(tokens * width).enumerate().for_each(|(b, out)| {
        out.fill(MaybeUninit::new(0.0));
        // SAFETY: every element was just written
        let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
        let rows = &qkv[b * tokens * 3 * width..(b + 1) * tokens * 3 * width];
        let pad = pad.map(|p| &p[b * tokens..(b + 1) * tokens]);
        let shape = Shape { tokens, heads, head_dim };
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            batch_row_avx2(rows, shape, pad, causal, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        batch_row(rows, shape, pad, causal, out);
    });
    // SAFETY: the chunks cover all `len` values and each was written
    unsafe { out.set_len(len) };
    out
}

/// The weights of one [`crate::attention::SelfAttention`] block, row-major `[in, out]`.
#[derive(Clone, Debug)]
pub struct Weights<'a> {
    /// `[width, 3·width]`: queries, keys and values side by side.
    pub qkv: Weight<'a>,
    pub qkv_bias: Option<&'a [f32]>,
    /// `[width, width]`.
    pub out: Weight<'a>,
    pub out_bias: Option<&'a [f32]>,
    pub heads: usize,
}

/// The whole block on `x`, `[batch, tokens, width]` as `[batch·tokens, width]` rows: the fused
/// projection, [`attend`], the output projection (plus `residual`, laid out as `x`, when
/// given). `None` where [`gemm::available`] is false.
pub fn self_attention(
    x: &[f32],
    [batch, tokens, width]: [usize; 3],
    weights: &Weights,
    pad: Option<&[bool]>,
    causal: bool,
    residual: Option<&[f32]>,
) -> Option<Vec<f32>> {
    let rows = batch * tokens;
    let fused = gemm::matmul(x, rows, width, weights.qkv.clone(), weights.qkv_bias)?;
    let context = attend(&fused, batch, tokens, weights.heads, width / weights.heads, pad, causal);
    gemm::matmul_fused(&context, rows, width, weights.out.clone(), Fused { bias: weights.out_bias, residual, then: None })
}

#[derive(Clone, Copy)]
struct Shape {
    tokens: usize,
    heads: usize,
    head_dim: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn batch_row_avx2(rows: &[f32], shape: Shape, pad: Option<&[bool]>, causal: bool, out: &mut [f32]) {
    batch_row(rows, shape, pad, causal, out)
}

/// One batch row: `rows` is its `[tokens, 3·width]` slice of `qkv`, `out` its `[tokens, width]`.
/// Per head, the scores are one small product of its queries by its keys (both read in place),
/// and the output one product of the probabilities by its values (read in place),
/// written into the head's columns of `out`.
#[inline(always)]
fn batch_row(rows: &[f32], Shape { tokens, heads, head_dim }: Shape, pad: Option<&[bool]>, causal: bool, out: &mut [f32]) {
    let width = heads * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut scores = vec![0f32; tokens * tokens];
    for h in 0..heads {
        // the head's keys, `[tokens, head_dim]` in place: W = keysᵀ
        let keys = Weight { values: &rows[width + h * head_dim..], stride: 3 * width, cols: 0..tokens, transposed: true, owner: None };
        gemm::matmul_strided(&rows[h * head_dim..], 3 * width, tokens, head_dim, &keys, &mut scores, tokens);
        for (i, row) in scores.chunks_exact_mut(tokens).enumerate() {
            softmax(row, |j| pad.is_some_and(|p| p[j]) || (causal && j > i), scale);
        }
        let values = Weight {
            values: rows,
            stride: 3 * width,
            cols: 2 * width + h * head_dim..2 * width + (h + 1) * head_dim,
            transposed: false,
            owner: None,
        };
        gemm::matmul_strided(&scores, tokens, tokens, tokens, &values, &mut out[h * head_dim..], width);
    }
}

/// `row` ← softmax(`scale · row`) over the keys `hidden` does not exclude (excluded keys get 0;
/// a row that excludes all is all zeros). The exponentials are one loop of their own so that
/// it vectorises.
#[inline(always)]
fn softmax(row: &mut [f32], hidden: impl Fn(usize) -> bool, scale: f32) {
    for (j, s) in row.iter_mut().enumerate() {
        *s = if hidden(j) { f32::NEG_INFINITY } else { *s * scale };
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    for s in row.iter_mut() {
        *s = super::gelu::exp_f32(*s - max);
    }
    let inv = 1.0 / row.iter().sum::<f32>();
    for s in row.iter_mut() {
        *s *= inv;
    }
}

#[cfg(test)]
mod tests {
    //! Against softmax attention summed in f64, with padding and causal masks.

    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn reference(qkv: &[f32], batch: usize, tokens: usize, heads: usize, hd: usize, pad: Option<&[bool]>, causal: bool) -> Vec<f64> {
        let w = heads * hd;
        let at = |b: usize, t: usize, part: usize, h: usize, d: usize| qkv[(b * tokens + t) * 3 * w + part * w + h * hd + d] as f64;
        let mut out = vec![0.0; batch * tokens * w];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..tokens {
                    let seen: Vec<usize> =
                        (0..tokens).filter(|&j| !(pad.is_some_and(|p| p[b * tokens + j]) || (causal && j > i))).collect();
                    let s: Vec<f64> = seen
                        .iter()
                        .map(|&j| (0..hd).map(|d| at(b, i, 0, h, d) * at(b, j, 1, h, d)).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|s| (s - max).exp()).sum();
                    for (s, &j) in s.iter().zip(&seen) {
                        for d in 0..hd {
                            out[(b * tokens + i) * w + h * hd + d] += (s - max).exp() / z * at(b, j, 2, h, d);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64_attention() {
        if !gemm::available() {
            eprintln!("no AVX2/FMA here: nothing to check");
            return;
        }
        let (batch, tokens, heads, hd) = (3, 7, 2, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let qkv: Vec<f32> = (0..batch * tokens * 3 * heads * hd).map(|_| rng.gen_range(-2.0..2.0)).collect();
        // the second row pads its last three keys; the third pads all (its output is zeros)
        let pad: Vec<bool> = (0..batch * tokens).map(|i| (i / tokens == 1 && i % tokens >= 4) || i / tokens == 2).collect();
        for (pad, causal) in [(None, false), (None, true), (Some(&pad[..]), false), (Some(&pad[..]), true)] {
            let got = attend(&qkv, batch, tokens, heads, hd, pad, causal);
            let want = reference(&qkv, batch, tokens, heads, hd, pad, causal);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5, "causal {causal}, pad {}: at {i}, {g} vs {w}", pad.is_some());
            }
        }
    }
}
