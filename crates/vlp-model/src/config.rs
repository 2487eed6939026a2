//! Model and loss configuration, as the `[model]` and `[loss]` tables of a `configs/*.toml`.
//! Unknown fields are errors; every check names the field it is about.

use crate::momentum::MomentumConfig;
use crate::token_reduction::TokenReductionConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), message: message.into() }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Width of the shared global embedding space.
    pub embed_dim: usize,
    /// Width of the per-token embeddings (FILIP uses 256); defaults to `embed_dim`.
    #[serde(default)]
    pub token_dim: Option<usize>,
    pub image: ImageTowerConfig,
    pub text: TextTowerConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ImageTowerConfig {
    Vit(VitConfig),
    /// vlp's own ResNet-style tower (trained here from scratch).
    Resnet(ResnetConfig),
    /// OpenCLIP's and OpenAI's `ModifiedResNet` (RN50, ...), as their checkpoints hold it. Last,
    /// so that the older variants keep their place in checkpoints.
    #[serde(rename = "modified_resnet")]
    ModifiedResnet(ModifiedResnetConfig),
}

/// OpenCLIP's `ModifiedResNet`: RN50 is `layers = [3, 4, 6, 3]`, `width = 64`, `heads = 32`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifiedResnetConfig {
    pub image_size: usize,
    /// Bottleneck blocks in each of the four stages.
    pub layers: Vec<usize>,
    /// Channels of the stem's output and the first stage's bottleneck (doubling each stage; the
    /// attention pool is `32 · width` wide).
    pub width: usize,
    /// Heads of the attention pool (OpenCLIP: `32 · width / 64`).
    pub heads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Wukong's token reduction of the patch tokens (token-level loss, re-ranking, the index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_reduction: Option<TokenReductionConfig>,
    /// The MLP's nonlinearity (`quick_gelu` for OpenAI's and Chinese-CLIP's ViTs).
    #[serde(default, skip_serializing_if = "Activation::is_gelu")]
    pub activation: Activation,
}

/// The nonlinearity inside the transformer blocks' MLPs (the ResNet tower has none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, `x · Φ(x)` (OpenCLIP's default, BERT's).
    #[default]
    Gelu,
    /// OpenAI CLIP's `x · σ(1.702 x)`: the towers of OpenAI's released weights and OpenCLIP's
    /// `*-quickgelu` models were trained with it, and give other embeddings under exact GELU.
    QuickGelu,
}

