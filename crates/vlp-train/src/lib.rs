//! Training for vlp's dual encoders. Inference (loading, embedding, retrieval, zero-shot,
//! import and export) is `vlp-embed`'s; this crate adds the loop and what only it needs.
//!
//! - [`schedule`]: linear warmup, then cosine decay.
//! - [`optimizer`]: AdamW with OpenCLIP's weight-decay exclusions, global-norm gradient clipping,
//!   the temperature clamp and locked towers.
//! - [`checkpoint`]: the optimizer and momentum state beside the model, to resume exactly.
//! - [`parity`]: vlp's steps beside OpenCLIP's, from OpenCLIP's initial weights and batches.
//! - [`step`]: one replica's training step: encode, gather, loss, backward, summed gradients.
//! - [`parallel`]: data-parallel groups on burn-collective: gathers, gradient sums, a watchdog.
//! - [`trainer`]: the loop, with progress, a JSONL log and validation, on one device or several.
//! - [`plots`]: `curves.png` of a run, redrawn from its logs.

pub mod checkpoint;
pub mod optimizer;
pub mod parallel;
pub mod parity;
pub mod plots;
pub mod schedule;
pub mod step;
pub mod trainer;

pub use vlp_embed::config;
pub use vlp_embed::config::RunConfig;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] vlp_model::ConfigError),
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    #[error(transparent)]
    Embed(#[from] vlp_embed::EmbedError),
    #[error("{0}")]
    Diverged(String),
    /// A file or directory of the run could not be read or written.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl TrainError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        TrainError::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
