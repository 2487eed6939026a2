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
    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A model that cannot be imported from, or exported to, another library's layout: a key,
    /// a shape, an option or an architecture, with the file it concerns.
    #[error("{}", import_message(.path, .source))]
    Import { path: String, source: vlp_model::openclip::ImportError },
    /// An argument or input that cannot be used, named in the message (an occupied output
    /// directory, a template without its slot, a tokenizer too large for the model).
    #[error("{0}")]
    Invalid(String),
}

/// A reader's error names its file already; any other is prefixed with the file it concerns.
fn import_message(path: &str, source: &vlp_model::openclip::ImportError) -> String {
    match source {
        vlp_model::openclip::ImportError::Read { .. } => source.to_string(),
        _ => format!("{path}: {source}"),
    }
}

impl EmbedError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EmbedError::Io { path: path.display().to_string(), source }
    }
    pub fn import(path: &std::path::Path, source: vlp_model::openclip::ImportError) -> Self {
        EmbedError::Import { path: path.display().to_string(), source }
    }
    pub fn invalid(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        EmbedError::Invalid(format!("{}: {message}", path.display()))
    }
}

pub type Result<T> = std::result::Result<T, EmbedError>;
