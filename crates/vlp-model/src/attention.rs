//! Multi-head self-attention with one fused QKV projection, on burn's `attention` op (fused on
//! backends that have a kernel, decomposed under autodiff).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

#[derive(Debug, Clone)]
pub struct SelfAttentionConfig {
    pub width: usize,
    pub heads: usize,
}

#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `[width] → [3 · width]`: queries, keys and values in one matmul.
    qkv: Linear<B>,
    out: Linear<B>,
    heads: usize,
}

impl SelfAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> SelfAttention<B> {
        SelfAttention {
            qkv: LinearConfig::new(self.width, 3 * self.width).init(device),
            out: LinearConfig::new(self.width, self.width).init(device),
            heads: self.heads,
        }
    }
}

impl<B: Backend> SelfAttention<B> {
    /// `x`: `[batch, tokens, width]`; `pad`: `[batch, tokens]`, true where a key is padding.
    /// Returns `[batch, tokens, width]`.
    pub fn forward(&self, x: Tensor<B, 3>, pad: Option<Tensor<B, 2, Bool>>, causal: bool) -> Tensor<B, 3> {
        let [b, n, w] = x.dims();
        let hd = w / self.heads;
        // [b, n, 3, heads, hd] → [3, b, heads, n, hd]
        let qkv = self.qkv.forward(x).reshape([b, n, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().slice([0..1]).squeeze_dim::<4>(0);
        let k = qkv.clone().slice([1..2]).squeeze_dim::<4>(0);
        let v = qkv.slice([2..3]).squeeze_dim::<4>(0);
        let mask = pad.map(|p| p.reshape([b, 1, 1, n]).expand([b, self.heads, n, n]));
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: causal };
        let ctx = attention(q, k, v, mask, None, options); // [b, heads, n, hd]
        self.out.forward(ctx.swap_dims(1, 2).reshape([b, n, w]))
    }
}
