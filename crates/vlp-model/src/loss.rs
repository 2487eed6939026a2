//! The two contrastive losses.
//!
//! - [`ClipLoss`]: symmetric InfoNCE over the batch on the global embeddings (CLIP).
//! - [`TokenwiseLoss`]: FILIP's token-level late interaction (used by Wukong). Image→text
//!   similarity = mean over image tokens of the max over the text's real tokens; text→image = mean
//!   over the text's real tokens of the max over image tokens. The two matrices differ. Padding
//!   never takes part: −∞ before every max over text tokens, a masked mean over text tokens.
//!
//! Both take a *log* inverse temperature (`logit_scale`), exponentiated here, as CLIP does.

use crate::config::LossConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of each row of `logits` `[n, m]` (m ≥ n) against the diagonal: row `i`'s
/// target is column `i`.
pub(crate) fn diagonal_cross_entropy<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let target = Tensor::<B, 1, Int>::arange(0..n as i64, &logits.device()).reshape([n, 1]);
    log_softmax(logits, 1).gather(1, target).mean().neg()
}

pub struct ClipLoss;

impl ClipLoss {
    /// `image`, `text`: `[batch, dim]`, L2-normalised → image→text logits `[batch, batch]`
    /// (text→image is the transpose).
    pub fn logits<B: Backend>(image: Tensor<B, 2>, text: Tensor<B, 2>, logit_scale: Tensor<B, 1>) -> Tensor<B, 2> {
        image.matmul(text.transpose()) * logit_scale.exp().unsqueeze_dim(0)
    }

    /// Scalar loss `[1]`.
    pub fn forward<B: Backend>(image: Tensor<B, 2>, text: Tensor<B, 2>, logit_scale: Tensor<B, 1>) -> Tensor<B, 1> {
        let logits = Self::logits(image, text, logit_scale);
        (diagonal_cross_entropy(logits.clone()) + diagonal_cross_entropy(logits.transpose())).div_scalar(2.0)
    }
}

pub struct TokenwiseLoss;

impl TokenwiseLoss {
    /// Token-level similarities, before the temperature.
    ///
    /// `image`: `[bi, n, d]`, `text`: `[bt, l, d]` (both L2-normalised), `text_mask`: `[bt, l]`
    /// (1 = real token). Returns (image→text `[bi, bt]`, text→image `[bt, bi]`).
    pub fn similarities<B: Backend>(image: Tensor<B, 3>, text: Tensor<B, 3>, text_mask: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [bi, n, d] = image.dims();
        let [bt, l, _] = text.dims();
        // sim[i, p, j, q] = image token p of image i · text token q of text j
        let sim = image.reshape([bi * n, d]).matmul(text.reshape([bt * l, d]).transpose()).reshape([bi, n, bt, l]);
        let pad = text_mask.clone().lower_elem(0.5).reshape([1, 1, bt, l]).expand([bi, n, bt, l]);
        let i2t = sim
            .clone()
            .mask_fill(pad, f32::NEG_INFINITY)
            .max_dim(3) // best text token for each image token: [bi, n, bt, 1]
            .mean_dim(1) // over image tokens: [bi, 1, bt, 1]
            .reshape([bi, bt]);
        let mask = text_mask.reshape([1, bt, l]);
        let best_image_token = sim.max_dim(1).reshape([bi, bt, l]);
        let t2i = (best_image_token * mask.clone()).sum_dim(2).reshape([bi, bt]) / mask.sum_dim(2).reshape([1, bt]);
        (i2t, t2i.transpose())
    }

    /// Scalar loss `[1]`.
    pub fn forward<B: Backend>(
        image: Tensor<B, 3>,
        text: Tensor<B, 3>,
        text_mask: Tensor<B, 2>,
        logit_scale: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let (i2t, t2i) = Self::similarities(image, text, text_mask);
        let scale = logit_scale.exp().unsqueeze_dim::<2>(0);
        (diagonal_cross_entropy(i2t * scale.clone()) + diagonal_cross_entropy(t2i * scale)).div_scalar(2.0)
    }
}

/// The weighted sum and its parts (each `[1]`).
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    pub total: Tensor<B, 1>,
    pub global: Option<Tensor<B, 1>>,
    pub token: Option<Tensor<B, 1>>,
    /// BriVL's loss against the momentum keys and queues.
    pub queue: Option<Tensor<B, 1>>,
}

impl<B: Backend> LossOutput<B> {
    pub fn weighted(global: Option<Tensor<B, 1>>, token: Option<Tensor<B, 1>>, queue: Option<Tensor<B, 1>>, cfg: &LossConfig) -> Self {
        let parts = [(&global, cfg.global_weight), (&token, cfg.token_weight), (&queue, cfg.queue_weight)];
        let total = parts
            .into_iter()
            .filter_map(|(part, w)| part.as_ref().map(|p| p.clone().mul_scalar(w)))
            .reduce(|a, b| a + b)
            .expect("LossConfig::validate refuses a config with every weight 0");
        LossOutput { total, global, token, queue }
    }
}
