//! `vlp eval --checkpoint runs/X [--checkpoint runs/Y] --data DIR --split test`: exact retrieval
//! both ways, TREC run files, a JSON report, and a markdown table in the BriVL layout.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use vlp_data::dataset::Direction;
use vlp_data::evalset::EvalSet;
use vlp_data::source::ReadOptions;
use vlp_embed::checkpoint::{model_identity, Encoder};
use vlp_embed::embed::{embed_images, embed_texts, random_embeddings, Embeddings};
use vlp_embed::retrieval::qrels_of;
use vlp_embed::table::{markdown, model_name, rows_for, score_run, Row};

#[derive(Args)]
pub struct EvalArgs {
    /// A run directory (its latest checkpoint) or a checkpoint directory; repeat for more rows.
    #[arg(long = "checkpoint", required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// A built data set directory (with qrels), or any input (captions paired with images).
    #[arg(long)]
    pub data: String,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Where to write runs, report.json and table.md.
    #[arg(long, default_value = "eval")]
    pub out: PathBuf,
    /// Results kept per query in the run files (trec_eval's usual depth is 1000).
    #[arg(long, default_value_t = 1000)]
    pub depth: usize,
    /// Also rank through this index (built from the same data and split with `vlp index
    /// build`), adding a row per `--mode` beside exact search.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Ways text queries go through the index: dense (HNSW), bm25, hybrid. Image queries are
    /// always dense (HNSW) over the texts.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dense")]
    pub mode: Vec<super::index::SearchMode>,
    /// HNSW candidates for the index rows (default: the index's ef_search).
    #[arg(long)]
    pub ef: Option<usize>,
    /// Add a row where the top K dense (HNSW) candidates of each text query are re-ranked with
    /// the token-level similarity.
    #[arg(long)]
    pub rerank: Option<usize>,
    #[command(flatten)]
    pub on: super::EmbedOn,
}

pub fn run(a: EvalArgs) -> Result<()> {
    super::on_device!(a.on.device, |B, device| run_on::<B>(&a, &device))
}

