//! `vlp`: pretrain dual-tower vision-language models and serve cross-modal retrieval.

mod allocator;
mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vlp", version, about = "Dual-tower vision-language pretraining and cross-modal retrieval")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build, inspect and validate data sets.
    Data(cmd::data::DataArgs),
    /// Train or inspect a tokenizer.
    Tokenizer(cmd::tokenizer::TokenizerArgs),
    /// Evaluate checkpoints: NDCG@5/10/20, MAP, R@k, MRR both ways, as a BriVL-style table.
    Eval(cmd::eval::EvalArgs),
    /// Train a dual encoder.
    Train(cmd::train::TrainArgs),
    /// Introduce the machines of a multi-machine `vlp train` to each other (run it once, first).
    Coordinator(cmd::train::CoordinatorArgs),
    /// Build, check, benchmark and export retrieval indexes.
    Index(cmd::index::IndexArgs),
    /// Search an index by text (dense, BM25 or hybrid) or by image.
    Search(cmd::index::SearchArgs),
    /// Serve search over HTTP: a JSON API and a search page.
    Serve(cmd::serve::ServeArgs),
    /// Draw a run's training curves, or compare runs, as PNG.
    Plot(cmd::plot::PlotArgs),
    /// Score a TREC run against qrels, printing trec_eval's format.
    TrecEval(cmd::trec_eval::TrecEvalArgs),
    /// Score image-text pairs with a checkpoint; keep those above a threshold, drop near-duplicates.
    Filter(cmd::filter::FilterArgs),
    /// Zero-shot classification by prompt templates: top-1/top-5 accuracy.
    Zeroshot(cmd::zeroshot::ZeroShotArgs),
    /// Bring in a pretrained model (OpenCLIP) as a run directory.
    Import(cmd::import::ImportArgs),
    /// Write a vlp model for another library (OpenCLIP).
    Export(cmd::export::ExportArgs),
    /// Micro-benchmarks that are timed beside peers (see BENCHMARKS.md).
    Bench(cmd::bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        allocator::keep_freed_memory();
    }
    let result = std::panic::catch_unwind(|| run(cli.command)).unwrap_or_else(|p| {
        let text = vlp_embed::embed::panic_text(p.as_ref());
        if !vlp_embed::embed::is_out_of_memory(&text) {
            std::panic::resume_unwind(p);
        }
        Err(anyhow::anyhow!(
            "the device ran out of memory ({}); give a smaller --embed-batch (or, training, --grad-accum N or a smaller --batch-size)",
            text.lines().take(3).collect::<Vec<_>>().join(" / ")
        ))
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Data(a) => cmd::data::run(a),
        Command::Tokenizer(a) => cmd::tokenizer::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Coordinator(a) => cmd::train::coordinator(a),
        Command::Index(a) => cmd::index::run(a),
        Command::Search(a) => cmd::index::search(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Plot(a) => cmd::plot::run(a),
        Command::TrecEval(a) => cmd::trec_eval::run(a),
        Command::Filter(a) => cmd::filter::run(a),
        Command::Zeroshot(a) => cmd::zeroshot::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    }
}