impl Activation {
    pub fn is_gelu(&self) -> bool {
        *self == Activation::Gelu
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResnetConfig {
    pub image_size: usize,
    /// Bottleneck blocks per stage, e.g. `[1, 1, 1]`.
    pub layers: Vec<usize>,
    /// Channels of the first stage's bottleneck (doubling each stage; output is 4× that).
    pub width: usize,
    /// `attention` (CLIP's attention pooling) or `mean`.
    #[serde(default = "default_pool")]
    pub pool: ResnetPool,
    #[serde(default = "default_pool_heads")]
    pub heads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResnetPool {
    Attention,
    Mean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTowerConfig {
    pub context_length: usize,
    pub vocab_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Causal (CLIP) or bidirectional (BERT/RoBERTa, as BriVL and Chinese-CLIP) attention.
    pub causal: bool,
    /// How the global embedding is read from the tokens.
    pub pool: TextPool,
    /// The MLP's nonlinearity.
    #[serde(default, skip_serializing_if = "Activation::is_gelu")]
    pub activation: Activation,
    /// Where the blocks normalise: `pre` (CLIP: LayerNorm → sublayer → residual, a final
    /// LayerNorm) or `post` (BERT, Chinese-CLIP's RoBERTa: sublayer → residual → LayerNorm, the
    /// embeddings normalised first).
    #[serde(default, skip_serializing_if = "BlockNorm::is_pre")]
    pub norm: BlockNorm,
    /// LayerNorm's ε (CLIP 1e-5, BERT 1e-12).
    #[serde(default = "default_ln_eps", skip_serializing_if = "is_default_ln_eps")]
    pub layer_norm_eps: f64,
}

fn default_ln_eps() -> f64 {
    1e-5
}

fn is_default_ln_eps(e: &f64) -> bool {
    *e == default_ln_eps()
}

/// Where a transformer block normalises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockNorm {
    #[default]
    Pre,
    Post,
}

impl BlockNorm {
    pub fn is_pre(&self) -> bool {
        *self == BlockNorm::Pre
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextPool {
    /// The last real token (CLIP's EOT).
    Eos,
    /// The first token (BERT's CLS).
    Cls,
    /// Mean over real tokens.
    Mean,
}

/// Weights of the three losses; `token_weight = 0` and `queue_weight = 0` is CLIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    #[serde(default = "one")]
    pub global_weight: f32,
    /// FILIP's token-level loss.
    #[serde(default)]
    pub token_weight: f32,
    /// BriVL's loss against momentum keys and queues ([`crate::momentum`]).
    #[serde(default)]
    pub queue_weight: f32,
    /// The momentum towers and queues, used when `queue_weight > 0`.
    #[serde(default)]
    pub momentum: MomentumConfig,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig { global_weight: 1.0, token_weight: 0.0, queue_weight: 0.0, momentum: MomentumConfig::default() }
    }
}

impl LossConfig {
    /// Whether a model trained with this loss has learnt token embeddings: FILIP's loss had
    /// weight. Without it (CLIP, BriVL, and every imported OpenCLIP or Chinese-CLIP model, whose
    /// checkpoints have no token-level head) the token projections keep their random start, and
    /// token-level scores are noise.
    pub fn learns_tokens(&self) -> bool {
        self.token_weight > 0.0
    }
}

fn one() -> f32 {
    1.0
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_pool() -> ResnetPool {
    ResnetPool::Attention
}
fn default_pool_heads() -> usize {
    4
}

impl ModelConfig {
    pub fn token_dim(&self) -> usize {
        self.token_dim.unwrap_or(self.embed_dim)
    }

    pub fn image_size(&self) -> usize {
        match &self.image {
            ImageTowerConfig::Vit(v) => v.image_size,
            ImageTowerConfig::Resnet(r) => r.image_size,
            ImageTowerConfig::ModifiedResnet(r) => r.image_size,
        }
    }

    /// Checks what serde cannot: positive sizes, divisibility, sizes that fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("model.embed_dim", self.embed_dim)?;
        if let Some(t) = self.token_dim {
            positive("model.token_dim", t)?;
        }
        match &self.image {
            ImageTowerConfig::Vit(v) => {
                positive("model.image.image_size", v.image_size)?;
                positive("model.image.patch_size", v.patch_size)?;
                positive("model.image.layers", v.layers)?;
                heads_divide("model.image", v.width, v.heads)?;
                if v.image_size % v.patch_size != 0 {
                    return Err(invalid(
                        "model.image.patch_size",
                        format!("image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size),
                    ));
                }
                mlp("model.image.mlp_ratio", v.mlp_ratio)?;
                if let Some(r) = &v.token_reduction {
                    positive("model.image.token_reduction.tokens", r.tokens)?;
                    positive("model.image.token_reduction.groups", r.groups)?;
                    if !self.token_dim().is_multiple_of(r.groups) {
                        return Err(invalid(
                            "model.image.token_reduction.groups",
                            format!("the token width {} is not divisible by {} groups", self.token_dim(), r.groups),
                        ));
                    }
                }
            }
            ImageTowerConfig::Resnet(r) => {
                positive("model.image.image_size", r.image_size)?;
                positive("model.image.width", r.width)?;
                if r.layers.is_empty() || r.layers.contains(&0) {
                    return Err(invalid("model.image.layers", "needs at least one stage, each with at least one block"));
                }
                // stem /4, then /2 per stage after the first
                let down = 4 << (r.layers.len() - 1);
                if r.image_size % down != 0 || r.image_size / down == 0 {
                    return Err(invalid("model.image.image_size", format!("must be a multiple of {down} for {} stages", r.layers.len())));
                }
                let out = (r.width * 4) << (r.layers.len() - 1);
                if r.pool == ResnetPool::Attention {
                    heads_divide("model.image", out, r.heads)?;
                }
            }
            ImageTowerConfig::ModifiedResnet(r) => {
                positive("model.image.width", r.width)?;
                if r.width % 2 != 0 {
                    return Err(invalid("model.image.width", "must be even (the stem's first convolutions are half as wide)"));
                }
                if r.layers.len() != 4 || r.layers.contains(&0) {
                    return Err(invalid("model.image.layers", "needs four stages, each with at least one block"));
                }
                if r.image_size == 0 || r.image_size % 32 != 0 {
                    return Err(invalid("model.image.image_size", "must be a positive multiple of 32"));
                }
                heads_divide("model.image", r.width * 32, r.heads)?;
            }
        }
        let t = &self.text;
        positive("model.text.context_length", t.context_length)?;
        if t.context_length < 2 {
            return Err(invalid("model.text.context_length", "must be at least 2"));
        }
        positive("model.text.vocab_size", t.vocab_size)?;
        positive("model.text.layers", t.layers)?;
        heads_divide("model.text", t.width, t.heads)?;
        mlp("model.text.mlp_ratio", t.mlp_ratio)?;
        Ok(())
    }
}

impl LossConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, w) in
            [("loss.global_weight", self.global_weight), ("loss.token_weight", self.token_weight), ("loss.queue_weight", self.queue_weight)]
        {
            if !w.is_finite() || w < 0.0 {
                return Err(invalid(field, format!("must be a finite weight ≥ 0, not {w}")));
            }
        }
        if self.global_weight == 0.0 && self.token_weight == 0.0 && self.queue_weight == 0.0 {
            return Err(invalid("loss", "global_weight, token_weight and queue_weight are all 0: nothing to train"));
        }
        let m = &self.momentum;
        if !(0.0..1.0).contains(&m.momentum) {
            return Err(invalid("loss.momentum.momentum", format!("must be in [0, 1), not {}", m.momentum)));
        }
        if let Some(t) = m.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid("loss.momentum.temperature", format!("must be positive, not {t}")));
            }
        }
        Ok(())
    }
}

fn positive(field: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(invalid(field, "must be positive"));
    }
    Ok(())
}

fn heads_divide(prefix: &str, width: usize, heads: usize) -> Result<(), ConfigError> {
    positive(&format!("{prefix}.width"), width)?;
    positive(&format!("{prefix}.heads"), heads)?;
    if !width.is_multiple_of(heads) {
        return Err(invalid(&format!("{prefix}.heads"), format!("width {width} is not divisible by {heads} heads")));
    }
    Ok(())
}

fn mlp(field: &str, ratio: f64) -> Result<(), ConfigError> {
    if !(ratio > 0.0 && ratio.is_finite()) {
        return Err(invalid(field, format!("must be positive, not {ratio}")));
    }
    Ok(())
}
