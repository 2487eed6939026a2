//! Image-text samples for vlp, from the formats users already have to batches of plain arrays.
//!
//! - [`source`] streams [`Sample`]s out of WebDataset tar shards, JSONL manifests and CSV/TSV files;
//!   [`WdsWriter`] writes shards back.
//! - [`image_pipeline`] decodes (with limits), converts to RGB on white, crops and normalises.
//! - [`text`] trains or loads a `tokenizers` vocabulary and pads/truncates to a context length.
//! - [`loader`] decodes in parallel across cores and hands out [`loader::Batch`]es.
//! - [`synthetic`] renders the embedded default data set; [`dataset`] is the on-disk layout every
//!   built data set shares (manifests, distinct texts, graded TREC qrels).
//!
//! Bad input is the normal case at scale: nothing here panics on it. Each bad sample is skipped and
//! counted in a [`SkipLog`] with its reason and location, and the samples around it are kept.
//!
//! This crate knows nothing of burn: batches are `Vec<f32>` / `Vec<u32>` with documented shapes.

pub mod dataset;
pub mod emoji;
pub mod evalset;
pub mod image_pipeline;
pub mod loader;
pub mod openclip_bpe;
pub mod openclipart;
pub mod sample;
pub mod shards;
pub mod skip;
pub mod source;
pub mod synthetic;
pub mod text;
pub mod wds_writer;

pub use sample::{Caption, Sample};
pub use skip::{SkipLog, SkipReason};
pub use wds_writer::WdsWriter;

/// Errors that stop an operation as a whole (a missing input, an unwritable output).
/// Problems with single samples are never errors: they become [`SkipReason`]s.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{input}: {message}")]
    Input { input: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl DataError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        DataError::Io { path: path.as_ref().display().to_string(), source }
    }
    pub fn input(input: impl std::fmt::Display, message: impl Into<String>) -> Self {
        DataError::Input { input: input.to_string(), message: message.into() }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;

/// A stable 64-bit FNV-1a hash: splits and seeds derived from it never change between releases
/// (std's `DefaultHasher` makes no such promise).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
