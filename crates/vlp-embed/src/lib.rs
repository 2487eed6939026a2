//! Inference for vlp's dual encoders, apart from training: what `eval`, `zeroshot`, `index`,
//! `search`, `serve`, `filter`, `import` and `export` need, and what `vlp-train` builds on.
//!
//! - [`config`]: a run's whole configuration (model, loss, training, tokenizer, image pipeline).
//! - [`checkpoint`]: run directories: reading a checkpoint into an [`checkpoint::Encoder`], the
//!   one atomic way a checkpoint is written, and a model's identity.
//! - [`embed`]: encoding images and texts in batches.
//! - [`corpus`]: a data split embedded into what an index is built from.
//! - [`retrieval`]: exact retrieval both ways and its R@k.
//! - [`table`]: the BriVL-style table of NDCG@5/10/20, MAP and R@k in both directions.
//! - [`zeroshot`]: zero-shot classification with prompt ensembles, CLIP's and FILIP's way.
//! - [`import`] / [`export`]: OpenCLIP models into run directories, and back out.

pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod embed;
pub mod export;
pub mod import;
pub mod retrieval;
pub mod table;
pub mod zeroshot;

pub use checkpoint::Encoder;
pub use config::RunConfig;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Config(#[from] vlp_model::ConfigError),
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    #[error("{path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, EmbedError>;
