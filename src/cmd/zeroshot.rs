//! `vlp zeroshot --checkpoint runs/X --data DATA --label-field F --templates en|zh|FILE`:
//! zero-shot classification of a split's images by one of their metadata fields.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use vlp_data::evalset::EvalSet;
use vlp_data::source::ReadOptions;
use vlp_embed::checkpoint::Encoder;
use vlp_embed::zeroshot::{classify, random_baseline, templates, LabelledImages, ZeroShotScore};

#[derive(Args)]
pub struct ZeroShotArgs {
    /// A run directory or a checkpoint directory; repeat for more rows.
    #[arg(long = "checkpoint", required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// A built data set directory, or any input whose samples carry the label field.
    #[arg(long)]
    pub data: String,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// The metadata field whose values are the classes (emoji: category or subcategory;
    /// synthetic: main; openclipart: category).
    #[arg(long)]
    pub label_field: String,
    /// Prompt templates: `en`, `zh`, or a file with one template per line, each with `{}`.
    #[arg(long, default_value = "en")]
    pub templates: String,
    /// TSV of `label<TAB>name`: the words put into the templates in place of a label (to
    /// name English labels in Chinese, say). Labels not listed are used as they are.
    #[arg(long)]
    pub label_names: Option<PathBuf>,
    /// Where to write report.json and table.md.
    #[arg(long, default_value = "eval/zeroshot")]
    pub out: PathBuf,
    #[command(flatten)]
    pub on: super::EmbedOn,
}

fn read_names(path: &PathBuf) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--label-names {}", path.display()))?;
    let mut names = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
        let Some((label, name)) = line.split_once('\t') else {
            bail!("--label-names {}:{}: expected `label<TAB>name`, got {line:?}", path.display(), i + 1);
        };
        names.insert(label.trim().to_string(), name.trim().to_string());
    }
    Ok(names)
}

pub fn run(a: ZeroShotArgs) -> Result<()> {
    super::on_device!(a.on.device, |B, device| run_on::<B>(&a, &device))
}

fn run_on<B: burn::tensor::backend::Backend>(a: &ZeroShotArgs, device: &B::Device) -> Result<()> {
    let templates = templates(&a.templates)?;
    let set = EvalSet::load(&a.data, &a.split, &ReadOptions::default()).with_context(|| format!("reading {} ({})", a.data, a.split))?;
    let mut skipped = set.skipped;
    let labelled = LabelledImages::from_samples(set.images, &a.label_field)?;
    skipped.merge(labelled.skipped.clone());
    let names = match &a.label_names {
        Some(p) => read_names(p)?,
        None => HashMap::new(),
    };
    let class_names: Vec<String> = labelled.classes.iter().map(|c| names.get(c).cloned().unwrap_or_else(|| c.clone())).collect();
    eprintln!(
        "{} images in {} classes of {:?}, {} templates ({})",
        labelled.images.len(),
        class_names.len(),
        a.label_field,
        templates.len(),
        a.templates
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut rows: Vec<(String, ZeroShotScore)> = Vec::new();
    let mut dim = 0;
    for ck in &a.checkpoints {
        let enc = Encoder::<B>::load(ck, device).with_context(|| format!("loading {}", ck.display()))?;
        let token_level = enc.config.loss.learns_tokens();
        dim = enc.config.model.embed_dim;
        let (scores, bad) =
            classify(&enc.model, &enc.tokenizer, &enc.config.image_config(), &labelled, &class_names, &templates, token_level, device)?;
        if rows.is_empty() {
            skipped.merge(bad);
        }
        let name = vlp_embed::table::model_name(ck);
        rows.extend(scores.into_iter().map(|s| (name.clone(), s)));
    }
    rows.push(("random".into(), random_baseline(&labelled, dim)));
    let mut table = format!(
        "Zero-shot classification of `{}` ({}) by `{}`: {} images, {} classes, templates `{}`.\n\n\
         | model | ensembling | top-1 | top-5 |\n|---|---|---|---|\n",
        a.data,
        a.split,
        a.label_field,
        labelled.images.len(),
        class_names.len(),
        a.templates
    );
    for (model, s) in &rows {
        let _ = writeln!(table, "| {model} | {} | {:.3} | {:.3} |", s.method, s.top1, s.top5);
    }
    let report = serde_json::json!({
        "data": a.data, "split": a.split, "label_field": a.label_field, "templates": templates,
        "classes": labelled.classes, "class_names": class_names, "skipped": skipped.total(),
        "rows": rows.iter().map(|(m, s)| serde_json::json!({"model": m, "score": s})).collect::<Vec<_>>(),
    });
    vlp_atomic::write(&a.out.join("table.md"), table.as_bytes())?;
    vlp_atomic::write(&a.out.join("report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    print!("{table}");
    if skipped.total() > 0 {
        eprint!("{}", skipped.summary());
    }
    eprintln!("wrote {}/table.md and report.json", a.out.display());
    Ok(())
}
