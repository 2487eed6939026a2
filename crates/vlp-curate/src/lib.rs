//! Curation of image-text pairs, the way LAION cleaned web-scale data: score every pair with a
//! dual encoder, keep those above a threshold, drop near-duplicate images, and say exactly what
//! was dropped and why.
//!
//! - [`filter`](mod@filter): the streaming filter. Work is cut into parts (one input shard, or a
//!   block of manifest rows); each part's output and statistics are written atomically, so an
//!   interrupted run resumes without scoring a part twice or losing one.
//! - [`output`]: kept pairs written back in the input's own format (WebDataset, JSONL, CSV).
//! - [`report`]: mergeable per-part statistics, the JSON report and the score histogram.
//! - [`corrupt`]: a caption-swapped copy of a data set with the swaps marked, to measure how well
//!   a filter finds mismatched pairs.

pub mod corrupt;
pub mod filter;
pub mod output;
pub mod report;

pub use filter::{filter, FilterOptions};
pub use report::{DropReason, FilterReport};

#[derive(Debug, thiserror::Error)]
pub enum CurateError {
    #[error(transparent)]
    Data(#[from] vlp_data::DataError),
    #[error(transparent)]
    Index(#[from] vlp_index::IndexError),
    #[error(transparent)]
    Plot(#[from] vlp_plot::PlotError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

impl CurateError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CurateError::Io { path: path.as_ref().display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, CurateError>;

/// Writes `bytes` to `path` all or nothing (`vlp_atomic`).
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    vlp_atomic::write(path, bytes).map_err(|e| CurateError::io(path, e))
}
