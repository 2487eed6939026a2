//! `vlp serve`: the HTTP API and search page over an index.

use super::index::open_searcher;
use anyhow::{Context, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use vlp_serve::server::{serve, ServeConfig};

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long)]
    index: PathBuf,
    /// Address to listen on; loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Require `Authorization: Bearer TOKEN` on every route but /healthz and the page.
    #[arg(long)]
    token: Option<String>,
    /// The checkpoint that embeds queries (default: the one the index was built with).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Largest request body, in bytes (an uploaded image included).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Longest text query, in characters.
    #[arg(long, default_value_t = ServeConfig::default().max_text_chars)]
    max_text_chars: usize,
    /// Largest decoded image, in pixels (larger ones are refused before decoding).
    #[arg(long, default_value_t = 40_000_000)]
    max_pixels: u64,
    /// Seconds a search may take before the client gets 504.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    /// Requests admitted at once; more are answered 503 at once.
    #[arg(long, default_value_t = ServeConfig::default().max_inflight)]
    max_inflight: usize,
    /// Searches computed at once (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut searcher = open_searcher(&a.index, a.checkpoint.as_deref(), true)?;
    searcher.max_image_pixels = a.max_pixels;
    let defaults = ServeConfig::default();
    let cfg = ServeConfig {
        addr: a.addr,
        token: a.token,
        max_body_bytes: a.max_body_bytes,
        max_text_chars: a.max_text_chars,
        max_k: defaults.max_k,
        timeout: Duration::from_secs_f64(a.timeout_s.max(0.001)),
        max_inflight: a.max_inflight.max(1),
        workers: a.workers.unwrap_or(defaults.workers).max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(searcher, cfg)).with_context(|| format!("serving on {}", a.addr))
}
