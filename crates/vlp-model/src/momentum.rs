//! BriVL's momentum contrast across modalities (after MoCo): momentum (EMA) copies of both towers
//! embed each batch into keys, and two ring-buffer queues keep the keys of the last `queue_size`
//! samples as extra negatives, so a small batch still sees many of them.
//!
//! As in BriVL's `VL_model.forward`:
//! - the momentum towers start as copies of the online ones and follow them by
//!   `θ_k ← m·θ_k + (1 − m)·θ_q` (BriVL: `m` = 0.99); vlp applies the update right after each
//!   optimizer step, which is the moment BriVL's next forward applies it, so a checkpoint holds
//!   a momentum model and queues that belong to the same step;
//! - an image query's positive is its own text's key from the momentum text tower and its
//!   negatives are the text queue (and the other way round), at a fixed temperature (BriVL: 0.07)
//!   or, when none is configured, the global loss's learned one;
//! - after the step the batch's keys are enqueued in place of the oldest.
//!
//! Two departures, each for a reason:
//! - the other keys of the batch are negatives too (as ALBEF and BLIP do). BriVL's code leaves
//!   them out of this step and only meets them once they are in the queue; keeping them makes the
//!   loss with an empty queue and `m` = 0 equal the in-batch global loss, value for value
//!   (tested), so a queue only ever adds negatives;
//! - a queue starts empty and only its filled rows take part, where BriVL fills it with random
//!   unit vectors; a queue size that is not a multiple of the batch wraps around exactly.
//!
//! The loss is the mean of the two directions, as [`ClipLoss`](crate::ClipLoss)'s (BriVL adds
//! them: a factor of 2, which Adam's update does not see).

use crate::dual::DualEncoder;
use crate::loss::diagonal_cross_entropy;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// `[loss.momentum]`: BriVL's momentum encoders and queues; on when `loss.queue_weight > 0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MomentumConfig {
    /// EMA coefficient `m` of the momentum towers, in [0, 1).
    pub momentum: f32,
    /// Keys kept per modality; 0 leaves only the batch's own keys.
    pub queue_size: usize,
    /// Fixed temperature τ (logits = similarity / τ); `None` uses the learned `logit_scale`.
    pub temperature: Option<f32>,
}

impl Default for MomentumConfig {
    /// BriVL's settings.
    fn default() -> Self {
        MomentumConfig { momentum: 0.99, queue_size: 9600, temperature: Some(0.07) }
    }
}

/// A ring buffer of L2-normalised keys, `[capacity, dim]`; the oldest key is overwritten first.
#[derive(Module, Debug)]
pub struct KeyQueue<B: Backend> {
    /// `[capacity, dim]`; rows past `filled` are zeros.
    pub keys: Param<Tensor<B, 2>>,
}

/// Where a queue's next key goes and how many rows hold keys. Kept in the run's state beside the
/// step, since burn's records store tensors only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCursor {
    pub next: usize,
    pub filled: usize,
}

impl<B: Backend> KeyQueue<B> {
    pub fn new(capacity: usize, dim: usize, device: &B::Device) -> Self {
        KeyQueue { keys: Param::from_tensor(Tensor::zeros([capacity, dim], device)) }
    }

    pub fn capacity(&self) -> usize {
        self.keys.val().dims()[0]
    }

    /// The rows that hold keys, `[filled, dim]`, or `None` when there are none.
    pub fn filled(&self, cursor: QueueCursor) -> Option<Tensor<B, 2>> {
        (cursor.filled > 0).then(|| self.keys.val().slice([0..cursor.filled]))
    }

    /// Writes `batch` `[n, dim]` over the oldest keys (wrapping around) and returns the new
    /// cursor. A batch larger than the queue leaves its last `capacity` keys.
    pub fn enqueue(self, batch: Tensor<B, 2>, cursor: QueueCursor) -> (Self, QueueCursor) {
        let cap = self.capacity();
        let [n, _] = batch.dims();
        if cap == 0 || n == 0 {
            return (self, cursor);
        }
        let (batch, n) = if n > cap { (batch.slice([n - cap..n]), cap) } else { (batch, n) };
        let start = cursor.next % cap;
        let mut keys = self.keys.val();
        let first = n.min(cap - start);
        keys = keys.slice_assign([start..start + first], batch.clone().slice([0..first]));
        if first < n {
            keys = keys.slice_assign([0..n - first], batch.slice([first..n]));
        }
        let next = (start + n) % cap;
        let filled = (cursor.filled + n).min(cap);
        (KeyQueue { keys: Param::from_tensor(keys) }, QueueCursor { next, filled })
    }
}

