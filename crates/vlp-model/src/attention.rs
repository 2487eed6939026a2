//! Multi-head self-attention with one stored QKV projection, on burn's `attention` op (fused on
//! backends that have a kernel, decomposed under autodiff).

use crate::cpu::heads::swap_heads;
use crate::init::LinearInit;
use crate::tokenwise_linear::per_token;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

#[derive(Debug, Clone)]
pub struct SelfAttentionConfig {
    pub width: usize,
    pub heads: usize,
    /// How the fused `[w] → [3w]` projection is drawn.
    pub qkv: LinearInit,
    /// How the `[w] → [w]` output projection is drawn.
    pub out: LinearInit,
}

#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `[width] → [3 · width]`: queries, keys and values, stored as one weight (OpenCLIP's
    /// `in_proj_weight`), applied a third at a time.
    qkv: Linear<B>,
    out: Linear<B>,
    heads: usize,
}

impl SelfAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SelfAttention<B> {
        SelfAttention {
            qkv: self.qkv.init(self.width, 3 * self.width, device),
            out: self.out.init(self.width, self.width, device),
            heads: self.heads,
        }
    }
}

impl<B: Backend> SelfAttention<B> {
    /// `x`: `[batch, tokens, width]`; `pad`: `[batch, tokens]`, true where a key is padding.
    /// Returns `[batch, tokens, width]`.
    pub fn forward(&self, x: Tensor<B, 3>, pad: Option<Tensor<B, 2, Bool>>, causal: bool) -> Tensor<B, 3> {
        if let Some(y) = crate::cpu::self_attention::flex_block(&x, &self.qkv, &self.out, self.heads, pad.as_ref(), causal, None) {
            return y;
        }
        self.burn_forward(x, pad, causal)
    }

    /// `residual + self.forward(x, pad, causal)`, a transformer block's first half with its skip
    /// connection; on the CPU kernel's path the residual is added inside the output projection.
    /// `residual`: `[batch, tokens, width]`.
    pub fn forward_residual(&self, x: Tensor<B, 3>, pad: Option<Tensor<B, 2, Bool>>, causal: bool, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let fused = crate::cpu::self_attention::flex_block(&x, &self.qkv, &self.out, self.heads, pad.as_ref(), causal, Some(&residual));
        match fused {
            Some(y) => y,
            None => residual + self.burn_forward(x, pad, causal),
        }
    }

    /// [`Self::forward`] in burn's ops.
    fn burn_forward(&self, x: Tensor<B, 3>, pad: Option<Tensor<B, 2, Bool>>, causal: bool) -> Tensor<B, 3> {
        let [b, n, w] = x.dims();
        let hd = w / self.heads;
        // q, k and v each from their third of the fused weight: `[b·n, w] × [w, w]`, viewed as
        // `[b, heads, n, hd]`. Slicing the weight rather than the fused `[b, n, 3w]` output
        // matters in backward: the gradient of a slice is written into zeros of the sliced
        // tensor's full size, which for the output was three activation-sized buffers per layer
        // (and strided copies into them); for the weight it is `[w, 3w]`.
        let x = x.reshape([b * n, w]);
        let weight = self.qkv.weight.val();
        let bias = self.qkv.bias.as_ref().map(|bias| bias.val());
        let part = |i: usize| {
            let y = crate::autocast::matmul(x.clone(), weight.clone().slice([0..w, i * w..(i + 1) * w]));
            let y = match &bias {
                Some(bias) => y + bias.clone().slice([i * w..(i + 1) * w]).unsqueeze_dim(0),
                None => y,
            };
            swap_heads(y.reshape([b, n, self.heads, hd]))
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let mask = pad.map(|p| p.reshape([b, 1, 1, n]).expand([b, self.heads, n, n]));
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: causal };
        let ctx = crate::autocast::attention(q, k, v, mask, options); // [b, heads, n, hd]
        per_token(&self.out, swap_heads(ctx).reshape([b, n, w]))
    }
}