fn run_on<B: burn::tensor::backend::Backend>(a: &EvalArgs, device: &B::Device) -> Result<()> {
    let set = EvalSet::load(&a.data, &a.split, &ReadOptions::default()).with_context(|| format!("reading {} ({})", a.data, a.split))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let text_ids: Vec<String> = set.texts.iter().map(|t| t.id.clone()).collect();
    let text_strings: Vec<String> = set.texts.iter().map(|t| t.text.clone()).collect();
    eprintln!("{} images, {} texts in {} ({})", set.images.len(), set.texts.len(), a.data, a.split);
    let mut rows = Vec::new();
    let mut dim = 0;
    let mut names = Vec::new();
    for ck in &a.checkpoints {
        let enc = Encoder::<B>::load(ck, device).with_context(|| format!("loading {}", ck.display()))?;
        let mut name = model_name(ck);
        while names.contains(&name) {
            name.push('\'');
        }
        names.push(name.clone());
        let started = std::time::Instant::now();
        let (images, skipped) = embed_images(&enc.model, &set.images, &enc.config.image_config(), a.on.images_per_batch(), device);
        let texts = embed_texts(&enc.model, &enc.tokenizer, &text_ids, &text_strings, a.on.texts_per_batch(), device)?;
        eprintln!("{name}: encoded in {:.1}s ({} images skipped)", started.elapsed().as_secs_f64(), skipped.total());
        dim = images.dim;
        let (r, [run_t2i, run_i2t]) = rows_for(&name, &images, &texts, &set, a.depth);
        let safe = name.replace(['/', '\''], "_");
        run_t2i.write(&a.out.join(format!("{safe}.{}.t2i.run", a.split)))?;
        run_i2t.write(&a.out.join(format!("{safe}.{}.i2t.run", a.split)))?;
        rows.extend(r);
        if let Some(dir) = &a.index {
            rows.extend(index_rows(dir, &name, &enc, &images, &texts, &set, a, device)?);
        }
    }
    let image_ids: Vec<String> = set.images.iter().map(|s| s.key.clone()).collect();
    let (r, _) =
        rows_for("random embeddings", &random_embeddings(&image_ids, dim, 1), &random_embeddings(&text_ids, dim, 2), &set, a.depth);
    rows.extend(r);
    let table = markdown(&rows, &a.split, &a.data);
    vlp_atomic::write(&a.out.join("table.md"), table.as_bytes())?;
    let report = serde_json::json!({"data": a.data, "split": a.split, "rows": rows});
    vlp_atomic::write(&a.out.join("report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("{table}");
    eprintln!("wrote {}/table.md, report.json and the TREC runs (*.t2i.run, *.i2t.run)", a.out.display());
    Ok(())
}

/// Rows for ranking through an index: text→image per mode, image→text by HNSW.
#[allow(clippy::too_many_arguments)]
fn index_rows<B: burn::tensor::backend::Backend>(
    dir: &Path,
    name: &str,
    enc: &Encoder<B>,
    images: &Embeddings,
    texts: &Embeddings,
    set: &EvalSet,
    a: &EvalArgs,
    device: &B::Device,
) -> Result<Vec<Row>> {
    use vlp_index::catalog::{Mode, RetrievalIndex, SearchParams};
    let idx = RetrievalIndex::open(dir)?;
    let model = model_identity(&enc.dir)?;
    let split = idx.info.source.get("split").and_then(|v| v.as_str()).unwrap_or("");
    if split != a.split {
        eprintln!(
            "warning: {} indexes split {split:?}, the qrels are of {:?}; unjudged items count as non-relevant",
            dir.display(),
            a.split
        );
    }
    let depth = a.depth.min(idx.items.len()).max(1);
    let params = SearchParams { k: depth, ef: a.ef, ..Default::default() };
    let grade = |d: Direction, g: i32| qrels_of(&set.qrels(d, g));
    let (t2i_g, t2i_e, i2t_g, i2t_e) =
        (grade(Direction::T2i, 1), grade(Direction::T2i, 2), grade(Direction::I2t, 1), grade(Direction::I2t, 2));
    let mut i2t_run = vlp_eval::Run::new("vlp-hnsw");
    for (i, id) in images.ids.iter().enumerate() {
        let hits = idx.dense_texts(images.row(i), &model, &params.with_k(depth.min(idx.texts.len())))?;
        i2t_run.insert_query(id, hits.iter().map(|h| (idx.texts[h.row].id.clone(), h.score)).collect());
    }
    let i2t = score_run(&i2t_run, &i2t_g, &i2t_e);
    let text_of: std::collections::HashMap<&str, &str> = set.texts.iter().map(|t| (t.id.as_str(), t.text.as_str())).collect();
    let mut rows = Vec::new();
    for mode in &a.mode {
        let (m, label) = match mode {
            super::index::SearchMode::Dense => (Mode::Dense, "index: HNSW dense"),
            super::index::SearchMode::Bm25 => (Mode::Bm25, "index: BM25 (T→I)"),
            super::index::SearchMode::Hybrid => (Mode::Hybrid, "index: hybrid RRF (T→I)"),
        };
        let mut run = vlp_eval::Run::new("vlp-index");
        let params = SearchParams { mode: m, ..params.clone() };
        for (i, id) in texts.ids.iter().enumerate() {
            let ranked = idx.text_to_images(text_of[id.as_str()], Some((texts.row(i), &model)), &params)?;
            run.insert_query(id, ranked.iter().map(|r| (idx.items[r.row].id.clone(), r.score)).collect());
        }
        rows.push(Row { model: format!("{name} [{label}]"), group: "all".into(), t2i: score_run(&run, &t2i_g, &t2i_e), i2t });
    }
    if let Some(k) = a.rerank {
        let mut run = vlp_eval::Run::new("vlp-rerank");
        for (i, id) in texts.ids.iter().enumerate() {
            let rows: Vec<usize> = idx.dense_images(texts.row(i), &model, &params.with_k(k))?.iter().map(|h| h.row).collect();
            let q = vlp_serve::searcher::text_tokens(enc, text_of[id.as_str()], device)?;
            let ranked = idx.rerank_images(&rows, &q, &model)?;
            run.insert_query(id, ranked.iter().map(|r| (idx.items[r.row].id.clone(), r.score)).collect());
        }
        let label = format!("index: HNSW top {k}, token re-rank (T→I)");
        rows.push(Row { model: format!("{name} [{label}]"), group: "all".into(), t2i: score_run(&run, &t2i_g, &t2i_e), i2t });
    }
    Ok(rows)
}
