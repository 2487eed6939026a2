//! Wukong's token reduction: a small learned layer that maps an image's projected patch tokens
//! to `T` tokens (Wukong: 12 for ViT-B/32, 24 for ViT-L/14) before the token-level loss, so
//! token-wise interaction costs `T` instead of every patch, and the index stores `T` vectors per
//! image.
//!
//! As Wukong's `TokenReduction` (TokenLearner v1.1-style), on tokens `x` `[b, n, c]`:
//! - selection: `softmax_n(LayerNorm(x) · G_s · S)`, where `G_s` is a grouped 1×1 convolution
//!   (`groups` blocks of `c/groups` channels, no bias) and `S` maps `c` channels to `T` maps (no
//!   bias): weights `[b, T, n]`, each row a distribution over the patches;
//! - features: `x · G_f`, a second grouped 1×1 convolution;
//! - output: `weights · features`, `[b, T, c]`.
//!
//! Both convolutions start as Wukong's `kaiming_init` (mmcv: normal, `fan_out`, ReLU gain):
//! N(0, 2 / fan_out), where PyTorch's fan_out of a 1×1 convolution is its output channels (`c` for
//! the grouped ones, `T` for `S`). No dropout (Wukong's rate is 0).

use crate::cpu::layer_norm::{LayerNorm, LayerNormConfig};
use crate::init::Init;
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// `[model.image.token_reduction]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReductionConfig {
    /// Tokens per image after the reduction (`T`).
    pub tokens: usize,
    /// Groups of the two grouped 1×1 convolutions (Wukong: 8); must divide the token width.
    #[serde(default = "default_groups")]
    pub groups: usize,
}

fn default_groups() -> usize {
    8
}

#[derive(Module, Debug)]
pub struct TokenReduction<B: Backend> {
    pub norm: LayerNorm<B>,
    /// `[groups, c/groups, c/groups]`: the selection's grouped convolution, input → output.
    pub select_grouped: Param<Tensor<B, 3>>,
    /// `[c, T]`
    pub select: Param<Tensor<B, 2>>,
    /// `[groups, c/groups, c/groups]`: the features' grouped convolution.
    pub feature_grouped: Param<Tensor<B, 3>>,
}

impl TokenReductionConfig {
    /// `width`: the token width `c` it reduces.
    pub fn init<B: Backend>(&self, width: usize, device: &B::Device) -> TokenReduction<B> {
        let k = width / self.groups;
        let grouped = Init::Normal((2.0 / width as f64).sqrt());
        TokenReduction {
            norm: LayerNormConfig::new(width).init(device),
            select_grouped: grouped.param([self.groups, k, k], device),
            select: Init::Normal((2.0 / self.tokens as f64).sqrt()).param([width, self.tokens], device),
            feature_grouped: grouped.param([self.groups, k, k], device),
        }
    }
}

/// `x` `[b, n, c]` through a grouped 1×1 convolution with weight `[g, c/g, c/g]`.
fn grouped<B: Backend>(weight: Tensor<B, 3>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, c] = x.dims();
    let [g, k, _] = weight.dims();
    let per_group = x.reshape([b * n, g, k]).swap_dims(0, 1); // [g, b·n, k]
    per_group.matmul(weight).swap_dims(0, 1).reshape([b, n, c])
}

impl<B: Backend> TokenReduction<B> {
    /// The selection weights `[b, T, n]`: for each output token, a distribution over the input
    /// tokens.
    pub fn weights(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let s = grouped(self.select_grouped.val(), self.norm.forward(x));
        let t = self.select.val().dims()[1];
        let maps = s.reshape([b * n, c]).matmul(self.select.val()).reshape([b, n, t]);
        softmax(maps.swap_dims(1, 2), 2)
    }

    /// `weights` `[b, T, n]` applied to the features of `x` `[b, n, c]` → `[b, T, c]`.
    pub fn apply(&self, weights: Tensor<B, 3>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        weights.matmul(grouped(self.feature_grouped.val(), x))
    }

    /// `x` `[b, n, c]` → `[b, T, c]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let w = self.weights(x.clone());
        self.apply(w, x)
    }

    /// Tokens out (`T`).
    pub fn tokens(&self) -> usize {
        self.select.val().dims()[1]
    }
}
