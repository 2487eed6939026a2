//! AdamW as OpenCLIP configures it: weight decay on every parameter of two or more dimensions
//! (matrices, convolutions, token and position embeddings) and none on vectors (gains, biases,
//! the class token, the temperatures), gradients clipped by their global norm when configured,
//! and the logit scales clamped to [0, ln 100] after each step.
//!
//! The split is OpenCLIP's (`open_clip_train/main.py`: no decay where `ndim < 2` or the name holds
//! `bn`, `ln`, `bias` or `logit_scale`, all of which are vectors here). vlp used to exclude the
//! embeddings too; with burn's N(0, 1) token embedding that left its rows at std ≈ 1 after
//! training, where CLIP's start at 0.02 and are decayed.

use crate::config::{Tower, TrainConfig};
use crate::parallel::Rank;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use vlp_model::{DualEncoder, MAX_LOGIT_SCALE};

type Adam<B> = OptimizerAdaptor<AdamW, DualEncoder<B>, B>;

/// Which parameters take weight decay, found once from the module's structure.
#[derive(Debug, Clone, Default)]
pub struct DecaySplit {
    pub decay: Vec<ParamId>,
    pub no_decay: Vec<ParamId>,
    /// Paths of the parameters without decay, for the log.
    pub no_decay_names: Vec<String>,
}

struct SplitVisitor {
    path: Vec<String>,
    split: DecaySplit,
    /// The locked tower's field: its parameters are in neither list.
    locked: Option<&'static str>,
}

impl<B: Backend> ModuleVisitor<B> for SplitVisitor {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.locked.is_some_and(|t| self.path.first().is_some_and(|p| p == t)) {
            return;
        }
        let path = self.path.join(".");
        if D < 2 {
            self.split.no_decay.push(param.id);
            self.split.no_decay_names.push(path);
        } else {
            self.split.decay.push(param.id);
        }
    }
}

impl DecaySplit {
    /// The split of every parameter but those of the `locked` tower, which the optimizer never
    /// sees.
    pub fn of<B: Backend, M: Module<B>>(module: &M, locked: Option<Tower>) -> Self {
        let mut v = SplitVisitor { path: Vec::new(), split: DecaySplit::default(), locked: locked.map(Tower::field) };
        module.visit(&mut v);
        v.split
    }
}

/// Sums the squares of every gradient, then scales them all by one factor.
struct GlobalNorm<'a, B: AutodiffBackend> {
    grads: [&'a mut GradientsParams; 2],
    sum_sq: Option<Tensor<B::InnerBackend, 1>>,
    scale: Option<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GlobalNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        for g in self.grads.iter_mut() {
            match self.scale {
                None => {
                    if let Some(t) = g.get::<B::InnerBackend, D>(param.id) {
                        let s = t.powi_scalar(2).sum();
                        self.sum_sq = Some(match self.sum_sq.take() {
                            Some(acc) => acc + s,
                            None => s,
                        });
                    }
                }
                Some(c) => {
                    if let Some(t) = g.remove::<B::InnerBackend, D>(param.id) {
                        g.register(param.id, t.mul_scalar(c));
                    }
                }
            }
        }
    }
}

/// The optimizer of a run: two AdamW states (with and without weight decay).
#[derive(Clone)]
pub struct ClipOptimizer<B: AutodiffBackend> {
    decayed: Adam<B>,
    plain: Adam<B>,
    split: DecaySplit,
    clip: f32,
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

impl<B: AutodiffBackend> ClipOptimizer<B> {
    pub fn new(model: &DualEncoder<B>, cfg: &TrainConfig) -> Self {
        let base = AdamWConfig::new().with_beta_1(cfg.beta1).with_beta_2(cfg.beta2).with_epsilon(cfg.eps);
        ClipOptimizer {
            decayed: base.clone().with_weight_decay(cfg.weight_decay).init(),
            plain: base.with_weight_decay(0.0).init(),
            split: DecaySplit::of(model, cfg.lock),
            clip: cfg.grad_clip_norm,
        }
    }

    pub fn split(&self) -> &DecaySplit {
        &self.split
    }

    /// Backward has been run; applies one step at `lr` and clamps the temperatures. A gradient
    /// that is not finite is refused (`Err` with its norm) and the model is returned unchanged.
    #[allow(clippy::result_large_err)] // the model itself comes back, as the step consumed it
    pub fn step(
        &mut self,
        lr: f64,
        model: DualEncoder<B>,
        grads: B::Gradients,
    ) -> Result<(DualEncoder<B>, StepReport), (DualEncoder<B>, f32)> {
        self.step_in_group(lr, model.clone(), vec![(grads, model)], &Rank::single()).expect("a group of one makes no collective calls")
    }

