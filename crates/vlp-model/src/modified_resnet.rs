//! OpenCLIP's and OpenAI's `ModifiedResNet` image tower (RN50, RN101, RN50x4, ...; Chinese-CLIP's
//! RN50), built as they build it so that their checkpoints load and embed alike:
//!
//! - a stem of three 3×3 convolutions, each with BatchNorm and ReLU (the first of stride 2), then a
//!   2×2 average pool;
//! - four stages of bottleneck blocks (vlp's [`crate::resnet`] bottleneck: average-pool
//!   anti-aliased strides, the shortcut pooled then projected), doubling the width each stage;
//! - attention pooling: the grid tokens with their mean prepended, learned positions added, and one
//!   multi-head attention whose only query is the mean token; its output projection (`c_proj`,
//!   with a bias) is the embedding, with no projection after it.
//!
//! vlp's own [`crate::resnet::ResNetTower`] (`kind = "resnet"`) differs in two ways a checkpoint
//! cannot express across (no BatchNorm after the stem's first convolution; a projection after the
//! pool), so this is a tower of its own (`kind = "modified_resnet"`) and the older one's configs
//! and checkpoints load as before.
//!
//! BatchNorm computes with the batch's statistics when the backend records gradients (training)
//! and with its running statistics otherwise (embedding), as PyTorch's `train()`/`eval()` modes
//! do; the running statistics are loaded and exported with the weights.

use crate::config::ModifiedResnetConfig;
use crate::dual::{l2_normalize, TowerOutput};
use crate::init::{Init, LinearInit};
use crate::resnet::{pool, Bottleneck, ConvBn};
use crate::tokenwise_linear::per_token;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// OpenCLIP's `AttentionPool2d`: `[batch, grid², width]` tokens → `[batch, embed_dim]`.
#[derive(Module, Debug)]
pub struct AttentionPool2d<B: Backend> {
    /// `[1 + grid², width]`: the mean token's position, then the grid's.
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    /// `[width] → [embed_dim]`: attention's output projection, which is the embedding.
    pub c_proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> AttentionPool2d<B> {
    /// OpenCLIP's `init_parameters`: q, k, v and c weights N(0, width^-½), positions
    /// N(0, 1/width), biases PyTorch's default.
    fn new(width: usize, grid: usize, embed_dim: usize, heads: usize, device: &B::Device) -> Self {
        let std = (width as f64).powf(-0.5);
        let linear = LinearInit { weight: Init::Normal(std), bias: Some(Init::torch_default(width)) };
        AttentionPool2d {
            positional_embedding: Init::Normal(std).param([1 + grid * grid, width], device),
            q_proj: linear.init(width, width, device),
            k_proj: linear.init(width, width, device),
            v_proj: linear.init(width, width, device),
            c_proj: linear.init(width, embed_dim, device),
            heads,
        }
    }

    /// `tokens`: `[batch, n, width]` (the grid, row-major) → `[batch, embed_dim]`.
    ///
    /// OpenCLIP runs the attention with every token as a query and keeps the first output; only
    /// the first query is computed here, which is the same number.
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, n, w] = tokens.dims();
        let (h, hd) = (self.heads, w / self.heads);
        let mean = tokens.clone().mean_dim(1); // [b, 1, w]
        let x = Tensor::cat(vec![mean, tokens], 1) + self.positional_embedding.val().unsqueeze_dim(0); // [b, n+1, w]
        let query = x.clone().slice([0..b, 0..1]);
        let heads = |y: Tensor<B, 3>, len: usize| y.reshape([b, len, h, hd]).swap_dims(1, 2); // [b, h, len, hd]
        let q = heads(crate::autocast::linear(&self.q_proj, query), 1).mul_scalar((hd as f64).powf(-0.5));
        let k = heads(per_token(&self.k_proj, x.clone()), n + 1);
        let v = heads(per_token(&self.v_proj, x), n + 1);
        let weights = softmax(crate::autocast::matmul(q, k.swap_dims(2, 3)), 3); // [b, h, 1, n+1]
        let ctx = crate::autocast::matmul(weights, v).reshape([b, w]); // heads in order: [b, h·hd]
        crate::autocast::linear(&self.c_proj, ctx)
    }
}

/// The tower: `[batch, 3, size, size]` → global `[batch, embed_dim]` and grid tokens.
#[derive(Module, Debug)]
pub struct ModifiedResNet<B: Backend> {
    /// OpenCLIP's `conv1`/`bn1` (stride 2), `conv2`/`bn2`, `conv3`/`bn3`.
    stem: Vec<ConvBn<B>>,
    /// OpenCLIP's `layer1` … `layer4`.
    stages: Vec<Vec<Bottleneck<B>>>,
    attnpool: AttentionPool2d<B>,
    /// vlp's own: the grid tokens into the token-level embedding space (FILIP); not in OpenCLIP.
    token_proj: Linear<B>,
}

impl ModifiedResnetConfig {
    /// Channels after the last stage (the attention pool's width): `32 · width`.
    pub fn out_channels(&self) -> usize {
        self.width * 32
    }

    /// The side of the last stage's grid: `image_size / 32`.
    pub fn grid(&self) -> usize {
        self.image_size / 32
    }

