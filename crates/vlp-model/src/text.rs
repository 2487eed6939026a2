//! Text tower: a transformer over token ids, causal (CLIP) or bidirectional (BERT, as BriVL and
//! Chinese-CLIP), pooled by EOS, CLS or masked mean.

use crate::config::{Activation, BlockNorm, TextPool, TextTowerConfig};
use crate::cpu::layer_norm::{LayerNorm, LayerNormConfig};
use crate::dual::{l2_normalize, TowerOutput};
use crate::init::{BlockScheme, Init, LinearInit, BERT_STD};
use crate::tokenwise_linear::per_token;
use crate::transformer::{Transformer, TransformerConfig};
use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    token_embedding: Embedding<B>,
    /// `[context, width]`
    positional_embedding: Param<Tensor<B, 2>>,
    transformer: Transformer<B>,
    ln_final: LayerNorm<B>,
    proj: Linear<B>,
    token_proj: Linear<B>,
    causal: bool,
    #[module(skip)]
    pool: TextPool,
}

impl TextTowerConfig {
    /// A causal tower starts as OpenCLIP's text tower, a bidirectional one as BERT (see
    /// [`crate::init`]); the projections are N(0, w^-½) in both (CLIP's `text_projection`,
    /// Chinese-CLIP's).
    pub fn init<B: Backend>(&self, embed_dim: usize, token_dim: usize, device: &B::Device) -> TextTransformer<B> {
        let (token_std, position_std, scheme) =
            if self.causal { (0.02, 0.01, BlockScheme::ClipText) } else { (BERT_STD, BERT_STD, BlockScheme::Bert) };
        let proj = LinearInit::projection((self.width as f64).powf(-0.5));
        TextTransformer {
            token_embedding: Embedding { weight: Init::Normal(token_std).param([self.vocab_size, self.width], device) },
            positional_embedding: Init::Normal(position_std).param([self.context_length, self.width], device),
            transformer: TransformerConfig {
                width: self.width,
                layers: self.layers,
                heads: self.heads,
                mlp_ratio: self.mlp_ratio,
                init: scheme,
                layer_norm_eps: self.layer_norm_eps,
            }
            .init(device),
            ln_final: LayerNormConfig { width: self.width, epsilon: self.layer_norm_eps }.init(device),
            proj: proj.init(self.width, embed_dim, device),
            token_proj: proj.init(self.width, token_dim, device),
            causal: self.causal,
            pool: self.pool,
        }
    }
}

impl<B: Backend> TextTransformer<B> {
    /// `ids`, `mask`: `[batch, n]`, `n` ≤ the context length, padding at the end (mask 1 = real
    /// token, 0 = pad) → global `[batch, embed]`, tokens `[batch, n, token_dim]` with `token_mask`
    /// `[batch, n]`. Columns of padding past the longest text change no output but the width.
    /// Post-norm towers (BERT) normalise the embeddings with `ln_final` before the blocks, and
    /// nothing after them.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, activation: Activation, norm: BlockNorm) -> TowerOutput<B> {
        let x = self.trunk(ids, mask.clone(), activation, norm);
        let global = self.global(x.clone(), mask.clone());
        let tokens = per_token(&self.token_proj, x);
        TowerOutput { global, tokens: l2_normalize(tokens), token_mask: Some(mask) }
    }

    /// The global embedding of [`Self::forward`] alone, `[batch, embed]`.
    pub fn forward_global(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, activation: Activation, norm: BlockNorm) -> Tensor<B, 2> {
        self.global(self.trunk(ids, mask.clone(), activation, norm), mask)
    }

    /// The tokens after the blocks (and the final norm of a pre-norm tower), `[batch, n, width]`.
    fn trunk(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, activation: Activation, norm: BlockNorm) -> Tensor<B, 3> {
        let n = ids.dims()[1];
        let x = self.token_embedding.forward(ids) + self.positional_embedding.val().slice([0..n]).unsqueeze_dim(0);
        let pad = mask.clone().lower_elem(0.5);
        // A causal model never looks ahead, and padding sits at the end: no pad mask is needed,
        // and leaving it out keeps the fused causal path.
        let x = match norm {
            BlockNorm::Pre => x,
            BlockNorm::Post => self.ln_final.forward(x),
        };
        let x = self.transformer.forward(x, if self.causal { None } else { Some(pad) }, self.causal, activation, norm);
        match norm {
            BlockNorm::Pre => self.ln_final.forward(x), // [b, n, width]
            BlockNorm::Post => x,
        }
    }

    /// `x`, `[batch, n, width]`, pooled as the tower pools, projected and normalised.
    fn global(&self, x: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, _, width] = x.dims();
        let pooled = match self.pool {
            TextPool::Cls => x.clone().slice([0..b, 0..1]).squeeze_dim::<2>(1),
            TextPool::Eos => {
                // index of the last real token = (number of real tokens) − 1
                let last = mask.clone().sum_dim(1).sub_scalar(1.0).int(); // [b, 1]
                x.clone().gather(1, last.unsqueeze_dim::<3>(2).expand([b, 1, width])).squeeze_dim::<2>(1)
            }
            TextPool::Mean => {
                let m = mask.clone().unsqueeze_dim::<3>(2); // [b, n, 1]
                (x.clone() * m.clone()).sum_dim(1).squeeze_dim::<2>(1) / m.sum_dim(1).squeeze_dim::<2>(1)
            }
        };
        l2_normalize(crate::autocast::linear(&self.proj, pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    /// What the tokenizer's batches rely on: cutting padding columns off a batch changes neither
    /// embedding, whatever the attention and pooling.
    #[test]
    fn padding_columns_past_the_longest_text_change_nothing() {
        let device = Default::default();
        let (b, context, n) = (3, 16, 8);
        let lengths = [8, 3, 5];
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for (row, &len) in lengths.iter().enumerate() {
            for j in 0..context {
                ids.push(if j < len { (7 * row + 3 * j) as i64 % 50 + 1 } else { 0 });
                mask.push(if j < len { 1.0f32 } else { 0.0 });
            }
        }
        let cut = |v: &[f32]| (0..b).flat_map(|r| v[r * context..r * context + n].to_vec()).collect::<Vec<_>>();
        let ids_cut: Vec<i64> = (0..b).flat_map(|r| ids[r * context..r * context + n].to_vec()).collect();
        for (causal, pool) in [(true, TextPool::Eos), (false, TextPool::Cls), (false, TextPool::Mean)] {
            let cfg = TextTowerConfig {
                context_length: context,
                vocab_size: 64,
                width: 32,
                layers: 2,
                heads: 4,
                mlp_ratio: 4.0,
                causal,
                pool,
                activation: Activation::Gelu,
                norm: BlockNorm::Pre,
                layer_norm_eps: 1e-5,
            };
            let tower = cfg.init::<Flex>(16, 8, &device);
            let run = |ids: Vec<i64>, mask: Vec<f32>, w: usize| {
                tower.forward(
                    Tensor::from_data(TensorData::new(ids, [b, w]), &device),
                    Tensor::from_data(TensorData::new(mask, [b, w]), &device),
                    Activation::Gelu,
                    BlockNorm::Pre,
                )
            };
            let full = run(ids.clone(), mask.clone(), context);
            let short = run(ids_cut.clone(), cut(&mask), n);
            let tol = burn::tensor::Tolerance::absolute(1e-5);
            full.global.to_data().assert_approx_eq::<f32>(&short.global.to_data(), tol);
            let full_tokens = full.tokens.slice([0..b, 0..n]).to_data();
            full_tokens.assert_approx_eq::<f32>(&short.tokens.to_data(), tol);
        }
    }
}
