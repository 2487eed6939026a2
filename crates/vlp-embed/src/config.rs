//! A run's whole configuration, one TOML file per named config in `configs/`.

use serde::{Deserialize, Serialize};
use std::path::Path;
use vlp_data::image_pipeline::{ImageConfig, ResizeFilter, CLIP_MEAN, CLIP_STD};
use vlp_data::text::VocabKind;
use vlp_model::{ConfigError, LossConfig, ModelConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelConfig,
    #[serde(default)]
    pub loss: LossConfig,
    pub train: TrainConfig,
    pub tokenizer: TokenizerConfig,
    #[serde(default)]
    pub data: DataConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub batch_size: usize,
    /// Optimizer steps in the whole run.
    pub steps: usize,
    pub lr: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "default_wd")]
    pub weight_decay: f32,
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    #[serde(default = "default_eps")]
    pub eps: f32,
    /// Clip the global gradient norm to this; 0 turns clipping off.
    #[serde(default = "default_clip")]
    pub grad_clip_norm: f32,
    /// Checkpoint every this many steps (and at the end).
    #[serde(default = "default_every")]
    pub checkpoint_every: usize,
    /// Validate every this many steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub val_every: usize,
    #[serde(default)]
    pub seed: u64,
    /// Samples in the shuffle buffer.
    #[serde(default = "default_shuffle")]
    pub shuffle_buffer: usize,
    /// A tower kept as it is (LiT, as Wukong and OpenCLIP's `--lock-image` do): no gradients,
    /// no optimizer state, no weight decay; the other tower and the temperatures train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Tower>,
    /// Micro-batches each replica encodes its slice of the global batch in (gradient caching,
    /// as OpenCLIP's `--accum-freq`): the encoders hold one micro-batch's activations at a time,
    /// while the loss and its gradient stay those of the whole global batch. 1: one pass.
    #[serde(default = "default_grad_accum")]
    pub grad_accum: usize,
    /// The towers' products in f32, or in bf16 with f32 parameters, optimizer state, norms and
    /// losses (`vlp_model::autocast`, OpenCLIP's `amp_bf16`). Validation runs in f32.
    #[serde(default)]
    pub precision: vlp_model::autocast::Precision,
}

/// One of the two towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tower {
    Image,
    Text,
}

impl Tower {
    /// The tower's field in [`vlp_model::DualEncoder`] (the first part of its parameters' paths).
    pub fn field(self) -> &'static str {
        match self {
            Tower::Image => "image",
            Tower::Text => "text",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Learn this kind of vocabulary from the training captions when no `file` is given.
    pub kind: VocabKind,
    pub vocab_size: usize,
    /// An existing `tokenizer.json` (relative to the config file).
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub crop_scale: (f32, f32),
    pub hflip: bool,
    /// `bilinear` (default) or `bicubic` (OpenCLIP's evaluation resize; set by `vlp import`).
    #[serde(skip_serializing_if = "is_bilinear")]
    pub resize: ResizeFilter,
}

fn is_bilinear(r: &ResizeFilter) -> bool {
    *r == ResizeFilter::Bilinear
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { mean: CLIP_MEAN, std: CLIP_STD, crop_scale: (0.9, 1.0), hflip: false, resize: ResizeFilter::Bilinear }
    }
}

fn default_wd() -> f32 {
    0.2
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.98
}
fn default_eps() -> f32 {
    1e-6
}
fn default_clip() -> f32 {
    1.0
}
fn default_every() -> usize {
    1000
}
fn default_grad_accum() -> usize {
    1
}
fn default_shuffle() -> usize {
    10_000
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), message: message.into() }
}

impl RunConfig {
    pub fn from_toml(text: &str, name: &str) -> Result<Self, ConfigError> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| ConfigError::Parse { file: name.to_string(), message: e.to_string() })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &[])
    }

    /// Loads a config file with `KEY=VALUE` overrides (`loss.token_weight=1`,
    /// `model.text.vocab_size=4096`); VALUE is TOML, or a bare string.
    pub fn load_with(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse { file: name.clone(), message: e.to_string() })?;
        if overrides.is_empty() {
            return Self::from_toml(&text, &name);
        }
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { file: name.clone(), message: e.to_string() })?;
        for o in overrides {
            let bad = |m: &str| ConfigError::Parse { file: format!("--set {o}"), message: m.to_string() };
            let (key, value) = o.split_once('=').ok_or_else(|| bad("expected KEY=VALUE, e.g. loss.token_weight=1"))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let parts: Vec<&str> = key.trim().split('.').collect();
            let (last, path) = parts.split_last().ok_or_else(|| bad("empty key"))?;
            let mut at = &mut table;
            for p in path {
                at = at
                    .entry(p.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .ok_or_else(|| bad(&format!("{p} is a value, not a section")))?;
            }
            at.insert(last.to_string(), value);
        }
        Self::from_toml(&toml::to_string(&table).expect("a table serialises"), &format!("{name} with --set"))
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a config serialises")
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        self.loss.validate()?;
        let t = &self.train;
        if t.batch_size < 2 {
            return Err(invalid("train.batch_size", "a contrastive loss needs at least 2 pairs per batch"));
        }
        if t.steps == 0 {
            return Err(invalid("train.steps", "must be positive"));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(invalid("train.lr", format!("must be positive, not {}", t.lr)));
        }
        if t.checkpoint_every == 0 {
            return Err(invalid("train.checkpoint_every", "must be positive"));
        }
        if t.grad_accum == 0 || t.grad_accum > t.batch_size {
            return Err(invalid("train.grad_accum", format!("must lie in 1..={} (the batch size), not {}", t.batch_size, t.grad_accum)));
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return Err(invalid("train.beta1", "betas must lie in [0, 1)"));
        }
        if self.tokenizer.file.is_none() && self.tokenizer.vocab_size > self.model.text.vocab_size {
            return Err(invalid(
                "tokenizer.vocab_size",
                format!("{} exceeds model.text.vocab_size {}", self.tokenizer.vocab_size, self.model.text.vocab_size),
            ));
        }
        let (lo, hi) = self.data.crop_scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(invalid("data.crop_scale", "must be 0 < low ≤ high ≤ 1"));
        }
        Ok(())
    }

    /// The image pipeline this model expects.
    pub fn image_config(&self) -> ImageConfig {
        ImageConfig {
            size: self.model.image_size() as u32,
            mean: self.data.mean,
            std: self.data.std,
            crop_scale: self.data.crop_scale,
            hflip: self.data.hflip,
            resize: self.data.resize,
            ..Default::default()
        }
    }
}