#[cfg(test)]
mod tests {
    //! The attention block against multi-head attention written as plain f64 loops.

    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, TensorData};

    fn floats<BK: Backend, const D: usize>(t: Tensor<BK, D>) -> Vec<f64> {
        t.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// `x`: `[tokens, width]` of one sequence; `w_*`: `[in, out]`; `pad[j]`: key j is padding.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f64],
        n: usize,
        w: usize,
        heads: usize,
        w_qkv: &[f64],
        b_qkv: &[f64],
        w_out: &[f64],
        b_out: &[f64],
        pad: &[bool],
        causal: bool,
    ) -> Vec<f64> {
        let linear = |x: &[f64], wt: &[f64], b: &[f64], din: usize, dout: usize| -> Vec<f64> {
            let mut y = vec![0.0; n * dout];
            for t in 0..n {
                for o in 0..dout {
                    y[t * dout + o] = b[o] + (0..din).map(|i| x[t * din + i] * wt[i * dout + o]).sum::<f64>();
                }
            }
            y
        };
        let qkv = linear(x, w_qkv, b_qkv, w, 3 * w);
        let hd = w / heads;
        let mut ctx = vec![0.0; n * w];
        for h in 0..heads {
            let at = |t: usize, part: usize, d: usize| qkv[t * 3 * w + part * w + h * hd + d];
            for i in 0..n {
                let allowed: Vec<usize> = (0..n).filter(|&j| !(pad[j] || (causal && j > i))).collect();
                let scores: Vec<f64> =
                    allowed.iter().map(|&j| (0..hd).map(|d| at(i, 0, d) * at(j, 1, d)).sum::<f64>() / (hd as f64).sqrt()).collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (s, &j) in scores.iter().zip(&allowed) {
                    for d in 0..hd {
                        ctx[i * w + h * hd + d] += (s - max).exp() / z * at(j, 2, d);
                    }
                }
            }
        }
        linear(&ctx, w_out, b_out, w, w)
    }

    /// `n` tokens per sequence: on plain Flex, 2·n ≥ 64 rows take the CPU kernel's path
    /// ([`crate::cpu::self_attention`]), fewer take burn's ops, as under autodiff. Also checks
    /// [`SelfAttention::forward_residual`] against the plain forward plus the residual.
    fn check<B: Backend>(causal: bool, with_pad: bool, n: usize) {
        let device = Default::default();
        let (b, w, heads) = (2, 8, 2);
        let attn: SelfAttention<B> =
            SelfAttentionConfig { width: w, heads, qkv: LinearInit::torch_default(w), out: LinearInit::torch_default(w) }.init(&device);
        let x = Tensor::<B, 3>::random([b, n, w], Distribution::Normal(0.0, 1.0), &device);
        // The second sequence's last two tokens are padding.
        let pad_rows: Vec<bool> = (0..b * n).map(|k| with_pad && k >= 2 * n - 2).collect();
        // made by a comparison, as the towers make their masks (a backend may store it as bytes)
        let flags: Vec<i64> = pad_rows.iter().map(|&p| p as i64).collect();
        let pad = Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(flags, [b, n]), &device).equal_elem(1);
        let got = floats(attn.forward(x.clone(), with_pad.then_some(pad.clone()), causal));
        // with the skip connection added in (inside the output projection on the kernel's path)
        let residual = Tensor::<B, 3>::random([b, n, w], Distribution::Normal(0.0, 1.0), &device);
        let with_residual = floats(attn.forward_residual(x.clone(), with_pad.then_some(pad), causal, residual.clone()));
        for ((g, r), plain) in with_residual.iter().zip(floats(residual)).zip(&got) {
            assert!((g - r - plain).abs() < 1e-5, "with the residual: {g} - {r} against {plain}");
        }

        let p = |l: &Linear<B>| (floats(l.weight.val()), floats(l.bias.as_ref().unwrap().val()));
        let ((wq, bq), (wo, bo)) = (p(&attn.qkv), p(&attn.out));
        let xs = floats(x);
        for s in 0..b {
            let want = reference(&xs[s * n * w..(s + 1) * n * w], n, w, heads, &wq, &bq, &wo, &bo, &pad_rows[s * n..(s + 1) * n], causal);
            for (k, (g, r)) in got[s * n * w..(s + 1) * n * w].iter().zip(&want).enumerate() {
                assert!((g - r).abs() < 1e-4, "sequence {s}, value {k}: {g} against {r} (causal {causal}, pad {with_pad})");
            }
        }
    }

    #[test]
    fn bidirectional_attention_matches_plain_loops() {
        check::<Autodiff<Flex>>(false, false, 5);
    }

    #[test]
    fn causal_attention_matches_plain_loops() {
        check::<Autodiff<Flex>>(true, false, 5);
    }

    #[test]
    fn padded_keys_take_no_part() {
        check::<Autodiff<Flex>>(false, true, 5);
    }

    #[test]
    fn the_cpu_kernels_path_matches_plain_loops() {
        for (causal, with_pad) in [(false, false), (true, false), (false, true), (true, true)] {
            check::<Flex>(causal, with_pad, 40);
        }
    }
}