    /// [`Self::step`] for one replica of a data-parallel group: the replicas' gradients are
    /// summed (`Rank::sum_gradients`) before the norm is taken. The outer `Err` is a failed
    /// collective call.
    #[allow(clippy::type_complexity)]
    pub fn step_in_group(
        &mut self,
        lr: f64,
        model: DualEncoder<B>,
        grads: Vec<(B::Gradients, DualEncoder<B>)>,
        rank: &Rank,
    ) -> crate::Result<Result<(DualEncoder<B>, StepReport), (DualEncoder<B>, f32)>> {
        // several backward passes (micro-batches) add up, each read through the copy of the
        // model it ran on (the same parameter ids); one is taken as it is
        let (mut decayed, mut plain) = (GradientsAccumulator::new(), GradientsAccumulator::new());
        for (mut g, of) in grads {
            decayed.accumulate(&model, GradientsParams::from_params(&mut g, &of, &self.split.decay));
            plain.accumulate(&model, GradientsParams::from_params(&mut g, &of, &self.split.no_decay));
        }
        let (mut g_decay, mut g_plain) = (decayed.grads(), plain.grads());
        rank.sum_gradients(&model, [&mut g_decay, &mut g_plain])?;
        let mut norm = GlobalNorm::<B> { grads: [&mut g_decay, &mut g_plain], sum_sq: None, scale: None };
        model.visit(&mut norm);
        let grad_norm = norm.sum_sq.take().map(|s| s.sqrt().into_scalar().elem::<f32>()).unwrap_or(0.0f32);
        if !grad_norm.is_finite() {
            return Ok(Err((model, grad_norm)));
        }
        if self.clip > 0.0 && grad_norm > self.clip {
            norm.scale = Some(self.clip / (grad_norm + 1e-6));
            model.visit(&mut norm);
        }
        let model = self.decayed.step(lr, model, g_decay);
        let model = self.plain.step(lr, model, g_plain);
        Ok(Ok((clamp_temperatures(model), StepReport { grad_norm })))
    }

    pub fn to_records(&self) -> (<Adam<B> as Optimizer<DualEncoder<B>, B>>::Record, <Adam<B> as Optimizer<DualEncoder<B>, B>>::Record) {
        (self.decayed.to_record(), self.plain.to_record())
    }

    pub fn load_records(
        mut self,
        decayed: <Adam<B> as Optimizer<DualEncoder<B>, B>>::Record,
        plain: <Adam<B> as Optimizer<DualEncoder<B>, B>>::Record,
    ) -> Self {
        self.decayed = self.decayed.load_record(decayed);
        self.plain = self.plain.load_record(plain);
        self
    }
}

/// The model with `tower` taking no gradients (LiT): backward does not reach into it, and
/// [`ClipOptimizer`] leaves it out. Applied again after every load, as the flag is not saved.
pub fn lock<B: AutodiffBackend>(mut model: DualEncoder<B>, tower: Option<Tower>) -> DualEncoder<B> {
    match tower {
        Some(Tower::Image) => model.image = model.image.no_grad(),
        Some(Tower::Text) => model.text = model.text.no_grad(),
        None => {}
    }
    model
}

/// Clamps both log temperatures to [0, ln 100], keeping their parameter ids.
pub fn clamp_temperatures<B: AutodiffBackend>(mut model: DualEncoder<B>) -> DualEncoder<B> {
    let clamp = |p: Param<Tensor<B, 1>>| {
        let (id, t, _) = p.consume();
        let inner = t.inner().clamp(0.0, MAX_LOGIT_SCALE);
        Param::initialized(id, Tensor::from_inner(inner).require_grad())
    };
    model.logit_scale = clamp(model.logit_scale);
    model.token_logit_scale = clamp(model.token_logit_scale);
    model
}

struct Finite<B: Backend> {
    bad: Option<Tensor<B, 1, burn::tensor::Bool>>,
}

impl<B: Backend> ModuleVisitor<B> for Finite<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let bad = param.val().is_finite().bool_not().any();
        self.bad = Some(match self.bad.take() {
            Some(acc) => acc.bool_or(bad),
            None => bad,
        });
    }
}

/// True when every parameter is finite (one device sync).
pub fn all_finite<B: Backend, M: Module<B>>(model: &M) -> bool {
    let mut v = Finite::<B> { bad: None };
    model.visit(&mut v);
    v.bad.map(|b| !b.into_scalar().elem::<bool>()).unwrap_or(true)
}

/// The model without autodiff, for encoding.
pub fn inference_model<B: AutodiffBackend>(model: &DualEncoder<B>) -> DualEncoder<B::InnerBackend> {
    model.valid()
}