/// The momentum towers and the two queues: the part of BriVL's training state that is not
/// trained by gradients. Lives on the inner (non-autodiff) backend.
#[derive(Module, Debug)]
pub struct MomentumState<B: Backend> {
    pub model: DualEncoder<B>,
    /// Keys from the momentum image tower: the text queries' negatives.
    pub image_queue: KeyQueue<B>,
    /// Keys from the momentum text tower: the image queries' negatives.
    pub text_queue: KeyQueue<B>,
}

/// A batch's keys from the momentum towers, `[batch, embed_dim]` each, L2-normalised.
#[derive(Debug, Clone)]
pub struct Keys<B: Backend> {
    pub image: Tensor<B, 2>,
    pub text: Tensor<B, 2>,
}

impl<B: Backend> MomentumState<B> {
    /// Momentum towers that start as `online` (the inner copy of the trained model).
    pub fn new(online: DualEncoder<B>, cfg: &MomentumConfig, embed_dim: usize, device: &B::Device) -> Self {
        MomentumState {
            model: online,
            image_queue: KeyQueue::new(cfg.queue_size, embed_dim, device),
            text_queue: KeyQueue::new(cfg.queue_size, embed_dim, device),
        }
    }

    /// The momentum towers' keys for a batch (`images` `[b, 3, s, s]`, `ids`/`mask` `[b, ctx]`).
    pub fn keys(&self, images: Tensor<B, 4>, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Keys<B> {
        Keys { image: self.model.embed_image(images), text: self.model.embed_text(ids, mask) }
    }

    /// After an optimizer step: `θ_k ← m·θ_k + (1 − m)·θ_q` for every parameter, then the
    /// batch's keys into the queues.
    pub fn update(self, online: &DualEncoder<B>, m: f32, keys: Keys<B>, cursor: QueueCursor) -> (Self, QueueCursor) {
        let model = ema(self.model, online, m);
        let (image_queue, c) = self.image_queue.enqueue(keys.image, cursor);
        let (text_queue, _) = self.text_queue.enqueue(keys.text, cursor);
        (MomentumState { model, image_queue, text_queue }, c)
    }
}

/// `momentum ← m·momentum + (1 − m)·online`, parameter by parameter (the two share one
/// structure, so their parameters come in the same order).
pub fn ema<B: Backend, M: Module<B>>(momentum: M, online: &M, m: f32) -> M {
    struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let n = t.shape().num_elements();
            self.0.push(t.reshape([n]));
        }
    }
    struct Blend<B: Backend> {
        online: std::vec::IntoIter<Tensor<B, 1>>,
        m: f32,
    }
    impl<B: Backend> ModuleMapper<B> for Blend<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let shape = tensor.shape();
            let online = self.online.next().expect("the momentum model has the online model's structure").reshape(shape);
            let blended = tensor.mul_scalar(self.m) + online.mul_scalar(1.0 - self.m);
            Param::from_mapped_value(id, blended, mapper)
        }
    }
    let mut collect = Collect(Vec::new());
    online.visit(&mut collect);
    let mut blend = Blend { online: collect.0.into_iter(), m };
    let out = momentum.map(&mut blend);
    assert!(blend.online.next().is_none(), "the online model has more parameters than the momentum model");
    out
}

/// BriVL's cross-modal loss against momentum keys and queues, scalar `[1]`.
///
/// `image`, `text`: the online towers' global embeddings `[b, e]` (L2-normalised, with
/// gradients); `keys`: the momentum towers' for the same batch (constants); `image_queue`,
/// `text_queue`: the queues' filled rows `[k, e]`; `scale`: the inverse temperature `[1]`.
/// Image `i`'s logits are `scale · image_i · [text keys ; text queue]ᵀ` with its positive at
/// column `i`, and the same for the texts.
pub fn queue_loss<B: Backend>(
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    keys: &Keys<B>,
    image_queue: Option<Tensor<B, 2>>,
    text_queue: Option<Tensor<B, 2>>,
    scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let direction = |query: Tensor<B, 2>, positives: Tensor<B, 2>, queue: Option<Tensor<B, 2>>| {
        let candidates = match queue {
            Some(q) => Tensor::cat(vec![positives, q], 0),
            None => positives,
        };
        diagonal_cross_entropy(query.matmul(candidates.transpose()) * scale.clone().unsqueeze_dim(0))
    };
    let i2t = direction(image, keys.text.clone(), text_queue);
    let t2i = direction(text, keys.image.clone(), image_queue);
    (i2t + t2i).div_scalar(2.0)
}
