//! The dual encoder: both towers, their temperatures, and the loss that joins them.

use crate::config::{Activation, BlockNorm, ImageTowerConfig, LossConfig, ModelConfig};
use crate::cpu::flex::on_pool;
use crate::loss::{ClipLoss, LossOutput, TokenwiseLoss};
use crate::modified_resnet::ModifiedResNet;
use crate::momentum;
use crate::resnet::ResNetTower;
use crate::text::TextTransformer;
use crate::token_reduction::TokenReduction;
use crate::vit::VisionTransformer;
use crate::INIT_LOGIT_SCALE;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// What a tower returns: both embeddings projected and L2-normalised.
#[derive(Debug, Clone)]
pub struct TowerOutput<B: Backend> {
    /// `[batch, embed_dim]`
    pub global: Tensor<B, 2>,
    /// `[batch, tokens, token_dim]` (image: patch or grid tokens, class token excluded)
    pub tokens: Tensor<B, 3>,
    /// `[batch, tokens]`, 1 for a real token and 0 for padding; `None` when every token is real.
    pub token_mask: Option<Tensor<B, 2>>,
}

/// Divides by the L2 norm over the last dimension.
pub fn l2_normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

#[derive(Module, Debug)]
pub enum ImageTower<B: Backend> {
    Vit(VisionTransformer<B>),
    Resnet(ResNetTower<B>),
    /// Last: a checkpoint records the variant by its place.
    ModifiedResnet(ModifiedResNet<B>),
}

#[derive(Module, Debug)]
pub struct DualEncoder<B: Backend> {
    pub image: ImageTower<B>,
    pub text: TextTransformer<B>,
    /// `[1]`, log of the global loss's inverse temperature.
    pub logit_scale: Param<Tensor<B, 1>>,
    /// `[1]`, log of the token-level loss's inverse temperature.
    pub token_logit_scale: Param<Tensor<B, 1>>,
    /// Wukong's token reduction of the ViT's patch tokens (`model.image.token_reduction`). The
    /// last field, so a checkpoint written before it existed is this record without it (see
    /// `vlp_embed::checkpoint::load_model`).
    pub image_token_reduction: Option<TokenReduction<B>>,
    /// How the towers compute, beyond their weights (activations, where the text blocks
    /// normalise): from the config, not persisted; last for the same reason as the reduction
    /// (burn still writes one `None` byte for a skipped field).
    #[module(skip)]
    pub arch: Architecture,
}

/// The parts of a model's computation that are not weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Architecture {
    pub image_activation: Activation,
    pub text_activation: Activation,
    pub text_norm: BlockNorm,
}

impl ModelConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> DualEncoder<B> {
        let (e, t) = (self.embed_dim, self.token_dim());
        let image = match &self.image {
            ImageTowerConfig::Vit(v) => ImageTower::Vit(v.init(e, t, device)),
            ImageTowerConfig::Resnet(r) => ImageTower::Resnet(r.init(e, t, device)),
            ImageTowerConfig::ModifiedResnet(r) => ImageTower::ModifiedResnet(r.init(e, t, device)),
        };
        let image_token_reduction = match &self.image {
            ImageTowerConfig::Vit(v) => v.token_reduction.as_ref().map(|r| r.init(t, device)),
            ImageTowerConfig::Resnet(_) | ImageTowerConfig::ModifiedResnet(_) => None,
        };
        DualEncoder {
            image,
            image_token_reduction,
            text: self.text.init(e, t, device),
            logit_scale: Param::from_tensor(Tensor::from_floats([INIT_LOGIT_SCALE], device)),
            token_logit_scale: Param::from_tensor(Tensor::from_floats([INIT_LOGIT_SCALE], device)),
            arch: Architecture {
                image_activation: match &self.image {
                    ImageTowerConfig::Vit(v) => v.activation,
                    ImageTowerConfig::Resnet(_) | ImageTowerConfig::ModifiedResnet(_) => Activation::Gelu,
                },
                text_activation: self.text.activation,
                text_norm: self.text.norm,
            },
        }
    }
}

impl<B: Backend> DualEncoder<B> {
    /// `images`: `[batch, 3, size, size]`, normalised.
    pub fn encode_image(&self, images: Tensor<B, 4>) -> TowerOutput<B> {
        on_pool::<B, _>(|| match &self.image {
            ImageTower::Vit(v) => v.forward(images, self.image_token_reduction.as_ref(), self.arch.image_activation),
            ImageTower::Resnet(r) => r.forward(images),
            ImageTower::ModifiedResnet(r) => r.forward(images),
        })
    }

