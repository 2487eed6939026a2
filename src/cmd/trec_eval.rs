//! `vlp trec-eval QRELS RUN... [-m MEASURE]... [-q] [-c] [--compare RUN_B...]`: trec_eval's
//! command line and output format, so scripts that call trec_eval can call vlp instead. Several
//! runs on one side (one recipe trained with several seeds) are scored as their per-query mean.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use vlp_eval::compare::{compare, pooled};
use vlp_eval::Evaluation;
use vlp_eval::{evaluate, parse_measures, DuplicatePolicy, MissingQueries, Qrels, Run};

#[derive(Args)]
pub struct TrecEvalArgs {
    pub qrels: PathBuf,
    /// One run, or several runs of one system (seeds of a recipe): several are scored as the
    /// per-query mean over the runs.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Measures as trec_eval spells them: map, recip_rank, ndcg_cut.5,10,20, P.10, recall.10,
    /// success.1,5,10 (R@k). Repeatable. Default: map, recip_rank, ndcg_cut.5,10,20, P.5,10,
    /// recall.5,10, success.1,5,10.
    #[arg(short = 'm', long = "measure")]
    pub measures: Vec<String>,
    /// Per-query values as well as the means.
    #[arg(short = 'q')]
    pub per_query: bool,
    /// Count queries that are in the qrels but not in the run as 0 (trec_eval -c).
    #[arg(short = 'c')]
    pub complete: bool,
    /// A run that lists a document twice for one query: refuse it (trec_eval) or keep one entry.
    #[arg(long, value_enum, default_value = "error")]
    pub duplicates: Duplicates,
    /// Compare RUN (A) with this run (B): means, difference and a paired randomization test.
    /// Several runs (B's seeds) are pooled per query, as several RUNs are for A.
    #[arg(long, num_args = 1..)]
    pub compare: Vec<PathBuf>,
    #[arg(long, default_value_t = 10_000)]
    pub permutations: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Duplicates {
    Error,
    First,
    Last,
    Max,
}

impl From<Duplicates> for DuplicatePolicy {
    fn from(d: Duplicates) -> Self {
        match d {
            Duplicates::Error => DuplicatePolicy::Error,
            Duplicates::First => DuplicatePolicy::First,
            Duplicates::Last => DuplicatePolicy::Last,
            Duplicates::Max => DuplicatePolicy::Max,
        }
    }
}

const DEFAULT_MEASURES: [&str; 6] = ["map", "recip_rank", "ndcg_cut.5,10,20", "P.5,10", "recall.5,10", "success.1,5,10"];

pub fn run(a: TrecEvalArgs) -> Result<()> {
    let specs: Vec<String> =
        if a.measures.is_empty() { DEFAULT_MEASURES.iter().map(|s| s.to_string()).collect() } else { a.measures.clone() };
    let measures = parse_measures(&specs)?;
    let qrels = Qrels::read(&a.qrels).context("reading qrels")?;
    let policy = if a.complete { MissingQueries::Zero } else { MissingQueries::Skip };
    let score = |paths: &[PathBuf]| -> Result<Evaluation> {
        let mut evals = Vec::with_capacity(paths.len());
        for path in paths {
            let run = Run::read(path, a.duplicates.into()).with_context(|| format!("reading run {}", path.display()))?;
            let ev = evaluate(&qrels, &run, &measures, policy);
            if !ev.missing.is_empty() {
                eprintln!(
                    "note: {} of {} qrels queries are not in {} and are {} (-c counts them as 0)",
                    ev.missing.len(),
                    qrels.len(),
                    path.display(),
                    if a.complete { "counted as 0" } else { "left out of the means" }
                );
            }
            evals.push(ev);
        }
        Ok(if evals.len() == 1 { evals.pop().expect("one") } else { pooled(&evals) })
    };
    let ev_a = score(&a.runs)?;
    let names = |paths: &[PathBuf]| {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        if names.len() == 1 {
            names[0].clone()
        } else {
            format!("per-query mean of {} runs: {}", names.len(), names.join(" "))
        }
    };
    if a.compare.is_empty() {
        if a.runs.len() > 1 {
            println!("# {}", names(&a.runs));
        }
        print!("{}", ev_a.to_trec_eval(a.per_query));
        return Ok(());
    }
    let ev_b = score(&a.compare)?;
    println!(
        "# A = {}\n# B = {}\n# paired randomization test, {} permutations, seed {}",
        names(&a.runs),
        names(&a.compare),
        a.permutations,
        a.seed
    );
    println!("{:<22}\t{:>8}\t{:>8}\t{:>9}\t{:>8}\t{:>7}", "measure", "A", "B", "B-A", "p", "queries");
    for c in compare(&ev_a, &ev_b, a.permutations, a.seed) {
        println!("{:<22}\t{:>8.4}\t{:>8.4}\t{:>+9.4}\t{:>8.4}\t{:>7}", c.measure, c.mean_a, c.mean_b, c.difference, c.p_value, c.queries);
    }
    Ok(())
}
