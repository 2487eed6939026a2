//! Dual-tower vision-language models: an image tower (ViT or ResNet-style) and a text transformer
//! mapped into one embedding space, and the two contrastive losses that train them.
//!
//! - [`config`]: the TOML model config, checked on load with errors that name the field.
//! - [`autocast`]: mixed precision (bf16 products, f32 parameters and losses), as OpenCLIP's
//!   `amp_bf16`.
//! - [`attention`], [`transformer`]: pre-norm transformer blocks shared by both towers; [`gelu`]
//!   their activation and [`layer_norm`] their normalisation.
//! - [`cpu`]: vlp's own CPU kernels (GELU, layer norm, attention's head swap), used on burn's CPU
//!   backend only; [`gelu`], [`layer_norm`] and [`heads`] are re-exported from there.
//! - [`vit`], [`resnet`], [`modified_resnet`] (OpenCLIP's RN50 family): image towers; [`text`]: the text tower; [`init`]: how each of their
//!   parameters is drawn, after OpenCLIP's and BERT's code.
//! - [`token_reduction`]: Wukong's reduction of the image's patch tokens to a few learned ones.
//! - [`dual`]: [`DualEncoder`], which returns global and per-token embeddings for both modalities.
//! - [`loss`]: [`ClipLoss`] (global symmetric InfoNCE) and [`TokenwiseLoss`] (FILIP).
//! - [`momentum`]: BriVL's momentum towers, key queues and the loss against them.
//! - [`openclip`]: OpenCLIP's state-dict names for vlp's parameters, loading its checkpoints and
//!   writing vlp models in its layout; [`chinese_clip`]: Chinese-CLIP's checkpoints in that
//!   layout; [`pytorch`]: `torch.save` files read without Python.
//!
//! Everything is generic over burn's `Backend`; only the binary picks Flex (CPU) or CUDA.

pub mod attention;
pub mod autocast;
pub mod chinese_clip;
pub mod config;
pub mod cpu;
pub mod dual;
pub mod init;
pub mod loss;
pub mod modified_resnet;
pub mod momentum;
pub mod openclip;
pub mod pytorch;
pub mod resnet;
pub mod text;
pub mod token_reduction;
pub mod tokenwise_linear;
pub mod transformer;
pub mod vit;

pub use cpu::{gelu, heads, layer_norm};

pub use config::{Activation, BlockNorm, ConfigError, ImageTowerConfig, LossConfig, ModelConfig, ModifiedResnetConfig, TextTowerConfig};
pub use dual::{Architecture, BatchFeatures, DualEncoder, QueueInputs, TokenFeatures, TowerOutput};
pub use loss::{ClipLoss, LossOutput, TokenwiseLoss};
pub use momentum::{MomentumConfig, MomentumState, QueueCursor};

/// `ln(1/0.07)`: CLIP's initial logit scale.
pub const INIT_LOGIT_SCALE: f32 = 2.659_26;
/// `ln(100)`: CLIP's largest logit scale.
pub const MAX_LOGIT_SCALE: f32 = 4.605_170_3;
