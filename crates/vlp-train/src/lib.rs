//! Training for vlp's dual encoders.
//!
//! - [`config`]: a whole `configs/*.toml` (model, loss, training, tokenizer, image pipeline).
//! - [`schedule`]: linear warmup, then cosine decay.
//! - [`optimizer`]: AdamW with OpenCLIP's weight-decay exclusions, global-norm gradient clipping
//!   and the temperature clamp.
//! - [`checkpoint`]: atomic checkpoints that resume a run exactly.
//! - [`parity`]: vlp's steps beside OpenCLIP's, from OpenCLIP's initial weights and batches.
//! - [`import`]: OpenCLIP models (config JSON, safetensors, tokenizer) into run directories.
//! - [`export`]: vlp models out as OpenCLIP model directories.
//! - [`embed`]: encoding images and texts in batches, for validation, evaluation and indexing.
//! - [`retrieval`]: exact retrieval both ways and its R@k.
//! - [`trainer`]: the loop, with progress, a JSONL log and validation.
//! - [`zeroshot`]: zero-shot classification with prompt ensembles, CLIP's and FILIP's way.
//! - [`plots`]: `curves.png` of a run, redrawn from its logs.

pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod export;
pub mod import;
pub mod optimizer;
pub mod parity;
pub mod plots;
pub mod retrieval;
pub mod schedule;
pub mod trainer;
pub mod zeroshot;

pub use config::RunConfig;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] vlp_model::ConfigError),
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    #[error("{path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("{0}")]
    Diverged(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;
