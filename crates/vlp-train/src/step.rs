//! One training step of one replica: its slice of the global batch encoded, the embeddings
//! gathered over the data-parallel group (nothing to gather on one device), the weighted loss
//! over the whole batch, backward, the gradients summed over the group, the AdamW step, and
//! BriVL's momentum update with the whole batch's keys. Every replica of a group runs the same
//! steps on the same global batches, so all hold the same weights after each.
//!
//! With `train.grad_accum` = N, a replica's slice is encoded in N micro-batches, twice: first
//! without a graph, to compute the loss over the whole global batch from those embeddings (held
//! as leaves), then each micro-batch again with its graph, taking the embeddings' gradients from
//! the first pass into the encoders (gradient caching, Gao et al. 2021; OpenCLIP's `--accum-freq`
//! reaches the same gradient by recomputing the loss per micro-batch). The encoders then hold
//! one micro-batch's activations at a time, and the gradient is the whole batch's, for every
//! loss: `tests/accumulation.rs` checks it against one pass. A ResNet tower's batch norm sees
//! each micro-batch's statistics, as in OpenCLIP.

use crate::config::{RunConfig, Tower};
use crate::optimizer::{ClipOptimizer, StepReport};
use crate::parallel::{slice_of, Rank};
use crate::Result;
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use std::ops::Range;
use std::sync::Arc;
use vlp_data::loader::Batch;
use vlp_model::momentum::Keys;
use vlp_model::{BatchFeatures, DualEncoder, LossOutput, MomentumState, QueueCursor, QueueInputs, TokenFeatures};

/// What one replica trains: the model, its optimizer, and BriVL's momentum towers and queues
/// when the loss uses them.
#[derive(Clone)]
pub struct Replica<B: AutodiffBackend> {
    pub model: DualEncoder<B>,
    pub optim: ClipOptimizer<B>,
    pub momentum: Option<MomentumState<B::InnerBackend>>,
}

/// A step's forward pass, before backward.
pub struct Forward<B: AutodiffBackend> {
    /// The loss over the whole global batch, the same on every replica.
    pub out: LossOutput<B>,
    /// The loss's value.
    pub loss: f32,
    /// Pairs in the global batch.
    pub pairs: usize,
    /// The whole batch's momentum keys, to enqueue after the step.
    keys: Option<Keys<B::InnerBackend>>,
    /// With micro-batches, what their second pass needs.
    cached: Option<Cached<B>>,
}

/// A slice encoded in micro-batches: its inputs, and the embeddings the loss was computed from,
/// as leaves whose gradients the second pass carries into the encoders.
struct Cached<B: AutodiffBackend> {
    inputs: (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2>),
    features: BatchFeatures<B>,
    micro: usize,
}

/// How a step's update ended.
#[allow(clippy::large_enum_variant)] // one per step, moved once
pub enum Updated<B: AutodiffBackend> {
    Stepped {
        replica: Replica<B>,
        report: StepReport,
        queue: QueueCursor,
    },
    /// The gradient norm was not finite; nothing was changed.
    NonFinite {
        grad_norm: f32,
    },
}

/// `rows` of a batch as tensors on `device`: images `[rows, 3, s, s]`, token ids and mask
/// `[rows, context]`.
fn slice_tensors<B: AutodiffBackend>(
    batch: &Batch,
    rows: Range<usize>,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let (m, s, ctx) = (rows.len(), batch.image_size as usize, batch.context);
    let px = 3 * s * s;
    let images = batch.images[rows.start * px..rows.end * px].to_vec();
    let images = Tensor::<B, 4>::from_data(TensorData::new(images, [m, 3, s, s]), device);
    let ids: Vec<i32> = batch.ids[rows.start * ctx..rows.end * ctx].iter().map(|&x| x as i32).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [m, ctx]), device);
    let mask: Vec<f32> = batch.mask[rows.start * ctx..rows.end * ctx].iter().map(|&x| x as f32).collect();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [m, ctx]), device);
    (images, ids, mask)
}

