//! Ranking metrics exactly as `trec_eval` 9 computes them, and the TREC files they read.
//!
//! - [`trec`]: qrels and run files, read and written. A run is ranked the way trec_eval ranks it:
//!   score (as a 32-bit float) descending, ties by document id in descending byte order; the rank
//!   column is ignored.
//! - [`metrics`]: per-query `ndcg_cut_k`, `map`, `recip_rank`, `P_k`, `recall_k` and `success_k`
//!   (R@k as CLIP papers report it: a hit if any relevant item is in the top k).
//! - [`evaluate`](mod@evaluate): per-query values and means, with queries missing from the run
//!   skipped (the default of trec_eval) or counted as 0 (`trec_eval -c`), and trec_eval's output
//!   format.
//! - [`compare`]: two systems side by side with a paired randomization test.
//!
//! Nothing here knows how the scores were made; the crate has no burn dependency.

pub mod compare;
pub mod evaluate;
pub mod metrics;
pub mod trec;

pub use evaluate::{evaluate, Evaluation, MissingQueries};
pub use metrics::{parse_measures, Measure};
pub use trec::{run_from_scores, DuplicatePolicy, Qrels, Run};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error("unknown measure '{0}' (known: map, recip_rank, ndcg_cut.K, P.K, recall.K, success.K)")]
    UnknownMeasure(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;
