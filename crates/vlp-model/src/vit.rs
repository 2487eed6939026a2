//! Vision transformer tower: conv patch embedding, class token, learned positions, pre-norm
//! blocks, final norm, projection.

use crate::config::{Activation, BlockNorm, VitConfig};
use crate::cpu::layer_norm::{LayerNorm, LayerNormConfig};
use crate::dual::{l2_normalize, TowerOutput};
use crate::init::{BlockScheme, Init, LinearInit};
use crate::token_reduction::TokenReduction;
use crate::tokenwise_linear::per_token;
use crate::transformer::{Transformer, TransformerConfig};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// `[3, width, patch, patch]`, stride = patch.
    patch_embed: Conv2d<B>,
    /// `[width]`
    class_token: Param<Tensor<B, 1>>,
    /// `[1 + patches, width]`
    positional_embedding: Param<Tensor<B, 2>>,
    ln_pre: LayerNorm<B>,
    transformer: Transformer<B>,
    ln_post: LayerNorm<B>,
    /// Class token → global embedding.
    proj: Linear<B>,
    /// Patch tokens → token embeddings.
    token_proj: Linear<B>,
}

impl VitConfig {
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// OpenCLIP's ViT as it starts (see [`crate::init`]): patch convolution U(±1/√(3p²)), class
    /// token and positions N(0, w^-½), blocks with PyTorch's module defaults, projections
    /// N(0, w^-½).
    pub fn init<B: Backend>(&self, embed_dim: usize, token_dim: usize, device: &B::Device) -> VisionTransformer<B> {
        let std = (self.width as f64).powf(-0.5);
        let p = self.patch_size;
        VisionTransformer {
            patch_embed: Conv2d {
                weight: Init::torch_default(3 * p * p).param([self.width, 3, p, p], device),
                ..Conv2dConfig::new([3, self.width], [p, p]).with_stride([p, p]).with_bias(false).init(device)
            },
            class_token: Init::Normal(std).param([self.width], device),
            positional_embedding: Init::Normal(std).param([1 + self.patches(), self.width], device),
            ln_pre: LayerNormConfig::new(self.width).init(device),
            transformer: TransformerConfig {
                width: self.width,
                layers: self.layers,
                heads: self.heads,
                mlp_ratio: self.mlp_ratio,
                init: BlockScheme::PyTorchDefault,
                layer_norm_eps: 1e-5,
            }
            .init(device),
            ln_post: LayerNormConfig::new(self.width).init(device),
            proj: LinearInit::projection(std).init(self.width, embed_dim, device),
            token_proj: LinearInit::projection(std).init(self.width, token_dim, device),
        }
    }
}

impl<B: Backend> VisionTransformer<B> {
    /// `images`: `[batch, 3, size, size]` → global `[batch, embed]`, tokens `[batch, patches,
    /// token_dim]`, or `[batch, T, token_dim]` through Wukong's `reduction`.
    pub fn forward(&self, images: Tensor<B, 4>, reduction: Option<&TokenReduction<B>>, activation: Activation) -> TowerOutput<B> {
        let x = self.trunk(images, activation);
        let [b, n, _] = x.dims();
        let global = self.global(x.clone());
        let tokens = per_token(&self.token_proj, x.slice([0..b, 1..n]));
        // Wukong reduces the projected tokens, then normalises.
        let tokens = match reduction {
            Some(r) => r.forward(tokens),
            None => tokens,
        };
        TowerOutput { global, tokens: l2_normalize(tokens), token_mask: None }
    }

    /// The global embedding of [`Self::forward`] alone, `[batch, embed]`.
    pub fn forward_global(&self, images: Tensor<B, 4>, activation: Activation) -> Tensor<B, 2> {
        self.global(self.trunk(images, activation))
    }

    /// The class token of `x`, `[batch, 1 + patches, width]`, projected and normalised.
    fn global(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let b = x.dims()[0];
        l2_normalize(crate::autocast::linear(&self.proj, x.slice([0..b, 0..1]).squeeze_dim::<2>(1)))
    }

    /// `images` → the blocks' output after the final norm, `[batch, 1 + patches, width]`.
    fn trunk(&self, images: Tensor<B, 4>, activation: Activation) -> Tensor<B, 3> {
        let x = match crate::cpu::patch_embed::flex_patch_embed(&self.patch_embed, &images) {
            Some(x) => x,
            None => {
                let x = crate::autocast::conv2d(&self.patch_embed, images); // [b, width, g, g]
                let [b, w, gh, gw] = x.dims();
                x.reshape([b, w, gh * gw]).swap_dims(1, 2)
            }
        }; // [b, patches, width]
        let [b, _, w] = x.dims();
        let cls = self.class_token.val().reshape([1, 1, w]).expand([b, 1, w]);
        let x = Tensor::cat(vec![cls, x], 1) + self.positional_embedding.val().unsqueeze_dim(0);
        let x = self.transformer.forward(self.ln_pre.forward(x), None, false, activation, BlockNorm::Pre);
        self.ln_post.forward(x)
    }
}