    /// `ids`: `[batch, context]`; `mask`: `[batch, context]`, 1 for a real token.
    pub fn encode_text(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> TowerOutput<B> {
        on_pool::<B, _>(|| self.text.forward(ids, mask, self.arch.text_activation, self.arch.text_norm))
    }

    /// [`Self::encode_image`]'s global embeddings alone, `[batch, embed_dim]`: what retrieval,
    /// scoring and indexing by vector need, without the token embeddings' projection.
    pub fn embed_image(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        on_pool::<B, _>(|| match &self.image {
            ImageTower::Vit(v) => v.forward_global(images, self.arch.image_activation),
            ImageTower::Resnet(r) => r.forward_global(images),
            ImageTower::ModifiedResnet(r) => r.forward_global(images),
        })
    }

    /// [`Self::encode_text`]'s global embeddings alone, `[batch, embed_dim]`.
    pub fn embed_text(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        on_pool::<B, _>(|| self.text.forward_global(ids, mask, self.arch.text_activation, self.arch.text_norm))
    }

    /// The weighted training loss of a batch of matching pairs (pair i = image i, text i),
    /// global and token-level. A config with `queue_weight > 0` needs [`Self::loss_with_queue`].
    pub fn loss(&self, images: Tensor<B, 4>, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, cfg: &LossConfig) -> LossOutput<B> {
        assert!(cfg.queue_weight == 0.0, "loss.queue_weight > 0 needs the momentum keys: call loss_with_queue");
        self.weighted_loss(images, ids, mask, cfg, None)
    }

    /// [`Self::loss`] plus BriVL's loss against the momentum towers' keys for this batch and
    /// the queues (constants on this backend).
    pub fn loss_with_queue(
        &self,
        images: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
        cfg: &LossConfig,
        queue: QueueInputs<B>,
    ) -> LossOutput<B> {
        self.weighted_loss(images, ids, mask, cfg, Some(queue))
    }

    fn weighted_loss(
        &self,
        images: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
        cfg: &LossConfig,
        queue: Option<QueueInputs<B>>,
    ) -> LossOutput<B> {
        let batch = self.encode_batch(images, ids, mask, cfg);
        self.loss_of(batch, cfg, queue)
    }

    /// Both towers' outputs for a batch of pairs, with the token outputs only where the loss
    /// uses them (`loss.token_weight > 0`): what a data-parallel step gathers across devices.
    pub fn encode_batch(&self, images: Tensor<B, 4>, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>, cfg: &LossConfig) -> BatchFeatures<B> {
        let img = self.encode_image(images);
        let txt = self.encode_text(ids, mask);
        let tokens = (cfg.token_weight > 0.0).then(|| TokenFeatures {
            image: img.tokens,
            text: txt.tokens,
            text_mask: txt.token_mask.expect("the text tower always returns its mask"),
        });
        BatchFeatures { image: img.global, text: txt.global, tokens }
    }

    /// The weighted loss of encoded pairs (pair i = image i, text i): global, token-level, and
    /// BriVL's against `queue` when `loss.queue_weight > 0`.
    pub fn loss_of(&self, batch: BatchFeatures<B>, cfg: &LossConfig, queue: Option<QueueInputs<B>>) -> LossOutput<B> {
        let queued = queue.filter(|_| cfg.queue_weight > 0.0).map(|q| {
            let scale = match cfg.momentum.temperature {
                Some(t) => Tensor::from_floats([1.0 / t], &batch.image.device()),
                None => self.logit_scale.val().exp(),
            };
            momentum::queue_loss(batch.image.clone(), batch.text.clone(), &q.keys, q.image_queue, q.text_queue, scale)
        });
        let global = (cfg.global_weight > 0.0).then(|| ClipLoss::forward(batch.image, batch.text, self.logit_scale.val()));
        let token = batch.tokens.map(|t| TokenwiseLoss::forward(t.image, t.text, t.text_mask, self.token_logit_scale.val()));
        LossOutput::weighted(global, token, queued, cfg)
    }
}

/// A batch's embeddings as the losses take them.
#[derive(Debug, Clone)]
pub struct BatchFeatures<B: Backend> {
    /// `[batch, embed_dim]`, L2-normalised.
    pub image: Tensor<B, 2>,
    /// `[batch, embed_dim]`, L2-normalised.
    pub text: Tensor<B, 2>,
    /// The token-level loss's inputs; `None` when it is off.
    pub tokens: Option<TokenFeatures<B>>,
}

/// FILIP's inputs: both towers' token embeddings and the text padding.
#[derive(Debug, Clone)]
pub struct TokenFeatures<B: Backend> {
    /// `[batch, image_tokens, token_dim]`, L2-normalised (reduced tokens where the model has them).
    pub image: Tensor<B, 3>,
    /// `[batch, context, token_dim]`, L2-normalised.
    pub text: Tensor<B, 3>,
    /// `[batch, context]`, 1 for a real token.
    pub text_mask: Tensor<B, 2>,
}

/// What BriVL's loss needs beside the batch: the momentum towers' keys for it and the queues'
/// filled rows (`[k, embed_dim]`, `None` while empty), all constants.
#[derive(Debug, Clone)]
pub struct QueueInputs<B: Backend> {
    pub keys: momentum::Keys<B>,
    pub image_queue: Option<Tensor<B, 2>>,
    pub text_queue: Option<Tensor<B, 2>>,
}
