//! `vlp data build | stats | validate`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use vlp_data::dataset::{self, DatasetDir, Direction};
use vlp_data::source::{self, ReadOptions};
use vlp_data::synthetic::{self, SyntheticConfig};
use vlp_data::{emoji, openclipart};
use vlp_data::{image_pipeline, loader};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Build a data set into a directory (manifests, distinct texts, graded qrels).
    Build(BuildArgs),
    /// Counts, caption lengths, languages and grades per query of a built data set.
    Stats {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read every sample of any supported input, decode every image, and print the skip summary.
    Validate(ValidateArgs),
    /// Write a copy as WebDataset shards with a share of captions swapped between images, each
    /// sample's JSON saying `"corrupted": true|false`: ground truth for `vlp filter --truth-field`.
    Corrupt(CorruptArgs),
}

#[derive(Args)]
pub struct CorruptArgs {
    /// Any input, as for `validate`.
    pub input: String,
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    /// Share of pairs whose captions are swapped.
    #[arg(long, default_value_t = 0.2)]
    pub fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use each image's first caption of this language (samples without one are left out).
    #[arg(long)]
    pub lang: Option<String>,
    /// ... and of this field (`name`, `keywords`).
    #[arg(long)]
    pub field: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub per_shard: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetName {
    /// Rendered shapes with English and Chinese captions; no download.
    Synthetic,
    /// Twemoji and Noto emoji with CLDR names and keywords in en, zh, zh-Hant (needs --from).
    Emoji,
    /// Debian's openclipart with titles from the SVG metadata (needs --from).
    Openclipart,
}

#[derive(Args)]
struct BuildArgs {
    name: DatasetName,
    #[arg(long)]
    out: PathBuf,
    /// Where the downloaded sources were unpacked (emoji, openclipart: see datasets/NAME/fetch.sh).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Number of images (synthetic).
    #[arg(long, default_value_t = SyntheticConfig::default().images)]
    images: usize,
    /// Image side in pixels (synthetic: 64; openclipart: 96).
    #[arg(long)]
    size: Option<u32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
pub struct ValidateArgs {
    /// Shards (`dir/`, glob, `{000..009}` range), a `.jsonl` manifest, a `.csv`/`.tsv` table, or a
    /// built data set directory.
    pub input: String,
    /// Split, when the input is a built data set.
    #[arg(long)]
    pub split: Option<String>,
    #[command(flatten)]
    pub csv: super::CsvArgs,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Build(a) => build(a),
        DataCommand::Stats { dir, json } => stats(&dir, json),
        DataCommand::Validate(a) => validate(a),
        DataCommand::Corrupt(a) => corrupt(a),
    }
}

fn corrupt(a: CorruptArgs) -> Result<()> {
    use vlp_curate::corrupt::{corrupt, CorruptOptions};
    let o = CorruptOptions { fraction: a.fraction, seed: a.seed, lang: a.lang, field: a.field, per_shard: a.per_shard };
    let s = corrupt(&a.input, a.split.as_deref(), &source::ReadOptions::default(), &a.out, &o)
        .with_context(|| format!("corrupting {}", a.input))?;
    println!(
        "wrote {} pairs in {} shard(s) to {}: {} with swapped captions ({:.1}%), {} without a caption of that kind left out",
        s.pairs,
        s.shards.len(),
        a.out.display(),
        s.corrupted,
        100.0 * s.corrupted as f64 / s.pairs.max(1) as f64,
        s.no_caption
    );
    if s.skipped.total() > 0 {
        eprint!("{}", s.skipped.summary());
    }
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let from = || a.from.clone().context("this data set is built from downloaded sources: give --from DIR (see datasets/NAME/README.md)");
    let (info, skipped) = match a.name {
        DatasetName::Synthetic => {
            let cfg = SyntheticConfig {
                images: a.images,
                size: a.size.unwrap_or(SyntheticConfig::default().size),
                seed: a.seed,
                ..Default::default()
            };
            eprintln!("building synthetic ({} images, {} px, seed {}) into {}", cfg.images, cfg.size, cfg.seed, a.out.display());
            (synthetic::build(&cfg, &a.out).context("building the synthetic data set")?, vlp_data::SkipLog::new())
        }
        DatasetName::Emoji => {
            let src = emoji::EmojiSources { root: from()? };
            eprintln!("building emoji from {} into {}", src.root.display(), a.out.display());
            emoji::build(&src, &a.out).context("building the emoji data set")?
        }
        DatasetName::Openclipart => {
            let src = openclipart::OpenclipartSources { root: from()? };
            eprintln!("building openclipart from {} into {}", src.root.display(), a.out.display());
            openclipart::build(&src, &a.out, a.size.unwrap_or(96)).context("building the openclipart data set")?
        }
    };
    for (split, c) in &info.splits {
        eprintln!(
            "  {split:<5} {:>6} images {:>6} texts {:>8} t2i / {:>8} i2t judgements",
            c.images, c.texts, c.t2i_judgements, c.i2t_judgements
        );
    }
    eprint!("{}", skipped.summary());
    let checks = dataset::check(&DatasetDir::new(&a.out))?;
    if let Some(bad) = checks.iter().find(|c| !c.is_ok()) {
        bail!("built data set fails its check in split {}: {:?}", bad.split, bad);
    }
    eprintln!("done in {:.1}s; checked: every query has a grade-2 item and every id resolves", started.elapsed().as_secs_f64());
    Ok(())
}

fn stats(dir: &PathBuf, as_json: bool) -> Result<()> {
    let d = DatasetDir::new(dir);
    let info = d.info().with_context(|| format!("{} is not a built data set", dir.display()))?;
    let mut report = BTreeMap::new();
    for split in info.splits.keys() {
        let texts: Vec<serde_json::Value> = std::fs::read_to_string(d.texts(split))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", d.texts(split).display()))?;
        let mut by_lang: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
        for t in &texts {
            let lang = t["lang"].as_str().unwrap_or("?").to_string();
            let n = t["text"].as_str().unwrap_or("").chars().count();
            let e = by_lang.entry(lang).or_insert((0, 0, usize::MAX, 0));
            e.0 += 1;
            e.1 += n;
            e.2 = e.2.min(n);
            e.3 = e.3.max(n);
        }
        let mut grades = BTreeMap::new();
        for direction in [Direction::T2i, Direction::I2t] {
            let qrels = dataset::read_qrels(&d.qrels(split, direction))?;
            let mut per_q: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
            for (q, _, g) in &qrels {
                per_q.entry(q).or_default()[(*g).clamp(0, 2) as usize] += 1;
            }
            let nq = per_q.len().max(1) as f64;
            let mean = |g: usize| per_q.values().map(|c| c[g]).sum::<usize>() as f64 / nq;
            grades.insert(direction.as_str(), json!({"queries": per_q.len(), "mean_grade2": mean(2), "mean_grade1": mean(1)}));
        }
        let langs: BTreeMap<_, _> = by_lang
            .into_iter()
            .map(|(l, (n, sum, min, max))| {
                (l, json!({"texts": n, "chars_mean": sum as f64 / n as f64, "chars_min": min, "chars_max": max}))
            })
            .collect();
        report.insert(
            split.clone(),
            json!({"images": info.splits[split].images, "texts": texts.len(), "languages": langs, "grades_per_query": grades}),
        );
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({"name": info.name, "splits": report}))?);
        return Ok(());
    }
    println!("data set {} ({})", info.name, dir.display());
    for (split, r) in &report {
        println!("{split}: {} images, {} distinct texts", r["images"], r["texts"]);
        for (lang, l) in r["languages"].as_object().into_iter().flatten() {
            println!(
                "  {lang:<8} {:>6} texts, {:.1} chars mean ({}..{})",
                l["texts"],
                l["chars_mean"].as_f64().unwrap_or(0.0),
                l["chars_min"],
                l["chars_max"]
            );
        }
        for (dir, g) in r["grades_per_query"].as_object().into_iter().flatten() {
            println!(
                "  {dir}: {} queries, {:.2} grade-2 and {:.2} grade-1 items per query",
                g["queries"],
                g["mean_grade2"].as_f64().unwrap_or(0.0),
                g["mean_grade1"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// Reads an input to the end, decoding every image; returns the scan report.
pub fn validate_input(a: &ValidateArgs) -> Result<loader::ScanReport> {
    let opts = ReadOptions { csv: a.csv.columns(), ..ReadOptions::default() };
    let stream = source::open(&a.input, a.split.as_deref(), &opts).with_context(|| format!("opening {}", a.input))?;
    // A small output size: the point is whether each image decodes, not its pixels.
    Ok(loader::scan(stream, &image_pipeline::ImageConfig { size: 32, ..Default::default() }))
}

fn validate(a: ValidateArgs) -> Result<()> {
    let report = validate_input(&a)?;
    let (good, log) = (report.good_keys.len(), report.skips);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json!({"input": a.input, "good": good, "skipped": log}))?);
    } else {
        println!("{}: {good} good sample(s)", a.input);
        print!("{}", log.summary());
    }
    // An input with nothing usable is a failure to whoever runs this in a pipeline.
    if good == 0 {
        bail!("{}: no good sample ({} skipped); nothing here can be trained on or indexed", a.input, log.total());
    }
    Ok(())
}