impl<B: AutodiffBackend> Replica<B> {
    /// Encodes this replica's slice of `batch` (the process's part of the global batch), gathers
    /// the group's, and computes the loss over the whole global batch against the queues as they
    /// stand at `queue`. `None`: another machine's part of the data has run out, which ends the
    /// epoch on every machine before this step.
    pub fn forward(
        &self,
        batch: &Batch,
        cfg: &RunConfig,
        queue: QueueCursor,
        rank: &Rank,
        device: &B::Device,
    ) -> Result<Option<Forward<B>>> {
        let Some((rows, layout)) = rank.layout::<B::InnerBackend>(Some(batch.len()), device)? else { return Ok(None) };
        let _precision = vlp_model::autocast::scope(cfg.train.precision);
        let (images, ids, mask) = slice_tensors::<B>(batch, rows.clone(), device);
        let keys = match &self.momentum {
            None => None,
            Some(m) => {
                let local = m.keys(images.clone().inner(), ids.clone().inner(), mask.clone().inner());
                Some(Keys {
                    image: rank.gather("gathering image keys", local.image, &layout)?,
                    text: rank.gather("gathering text keys", local.text, &layout)?,
                })
            }
        };
        let micro = cfg.train.grad_accum;
        let (local, cached) = if micro == 1 {
            (self.model.encode_batch(images, ids, mask, &cfg.loss), None)
        } else {
            if rows.len() < micro {
                return Err(crate::TrainError::Other(format!(
                    "train.grad_accum {micro}: a replica holds {} pairs of this batch, fewer than its micro-batches",
                    rows.len()
                )));
            }
            let frozen = self.model.clone().no_grad();
            let parts: Vec<BatchFeatures<B>> = (0..micro)
                .map(|i| {
                    let (im, id, m) = micro_batch(&images, &ids, &mask, slice_of(rows.len(), i, micro));
                    frozen.encode_batch(im, id, m, &cfg.loss)
                })
                .collect();
            let features = leaves(parts);
            (features.clone(), Some(Cached { inputs: (images, ids, mask), features, micro }))
        };
        let features = rank.gather_features(local, &layout)?;
        let queued = match (&self.momentum, &keys) {
            (Some(m), Some(k)) => Some(QueueInputs {
                keys: Keys { image: Tensor::from_inner(k.image.clone()), text: Tensor::from_inner(k.text.clone()) },
                image_queue: m.image_queue.filled(queue).map(Tensor::from_inner),
                text_queue: m.text_queue.filled(queue).map(Tensor::from_inner),
            }),
            _ => None,
        };
        let out = self.model.loss_of(features, &cfg.loss, queued);
        let loss = out.total.clone().into_scalar().elem();
        Ok(Some(Forward { out, loss, pairs: layout.total(), keys, cached }))
    }

    /// Backward, the group's gradients summed, one optimizer step at `lr`, then BriVL's momentum
    /// update and the batch's keys into the queues.
    pub fn update(self, fwd: Forward<B>, lr: f64, cfg: &RunConfig, queue: QueueCursor, rank: &Rank) -> Result<Updated<B>> {
        let Replica { model, mut optim, momentum } = self;
        let grads = fwd.out.total.backward();
        let grads = match fwd.cached {
            None => vec![(grads, model.clone())],
            Some(cached) => second_pass(&model, cached, grads, cfg),
        };
        let (model, report) = match optim.step_in_group(lr, model, grads, rank)? {
            Ok(stepped) => stepped,
            Err((_, grad_norm)) => return Ok(Updated::NonFinite { grad_norm }),
        };
        let (momentum, queue) = match (momentum, fwd.keys) {
            (Some(m), Some(keys)) => {
                let (m, cursor) = m.update(&model.valid(), cfg.loss.momentum.momentum, keys, queue);
                (Some(m), cursor)
            }
            (m, _) => (m, queue),
        };
        Ok(Updated::Stepped { replica: Replica { model, optim, momentum }, report, queue })
    }
}

/// `rows` of a slice's inputs.
fn micro_batch<B: AutodiffBackend>(
    images: &Tensor<B, 4>,
    ids: &Tensor<B, 2, Int>,
    mask: &Tensor<B, 2>,
    rows: Range<usize>,
) -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    (images.clone().slice(rows.clone()), ids.clone().slice(rows.clone()), mask.clone().slice(rows))
}

/// The micro-batches' embeddings (computed without a graph) joined into the slice's, as leaves
/// that take gradients. The text mask stays a constant.
fn leaves<B: AutodiffBackend>(parts: Vec<BatchFeatures<B>>) -> BatchFeatures<B> {
    let cat2 = |f: &dyn Fn(&BatchFeatures<B>) -> Tensor<B, 2>| Tensor::cat(parts.iter().map(f).collect(), 0);
    let cat3 = |f: &dyn Fn(&BatchFeatures<B>) -> Tensor<B, 3>| Tensor::cat(parts.iter().map(f).collect(), 0);
    let tokens = parts[0].tokens.is_some().then(|| TokenFeatures {
        image: cat3(&|p| p.tokens.as_ref().expect("every part has tokens").image.clone()).require_grad(),
        text: cat3(&|p| p.tokens.as_ref().expect("every part has tokens").text.clone()).require_grad(),
        text_mask: cat2(&|p| p.tokens.as_ref().expect("every part has tokens").text_mask.clone()),
    });
    BatchFeatures { image: cat2(&|p| p.image.clone()).require_grad(), text: cat2(&|p| p.text.clone()).require_grad(), tokens }
}

