//! `vlp plot RUN` redraws a run's `curves.png`; `vlp plot RUN... --out X.png` compares runs.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories (as given to `vlp train --out`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Draw the runs on one figure here (loss against time, validation R@1 against step)
    /// instead of redrawing each run's own curves.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    match &a.out {
        Some(out) => {
            vlp_train::plots::compare_runs(&a.runs, out)?;
            println!("{}", out.display());
        }
        None => {
            for run in &a.runs {
                println!("{}", vlp_train::plots::training_curves(run)?.display());
            }
        }
    }
    Ok(())
}
