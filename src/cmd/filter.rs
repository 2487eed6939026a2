//! `vlp filter`: score, filter and de-duplicate image-text pairs with a trained dual encoder.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use vlp_curate::filter::{Execution, FilterOptions};
use vlp_curate::FilterReport;
use vlp_data::source::ReadOptions;
use vlp_embed::checkpoint::model_identity;
use vlp_embed::checkpoint::Encoder;

#[derive(Args)]
pub struct FilterArgs {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Shards (`dir/`, glob, `{000..009}` range), a `.jsonl` manifest, a `.csv`/`.tsv` table, or a
    /// built data set directory (with --split).
    #[arg(long)]
    input: String,
    #[arg(long)]
    split: Option<String>,
    /// Where the kept pairs (in the input's format), `report.json` and `scores.png` go.
    #[arg(long)]
    out: PathBuf,
    /// Keep captions whose cosine similarity with their image is at least this.
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    min_score: f32,
    /// Drop images whose cosine similarity with an image kept earlier is at least this (e.g. 0.95).
    #[arg(long)]
    dedup: Option<f32>,
    /// Drop images whose shorter side is below this many pixels.
    #[arg(long, default_value_t = 0)]
    min_side: u32,
    /// Keep only captions in these languages (comma-separated: en,zh).
    #[arg(long, value_delimiter = ',')]
    lang: Vec<String>,
    /// Score and report; write no pairs.
    #[arg(long)]
    dry_run: bool,
    /// Continue an interrupted run in the same --out (same input, checkpoint and options).
    #[arg(long)]
    resume: bool,
    /// A boolean field of each sample's metadata marking known-bad pairs (as `vlp data corrupt`
    /// writes): the report adds the filter's precision and recall at finding them.
    #[arg(long)]
    truth_field: Option<String>,
    /// Manifest/table rows per resumable part.
    #[arg(long, default_value_t = 10_000)]
    part_rows: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[command(flatten)]
    csv: super::CsvArgs,
    /// Score on `cpu` or `cuda` (the first card; a vlp built with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    device: super::train::Device,
}

pub fn run(a: FilterArgs) -> Result<()> {
    super::on_device!(a.device, |B, device| run_on::<B>(a, &device))
}

fn run_on<B: burn::tensor::backend::Backend>(a: FilterArgs, device: &B::Device) -> Result<()> {
    let enc = Encoder::<B>::load(&a.checkpoint, device).with_context(|| format!("loading {}", a.checkpoint.display()))?;
    let model = model_identity(&enc.dir)?;
    let opts = FilterOptions {
        min_score: a.min_score,
        dedup: a.dedup,
        min_side: a.min_side,
        langs: a.lang.clone(),
        dry_run: a.dry_run,
        part_rows: a.part_rows,
        truth_field: a.truth_field.clone(),
    };
    let read = ReadOptions { csv: a.csv.columns(), ..ReadOptions::default() };
    let exec = Execution { batch: a.batch.max(1), read, resume: a.resume, ..Default::default() };
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {pos} pairs read  {per_sec}  {elapsed_precise}").expect("valid template"));
    eprintln!("filtering {} with {} into {}", a.input, enc.dir.display(), a.out.display());
    let report = vlp_curate::filter(&enc, &model, device, &a.input, a.split.as_deref(), &a.out, &opts, &exec, &|n| bar.inc(n))
        .with_context(|| format!("filtering {}", a.input))?;
    bar.finish_and_clear();
    print_summary(&report);
    eprintln!("report: {}  histogram: {}", a.out.join("report.json").display(), a.out.join("scores.png").display());
    if report.readable() == 0 {
        bail!(
            "{}: no pair could be read ({} seen, every one refused by the reader; the reasons are in {})",
            a.input,
            report.seen,
            a.out.join("report.json").display()
        );
    }
    Ok(())
}

fn print_summary(r: &FilterReport) {
    let pct = |n: u64| if r.seen > 0 { 100.0 * n as f64 / r.seen as f64 } else { 0.0 };
    println!("read {} pairs, kept {} ({:.1}%){}", r.seen, r.kept, pct(r.kept), if r.dry_run { ", dry run: nothing written" } else { "" });
    for (reason, n) in &r.dropped {
        println!("  dropped {reason:<24} {n:>8} ({:.1}%)", pct(*n));
    }
    if let (Some(p50), Some(mean)) = (r.score.quantiles.get("p50"), r.score.mean) {
        println!("scores: mean {mean:.3}, median {p50:.3} over {} scored pairs", r.score.scored);
    }
    if let Some(t) = &r.truth {
        let d = t.at_min_score;
        println!(
            "finding the {} pairs marked '{}': at --min-score {:.3} precision {:.3} recall {:.3} F1 {:.3}",
            t.bad_pairs, t.field, d.threshold, d.precision, d.recall, d.f1
        );
        if let Some(b) = t.best_f1 {
            println!("  best F1 {:.3} at threshold {:.3} (precision {:.3}, recall {:.3})", b.f1, b.threshold, b.precision, b.recall);
        }
    }
    let share = |k: &str| r.time_share.get(k).copied().unwrap_or(0.0) * 100.0;
    println!(
        "{:.1} pairs/s over {:.1} s of work ({} part(s), {} resumed); decode {:.0}%, encode {:.0}%, write {:.0}%",
        r.pairs_per_s,
        r.seconds,
        r.parts,
        r.parts_resumed,
        share("decode"),
        share("encode"),
        share("write")
    );
}