/// The second pass of gradient caching: each micro-batch encoded again with its graph, and the
/// backward of Σ embedding · (the loss's gradient for it), which gives the encoders' gradient for
/// that micro-batch. Returns the loss's own gradients (the temperatures') and one set per
/// micro-batch, each beside the copy of the model it was taken on, for the optimizer to add up.
fn second_pass<B: AutodiffBackend>(
    model: &DualEncoder<B>,
    cached: Cached<B>,
    grads: B::Gradients,
    cfg: &RunConfig,
) -> Vec<(B::Gradients, DualEncoder<B>)> {
    let Cached { inputs: (images, ids, mask), features, micro } = cached;
    // The loss's gradient for each of the slice's embeddings, as `[rows, _, _]`, beside whether
    // its tower trains (a locked tower's embeddings have no graph): global image and text, then
    // the tokens' when the token-level loss is on.
    let (image, text) = (cfg.train.lock != Some(Tower::Image), cfg.train.lock != Some(Tower::Text));
    let grad2 = |t: &Tensor<B, 2>| t.grad(&grads).map(|g| Tensor::<B, 2>::from_inner(g).unsqueeze_dim::<3>(2));
    let grad3 = |t: &Tensor<B, 3>| t.grad(&grads).map(Tensor::<B, 3>::from_inner);
    let tokens = features.tokens.as_ref();
    let wanted = [
        (grad2(&features.image), image),
        (grad2(&features.text), text),
        (tokens.and_then(|t| grad3(&t.image)), image),
        (tokens.and_then(|t| grad3(&t.text)), text),
    ];
    let n = images.dims()[0];
    let _precision = vlp_model::autocast::scope(cfg.train.precision);
    let mut out = vec![(grads, model.clone())];
    for i in 0..micro {
        let rows = slice_of(n, i, micro);
        let (im, id, m) = micro_batch(&images, &ids, &mask, rows.clone());
        let fresh = model.clone().map(&mut FreshLeaves);
        let f = fresh.encode_batch(im, id, m, &cfg.loss);
        let (token_image, token_text) = f.tokens.map(|t| (t.image, t.text)).unzip();
        let embeddings = [Some(f.image.unsqueeze_dim::<3>(2)), Some(f.text.unsqueeze_dim::<3>(2)), token_image, token_text];
        let surrogate = embeddings
            .into_iter()
            .zip(&wanted)
            .filter_map(|(e, (g, trains))| match (e, g, trains) {
                (Some(e), Some(g), true) => Some((e * g.clone().slice(rows.clone())).sum()),
                _ => None,
            })
            .reduce(|a, b| a + b);
        if let Some(surrogate) = surrogate {
            out.push((surrogate.backward(), fresh));
        }
    }
    out
}

/// The model's parameters as new autodiff leaves (the same ids and values; a locked tower's stay
/// without gradients): each micro-batch's pass runs on its own. Passes on the same leaves, one
/// backward after another, came out wrong now and then when another graph of the process ran
/// its backward at the same moment (burn-autodiff 0.21's graph clean-up is process-wide, and a
/// leaf already used by a finished backward is reused; seen in `tests/accumulation.rs` under
/// load, gradient norms off by 1-7 %); with fresh leaves the passes share no node.
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|t| {
            let trains = t.is_require_grad();
            t.detach().set_require_grad(trains)
        })
    }
}

/// Work the first replica of a process hands the others.
pub enum Work {
    Step {
        batch: Arc<Batch>,
        lr: f64,
        queue: QueueCursor,
    },
    /// This machine's part of the data has run out for this epoch.
    EndOfPart,
}

/// The loop of a replica other than the first: the same steps on the batches it is handed,
/// until the first replica hangs up. A step the first replica will refuse (a loss or gradient
/// that is not finite, the same on every replica) ends it quietly: the first reports it.
pub fn follow<B: AutodiffBackend>(
    mut replica: Replica<B>,
    cfg: &RunConfig,
    rank: &Rank,
    device: &B::Device,
    work: std::sync::mpsc::Receiver<Work>,
) -> Result<()> {
    rank.register::<B::InnerBackend>(device)?;
    while let Ok(work) = work.recv() {
        let (batch, lr, queue) = match work {
            Work::Step { batch, lr, queue } => (batch, lr, queue),
            Work::EndOfPart => {
                rank.end_of_part::<B::InnerBackend>(device)?;
                continue;
            }
        };
        let Some(fwd) = replica.forward(&batch, cfg, queue, rank, device)? else { continue };
        if !fwd.loss.is_finite() {
            break;
        }
        replica = match replica.update(fwd, lr, cfg, queue, rank)? {
            Updated::Stepped { replica, .. } => replica,
            Updated::NonFinite { .. } => break,
        };
    }
    rank.finish::<B::InnerBackend>()
}
