//! Cross-modal search over a vlp index, for the command line and over HTTP.
//!
//! - [`searcher`]: the query engine: a text, an image, a raw embedding or an item of the index,
//!   against the image side or the text side, dense, BM25 or hybrid, filtered, re-ranked.
//!   `vlp search` and `vlp serve` both answer through it.
//! - [`server`]: `vlp serve`: the JSON API, the search page, limits on every input, bounded
//!   concurrency, bearer-token auth and graceful shutdown.
//! - [`metrics`]: request counts and latency histograms in Prometheus' text format.

pub mod metrics;
pub mod searcher;
pub mod server;

pub use searcher::{OpenError, Query, SearchError, SearchRequest, Searcher, Side};
