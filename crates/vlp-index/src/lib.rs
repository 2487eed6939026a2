//! Retrieval over embeddings and captions: vectors and text in, ranked ids out.
//!
//! - [`checksum`]: the one hash of bytes in the formats (file checksums, model identities).
//! - [`store`]: one modality's vectors in a memory-mapped file that records the model that made
//!   them and a checksum.
//! - [`exact`]: brute-force inner-product search, the ground truth.
//! - [`ann`]: HNSW over normalised vectors (built in parallel by `hnsw`, searched by `walk`
//!   over a flat copy of the graph); identical vectors share a node.
//! - [`captions`]: a tantivy BM25 index of captions, English and Chinese.
//! - [`fusion`]: reciprocal rank fusion of dense and BM25 lists.
//! - [`catalog`]: an index directory that holds all of these for a corpus of images and texts,
//!   written whole or not at all.
//! - [`update`]: items added to a built index (inserted into its graphs) or deleted by id.
//!
//! Nothing here knows how vectors are made; the crate has no burn dependency.

pub mod ann;
pub mod captions;
pub mod catalog;
pub mod checksum;
pub mod exact;
pub mod fusion;
mod hnsw;
pub mod npy;
pub mod store;
pub mod update;
mod walk;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
    #[error(
        "{path} was built with model {index}, but the query was embedded by model {query}; embed queries with the index's own checkpoint"
    )]
    ModelMismatch { path: String, index: String, query: String },
    #[error("{0}")]
    Invalid(String),
}

impl IndexError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        IndexError::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, IndexError>;
