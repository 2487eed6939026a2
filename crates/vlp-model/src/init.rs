//! How every parameter is drawn at initialisation, after the reference implementations.
//!
//! burn's defaults (embeddings N(0, 1), every linear weight and bias U(±1/√fan_in)) are not what
//! CLIP-style models start from, and the start matters: trained side by side with OpenCLIP on the
//! emoji split (700 steps, `tiny.toml` shapes), vlp on burn's defaults ended at a training loss of
//! 2.50 against OpenCLIP's 1.55, and OpenCLIP re-initialised from burn's defaults followed vlp's
//! curve within 0.04. The schemes here are the ones the towers' reference code uses:
//!
//! | tower | scheme | reference |
//! |---|---|---|
//! | causal text (CLIP) | [`BlockInit::clip_text`]: token embedding N(0, 0.02), positions N(0, 0.01), q/k/v N(0, w^-½), attention output and MLP output N(0, w^-½·(2L)^-½), MLP input N(0, (2w)^-½), projection N(0, w^-½) | OpenCLIP `TextTransformer.init_parameters` |
//! | bidirectional text (BERT) | [`BlockInit::bert`]: every weight and embedding N(0, 0.02), biases 0, projection N(0, w^-½) | BERT `_init_weights`, Chinese-CLIP's `text_projection` |
//! | ViT | [`BlockInit::pytorch_default`]: class token and positions N(0, w^-½), q/k/v Xavier-uniform with zero bias, other linears U(±1/√fan_in), projection N(0, w^-½) | OpenCLIP `VisionTransformer` (no `init_parameters`: PyTorch's module defaults) |
//! | ResNet | convolutions U(±1/√fan_in), the last BatchNorm γ of each bottleneck 0, attention pool N(0, c^-½) | OpenCLIP `ModifiedResNet.init_parameters` |
//!
//! Biases that PyTorch leaves at their module default keep U(±1/√fan_in) here too.
//! `tests/init.rs` draws every tower at a width large enough to measure, and checks the mean,
//! spread and range of every parameter against its scheme.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Shape, Tensor};
use std::cell::Cell;

/// The backend's random generator is one per process: two threads drawing at once (tests run
/// several trainings side by side) interleave their draws, and a seeded initialisation is no
/// longer repeatable. Hold this while seeding and drawing a model, and while building a model
/// only to load weights into it outside [`for_loading`] (burn may draw a parameter's initial
/// value when it is replaced).
pub fn rng_guard() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// Whether [`Init::param`] draws its value now (always, outside [`for_loading`]).
    static DRAW_NOW: Cell<bool> = const { Cell::new(true) };
}

/// Runs `build` (a model's `init`) so that its parameters are not drawn when they are built, only
/// if one is read before it is replaced: for a model built to have its weights loaded from a
/// checkpoint. Drawing ViT-B/32's 151 M values only to throw them away was half of its 3.7 s
/// load (perf). Seeded initialisation outside this is unchanged: the same draws in the same
/// order. burn's `load_record` replaces a parameter that was never drawn without drawing it.
pub fn for_loading<T>(build: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DRAW_NOW.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DRAW_NOW.with(|d| d.replace(false)));
    build()
}

/// One parameter's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// N(0, std²).
    Normal(f64),
    /// U(−bound, bound).
    Uniform(f64),
    Zeros,
}

impl Init {
    /// PyTorch's default for `nn.Linear` and `nn.Conv2d` weights and biases:
    /// kaiming-uniform with a = √5, i.e. U(±1/√fan_in).
    pub fn torch_default(fan_in: usize) -> Self {
        Init::Uniform((fan_in as f64).powf(-0.5))
    }

    /// Xavier (Glorot) uniform: U(±√(6 / (fan_in + fan_out))).
    pub fn xavier_uniform(fan_in: usize, fan_out: usize) -> Self {
        Init::Uniform((6.0 / (fan_in + fan_out) as f64).sqrt())
    }

    pub fn tensor<B: Backend, const D: usize>(self, shape: [usize; D], device: &B::Device) -> Tensor<B, D> {
        match self {
            Init::Normal(std) => Tensor::random(shape, Distribution::Normal(0.0, std), device),
            Init::Uniform(bound) => Tensor::random(shape, Distribution::Uniform(-bound, bound), device),
            Init::Zeros => Tensor::zeros(shape, device),
        }
    }

    /// A parameter of this distribution, drawn now, or on first read inside [`for_loading`].
    pub fn param<B: Backend, const D: usize>(self, shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
        if DRAW_NOW.with(Cell::get) {
            return Param::from_tensor(self.tensor(shape, device));
        }
        let draw = move |device: &B::Device, require_grad: bool| {
            let t = self.tensor(shape, device);
            if require_grad {
                t.require_grad()
            } else {
                t
            }
        };
        Param::uninitialized(ParamId::new(), draw, device.clone(), true, Shape::new(shape))
    }
}

