//! `vlp bench decode | trec-eval`: the work that BENCHMARKS.md times beside its peers.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use vlp_data::image_pipeline::{process_into, Augment, ImageConfig};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Decode + resize + center crop + normalise every image file of a directory (recursively),
    /// in parallel; prints images/s. The peer is `benches/decode_pillow.py`.
    Decode {
        dir: PathBuf,
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Passes over the files (after one untimed pass that warms the page cache).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Decode { dir, size, repeat, threads } => decode(&dir, size, repeat, threads),
    }
}

fn image_files(dir: &PathBuf) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if vlp_data::source::image_format_of_ext(p.extension().and_then(|x| x.to_str()).unwrap_or("")).is_some() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn decode(dir: &PathBuf, size: u32, repeat: usize, threads: Option<usize>) -> Result<()> {
    let files = image_files(dir)?;
    if files.is_empty() {
        bail!("{}: no .jpg/.jpeg/.png/.webp files", dir.display());
    }
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let cfg = ImageConfig { size, ..Default::default() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    let pass = || -> usize {
        pool.install(|| {
            bytes
                .par_iter()
                .map_init(
                    || vec![0f32; (3 * size * size) as usize],
                    |buf, b| process_into(b, &cfg, Augment::Eval, buf).is_ok() as usize,
                )
                .sum()
        })
    };
    let ok = pass();
    let started = Instant::now();
    for _ in 0..repeat {
        pass();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = files.len() * repeat;
    println!(
        "{{\"files\": {}, \"decoded\": {ok}, \"size\": {size}, \"threads\": {}, \"seconds\": {secs:.3}, \"images_per_s\": {:.1}}}",
        files.len(),
        pool.current_num_threads(),
        n as f64 / secs
    );
    Ok(())
}
