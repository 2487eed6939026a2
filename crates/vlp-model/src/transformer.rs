//! Pre-norm transformer blocks (LayerNorm → attention → residual, LayerNorm → MLP → residual),
//! as CLIP's towers use them.

use crate::attention::{SelfAttention, SelfAttentionConfig};
use crate::config::{Activation, BlockNorm};
use crate::cpu::layer_norm::{LayerNorm, LayerNormConfig};
use crate::cpu::linear::{linear_activation, linear_residual};
use crate::init::BlockScheme;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

#[derive(Debug, Clone)]
pub struct TransformerConfig {
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// Which reference the blocks' linear layers are drawn after.
    pub init: BlockScheme,
    /// LayerNorm's ε.
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    ln_1: LayerNorm<B>,
    attn: SelfAttention<B>,
    ln_2: LayerNorm<B>,
    mlp_fc: Linear<B>,
    mlp_proj: Linear<B>,
}

#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    blocks: Vec<Block<B>>,
}

impl TransformerConfig {
    /// Width of the MLP's hidden layer.
    pub fn hidden(&self) -> usize {
        ((self.width as f64) * self.mlp_ratio).round() as usize
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Transformer<B> {
        let hidden = self.hidden();
        let draws = self.init.draws(self.width, hidden, self.layers);
        let blocks = (0..self.layers)
            .map(|_| Block {
                ln_1: LayerNormConfig { width: self.width, epsilon: self.layer_norm_eps }.init(device),
                attn: SelfAttentionConfig { width: self.width, heads: self.heads, qkv: draws.qkv, out: draws.out }.init(device),
                ln_2: LayerNormConfig { width: self.width, epsilon: self.layer_norm_eps }.init(device),
                mlp_fc: draws.fc.init(self.width, hidden, device),
                mlp_proj: draws.proj.init(hidden, self.width, device),
            })
            .collect();
        Transformer { blocks }
    }
}

impl<B: Backend> Block<B> {
    /// Pre-norm (CLIP): `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`. Post-norm (BERT):
    /// `ln_1(x + attn(x))`, then `ln_2(x + mlp(x))`; the same parameters, in another order.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
        causal: bool,
        activation: Activation,
        norm: BlockNorm,
    ) -> Tensor<B, 3> {
        match norm {
            BlockNorm::Pre => {
                let x = self.attn.forward_residual(self.ln_1.forward(x.clone()), pad, causal, x);
                self.mlp_residual(self.ln_2.forward(x.clone()), activation, x)
            }
            BlockNorm::Post => {
                let x = self.ln_1.forward(self.attn.forward_residual(x.clone(), pad, causal, x));
                self.ln_2.forward(self.mlp_residual(x.clone(), activation, x))
            }
        }
    }

    /// `residual + mlp(x)`: `x` and `residual` are `[batch, tokens, width]`.
    fn mlp_residual(&self, x: Tensor<B, 3>, activation: Activation, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, w] = x.dims();
        let hidden = linear_activation(&self.mlp_fc, x.reshape([b * n, w]), activation);
        linear_residual(&self.mlp_proj, hidden, residual.reshape([b * n, w])).reshape([b, n, w])
    }
}

impl<B: Backend> Transformer<B> {
    /// `x`: `[batch, tokens, width]`; `pad`: `[batch, tokens]`, true at padding. The activation
    /// is the model's ([`crate::DualEncoder`] holds it), not stored per block.
    pub fn forward(
        &self,
        mut x: Tensor<B, 3>,
        pad: Option<Tensor<B, 2, Bool>>,
        causal: bool,
        activation: Activation,
        norm: BlockNorm,
    ) -> Tensor<B, 3> {
        for block in &self.blocks {
            x = block.forward(x, pad.clone(), causal, activation, norm);
        }
        x
    }
}