/// A linear layer's two draws; `bias: None` builds the layer without a bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearInit {
    pub weight: Init,
    pub bias: Option<Init>,
}

impl LinearInit {
    /// PyTorch's `nn.Linear` default for `[fan_in] → [..]`, weight and bias.
    pub fn torch_default(fan_in: usize) -> Self {
        LinearInit { weight: Init::torch_default(fan_in), bias: Some(Init::torch_default(fan_in)) }
    }

    /// A projection without bias, weight N(0, std²).
    pub fn projection(std: f64) -> Self {
        LinearInit { weight: Init::Normal(std), bias: None }
    }

    /// `[d_in] → [d_out]`, weight stored `[d_in, d_out]` as burn's `Linear`.
    pub fn init<B: Backend>(self, d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
        Linear { weight: self.weight.param([d_in, d_out], device), bias: self.bias.map(|b| b.param([d_out], device)) }
    }
}

/// Which reference implementation a transformer's blocks are drawn after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockScheme {
    /// [`BlockInit::clip_text`]
    ClipText,
    /// [`BlockInit::pytorch_default`]
    PyTorchDefault,
    /// [`BlockInit::bert`]
    Bert,
}

impl BlockScheme {
    /// The draws for a block of this width, MLP width and depth.
    pub fn draws(self, width: usize, hidden: usize, layers: usize) -> BlockInit {
        match self {
            BlockScheme::ClipText => BlockInit::clip_text(width, hidden, layers),
            BlockScheme::PyTorchDefault => BlockInit::pytorch_default(width, hidden),
            BlockScheme::Bert => BlockInit::bert(),
        }
    }
}

/// The draws for the four linear layers of a pre-norm residual block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockInit {
    /// `[w] → [3w]`: queries, keys, values (PyTorch's `in_proj_weight`).
    pub qkv: LinearInit,
    /// `[w] → [w]`: the attention's output (`out_proj`).
    pub out: LinearInit,
    /// `[w] → [hidden]`: the MLP's input (`c_fc`).
    pub fc: LinearInit,
    /// `[hidden] → [w]`: the MLP's output (`c_proj`).
    pub proj: LinearInit,
}

impl BlockInit {
    /// OpenCLIP's text tower (the GPT-2/CLIP convention): inputs at `w^-½`, the two residual
    /// outputs further scaled by `(2·layers)^-½` to keep the residual stream's variance flat with
    /// depth. Attention biases 0 (`nn.MultiheadAttention`), MLP biases PyTorch's default.
    pub fn clip_text(width: usize, hidden: usize, layers: usize) -> Self {
        let w = width as f64;
        let attn_std = w.powf(-0.5);
        let proj_std = attn_std * (2.0 * layers as f64).powf(-0.5);
        let fc_std = (2.0 * w).powf(-0.5);
        BlockInit {
            qkv: LinearInit { weight: Init::Normal(attn_std), bias: Some(Init::Zeros) },
            out: LinearInit { weight: Init::Normal(proj_std), bias: Some(Init::Zeros) },
            fc: LinearInit { weight: Init::Normal(fc_std), bias: Some(Init::torch_default(width)) },
            proj: LinearInit { weight: Init::Normal(proj_std), bias: Some(Init::torch_default(hidden)) },
        }
    }

    /// What OpenCLIP's own ViT starts from, PyTorch's module defaults: `nn.MultiheadAttention`
    /// draws `in_proj_weight` Xavier-uniform over `[3w, w]` and zeroes both its biases; its
    /// output and the MLP's layers are `nn.Linear` defaults.
    pub fn pytorch_default(width: usize, hidden: usize) -> Self {
        BlockInit {
            qkv: LinearInit { weight: Init::xavier_uniform(width, 3 * width), bias: Some(Init::Zeros) },
            out: LinearInit { weight: Init::torch_default(width), bias: Some(Init::Zeros) },
            fc: LinearInit::torch_default(width),
            proj: LinearInit::torch_default(hidden),
        }
    }

    /// BERT's `_init_weights` (BriVL's and Chinese-CLIP's text towers): N(0, 0.02), biases 0.
    pub fn bert() -> Self {
        let l = LinearInit { weight: Init::Normal(BERT_STD), bias: Some(Init::Zeros) };
        BlockInit { qkv: l, out: l, fc: l, proj: l }
    }
}

/// BERT's `initializer_range`.
pub const BERT_STD: f64 = 0.02;
