//! `RUN/curves.png`: loss, learning rate, temperature and validation recall, drawn from the
//! run's JSONL logs so the same picture can be redrawn at any time (`vlp plot RUN`).

use crate::{Result, TrainError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vlp_plot::{panels_png, Panel, Series};

/// A log's rows by step; a resumed run logs the steps after its checkpoint again, and the
/// later row is the one that counts.
fn rows_by_step(path: &Path) -> BTreeMap<u64, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter_map(|v| Some((v.get("step")?.as_u64()?, v))).collect()
}

fn series(rows: &BTreeMap<u64, Value>, name: &str, field: &[&str]) -> Series {
    let points = rows
        .iter()
        .filter_map(|(step, v)| {
            let y = field.iter().try_fold(v, |v, f| v.get(f))?.as_f64()?;
            Some((*step as f64, y))
        })
        .collect();
    Series::new(name, points)
}

/// Redraws `RUN/curves.png` from `train_log.jsonl` and `val_log.jsonl`.
pub fn training_curves(run: &Path) -> Result<PathBuf> {
    let steps = rows_by_step(&run.join("train_log.jsonl"));
    let val = rows_by_step(&run.join("val_log.jsonl"));
    let mut loss = Panel::new("loss", "step", "loss").with(series(&steps, "total", &["loss"]));
    let token = series(&steps, "token", &["token"]);
    if !token.points.is_empty() {
        // with one loss, "global" is "total" drawn again
        loss = loss.with(series(&steps, "global", &["global"])).with(token);
    }
    let lr = Panel::new("learning rate", "step", "lr").with(series(&steps, "", &["lr"]));
    let temp = Panel::new("logit scale (1/temperature)", "step", "exp(t)").with(series(&steps, "", &["logit_scale"]));
    let mut recall = Panel { markers: true, ..Panel::new("validation recall (grade 2)", "step", "R@k") };
    for (name, key) in
        [("text→image R@1", "t2i_r1"), ("text→image R@5", "t2i_r5"), ("image→text R@1", "i2t_r1"), ("image→text R@5", "i2t_r5")]
    {
        recall = recall.with(series(&val, name, &["val", key]));
    }
    recall = recall.with(series(&val, "random T→I R@1", &["random_baseline", "t2i_r1"]));
    let path = run.join("curves.png");
    let title = run.file_name().and_then(|n| n.to_str()).unwrap_or("run");
    panels_png(&path, title, &[loss, lr, temp, recall], 2, (560, 380)).map_err(|e| TrainError::Other(e.to_string()))?;
    Ok(path)
}

/// Mean of each point and the `window - 1` before it: per-step losses are noisy.
fn smoothed(s: Series, window: usize) -> Series {
    let ys: Vec<f64> = s.points.iter().map(|p| p.1).collect();
    let points = s
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let from = (i + 1).saturating_sub(window.max(1));
            (p.0, ys[from..=i].iter().sum::<f64>() / (i + 1 - from) as f64)
        })
        .collect();
    Series { name: s.name, points }
}

/// Several runs on one figure: training loss against wall-clock time and validation
/// text→image R@1 against step.
pub fn compare_runs(runs: &[PathBuf], out: &Path) -> Result<()> {
    let mut loss = Panel::new("training loss (mean of 20 steps)", "seconds", "loss");
    let mut recall = Panel { markers: true, ..Panel::new("validation text→image R@1", "step", "R@1") };
    for run in runs {
        let name = run.file_name().and_then(|n| n.to_str()).unwrap_or("run").to_string();
        let steps = rows_by_step(&run.join("train_log.jsonl"));
        if steps.is_empty() {
            return Err(TrainError::Other(format!("{}: no train_log.jsonl rows", run.display())));
        }
        let points = steps.values().filter_map(|v| Some((v.get("elapsed_s")?.as_f64()?, v.get("loss")?.as_f64()?)));
        loss = loss.with(smoothed(Series::new(name.clone(), points.collect()), 20));
        recall = recall.with(series(&rows_by_step(&run.join("val_log.jsonl")), &name, &["val", "t2i_r1"]));
    }
    panels_png(out, "runs compared", &[loss, recall], 2, (640, 420)).map_err(|e| TrainError::Other(e.to_string()))
}
