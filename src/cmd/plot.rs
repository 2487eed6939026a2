//! `vlp plot RUN` redraws a run's `curves.png`; `vlp plot RUN... --out X.png` compares runs;
//! `vlp plot --points T.tsv --out X.png` draws measured points (recall against queries/s).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use vlp_plot::{panels_png, Panel, Series};

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories (as given to `vlp train --out`).
    #[arg(required_unless_present = "points")]
    pub runs: Vec<PathBuf>,
    /// A TSV of measured points, `series<TAB>x<TAB>y` per line, with a header line naming the
    /// axes (`series  queries/s  recall@10`): drawn as one panel, x on a log scale.
    #[arg(long, requires = "out", conflicts_with = "runs")]
    pub points: Option<PathBuf>,
    /// The figure's title, with --points.
    #[arg(long, default_value = "")]
    pub title: String,
    /// Draw the runs on one figure here (loss against time, validation R@1 against step)
    /// instead of redrawing each run's own curves.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: PlotArgs) -> Result<()> {
    if let (Some(points), Some(out)) = (&a.points, &a.out) {
        return plot_points(points, &a.title, out);
    }
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

fn plot_points(path: &Path, title: &str, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let header: Vec<&str> = lines.next().context("an empty table")?.split('\t').collect();
    if header.len() != 3 {
        bail!("{}: the header must name three columns: series, x, y", path.display());
    }
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |s: &str| s.trim().parse::<f64>().with_context(|| format!("{}: line {}: {s:?} is not a number", path.display(), i + 2));
        match f.as_slice() {
            [name, x, y] => series.entry(name).or_default().push((num(x)?, num(y)?)),
            _ => bail!("{}: line {}: expected three tab-separated fields", path.display(), i + 2),
        }
    }
    let mut panel = Panel { log_x: true, markers: true, ..Panel::new("", header[1], header[2]) };
    for (name, points) in series {
        panel = panel.with(Series::new(name, points));
    }
    panels_png(out, title, &[panel], 1, (800, 500))?;
    println!("{}", out.display());
    Ok(())
}