    /// As OpenCLIP's `ModifiedResNet` starts: convolutions U(±1/√fan_in), BatchNorm γ 1 and β 0
    /// but each bottleneck's last γ 0, the pool as `AttentionPool2d::new`.
    pub fn init<B: Backend>(&self, embed_dim: usize, token_dim: usize, device: &B::Device) -> ModifiedResNet<B> {
        let half = self.width / 2;
        let stem = vec![
            ConvBn::strided(3, half, 3, 2, device),
            ConvBn::strided(half, half, 3, 1, device),
            ConvBn::strided(half, self.width, 3, 1, device),
        ];
        let mut cin = self.width;
        let stages = self
            .layers
            .iter()
            .enumerate()
            .map(|(stage, &blocks)| {
                let planes = self.width << stage;
                (0..blocks)
                    .map(|i| {
                        let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                        let block = Bottleneck::new(cin, planes, stride, device);
                        cin = planes * 4;
                        block
                    })
                    .collect()
            })
            .collect();
        let c = self.out_channels();
        ModifiedResNet {
            stem,
            stages,
            attnpool: AttentionPool2d::new(c, self.grid(), embed_dim, self.heads, device),
            token_proj: LinearInit::projection((c as f64).powf(-0.5)).init(c, token_dim, device),
        }
    }
}

impl<B: Backend> ModifiedResNet<B> {
    /// `images`: `[batch, 3, size, size]` → global `[batch, embed_dim]`, tokens
    /// `[batch, grid², token_dim]` (every token real).
    pub fn forward(&self, images: Tensor<B, 4>) -> TowerOutput<B> {
        let tokens = self.trunk(images);
        TowerOutput {
            global: l2_normalize(self.attnpool.forward(tokens.clone())),
            tokens: l2_normalize(per_token(&self.token_proj, tokens)),
            token_mask: None,
        }
    }

    /// The global embedding of [`Self::forward`] alone, `[batch, embed_dim]`.
    pub fn forward_global(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        l2_normalize(self.attnpool.forward(self.trunk(images)))
    }

    /// `images` → the last stage's grid as tokens, `[batch, grid², channels]`.
    fn trunk(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = images;
        for layer in &self.stem {
            x = relu(layer.forward(x));
        }
        x = pool(2).forward(x);
        for block in self.stages.iter().flatten() {
            x = block.forward(x);
        }
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).swap_dims(1, 2)
    }
}

#[cfg(test)]
mod tests {
    //! The attention pool against multi-head attention over every query written as plain f64
    //! loops (OpenCLIP's formulation), keeping the first output.

    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    fn floats<const D: usize>(t: Tensor<Flex, D>) -> Vec<f64> {
        t.into_data().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    #[test]
    fn the_pool_is_openclips_first_output_of_full_attention() {
        let device = Default::default();
        let (b, n, w, heads, e) = (2, 4, 8, 2, 3);
        let pool = AttentionPool2d::<Flex>::new(w, 2, e, heads, &device);
        let x = Tensor::<Flex, 3>::random([b, n, w], Distribution::Normal(0.0, 1.0), &device);
        let got = floats(pool.forward(x.clone()));
        let (xs, pos) = (floats(x), floats(pool.positional_embedding.val()));
        let lin = |l: &Linear<Flex>| (floats(l.weight.val()), floats(l.bias.as_ref().unwrap().val()));
        let ((wq, bq), (wk, bk), (wv, bv), (wc, bc)) = (lin(&pool.q_proj), lin(&pool.k_proj), lin(&pool.v_proj), lin(&pool.c_proj));
        let apply = |x: &[f64], wt: &[f64], bias: &[f64], dout: usize| -> Vec<f64> {
            (0..dout).map(|o| bias[o] + (0..x.len()).map(|i| x[i] * wt[i * dout + o]).sum::<f64>()).collect()
        };
        let hd = w / heads;
        for s in 0..b {
            let tok = |t: usize| &xs[(s * n + t) * w..(s * n + t + 1) * w];
            let mean: Vec<f64> = (0..w).map(|d| (0..n).map(|t| tok(t)[d]).sum::<f64>() / n as f64).collect();
            let seq: Vec<Vec<f64>> = std::iter::once(mean)
                .chain((0..n).map(|t| tok(t).to_vec()))
                .enumerate()
                .map(|(i, v)| v.iter().zip(&pos[i * w..(i + 1) * w]).map(|(a, p)| a + p).collect())
                .collect();
            let (q, k, v): (Vec<_>, Vec<_>, Vec<_>) = (
                seq.iter().map(|t| apply(t, &wq, &bq, w)).collect(),
                seq.iter().map(|t| apply(t, &wk, &bk, w)).collect(),
                seq.iter().map(|t| apply(t, &wv, &bv, w)).collect(),
            );
            // every query, as nn.MultiheadAttention computes; then the first row
            let mut ctx = vec![vec![0.0; w]; n + 1];
            for (i, row) in ctx.iter_mut().enumerate() {
                for h in 0..heads {
                    let r = h * hd..(h + 1) * hd;
                    let scores: Vec<f64> = (0..=n)
                        .map(|j| q[i][r.clone()].iter().zip(&k[j][r.clone()]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                    for (j, sc) in scores.iter().enumerate() {
                        for d in r.clone() {
                            row[d] += (sc - max).exp() / z * v[j][d];
                        }
                    }
                }
            }
            let want = apply(&ctx[0], &wc, &bc, e);
            for (g, x) in got[s * e..(s + 1) * e].iter().zip(&want) {
                assert!((g - x).abs() < 1e-5, "{g} vs {x}");
            }
        }
    }
}
