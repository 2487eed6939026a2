//! `vlp eval --checkpoint runs/X [--checkpoint runs/Y] --data DIR --split test`: exact retrieval
//! both ways, TREC run files, a JSON report, and a markdown table in the BriVL layout.

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vlp_data::dataset::Direction;
use vlp_data::evalset::EvalSet;
use vlp_data::source::ReadOptions;
use vlp_eval::{evaluate, Measure, MissingQueries, Qrels};
use vlp_train::checkpoint::Encoder;
use vlp_train::embed::{embed_images, embed_texts, random_embeddings, Embeddings};
use vlp_train::retrieval::{exact_run, qrels_of};

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
}

/// The columns of one direction.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct DirectionScores {
    pub ndcg_5: f64,
    pub ndcg_10: f64,
    pub ndcg_20: f64,
    pub map: f64,
    /// R@k: a grade-2 (exact) item in the top k.
    pub r_1: f64,
    pub r_5: f64,
    pub r_10: f64,
    /// Reciprocal rank of the first item of grade ≥ 1.
    pub mrr: f64,
    pub queries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub model: String,
    pub group: String,
    pub t2i: DirectionScores,
    pub i2t: DirectionScores,
}

const GRADED: [Measure; 5] = [Measure::NdcgCut(5), Measure::NdcgCut(10), Measure::NdcgCut(20), Measure::Map, Measure::RecipRank];
const EXACT: [Measure; 3] = [Measure::Success(1), Measure::Success(5), Measure::Success(10)];

fn restrict(q: &Qrels, keep_query: &dyn Fn(&str) -> bool, keep_doc: &dyn Fn(&str) -> bool) -> Qrels {
    let mut out = Qrels::new();
    for qid in q.query_ids().filter(|q| keep_query(q)) {
        for (d, g) in q.query(qid).into_iter().flatten() {
            if keep_doc(d) {
                out.insert(qid, d, *g);
            }
        }
    }
    out
}

fn subset(e: &Embeddings, keep: &dyn Fn(&str) -> bool) -> Embeddings {
    let mut out = Embeddings { dim: e.dim, ..Default::default() };
    for (i, id) in e.ids.iter().enumerate() {
        if keep(id) {
            out.ids.push(id.clone());
            out.vectors.extend_from_slice(e.row(i));
        }
    }
    out
}

fn score(queries: &Embeddings, docs: &Embeddings, graded: &Qrels, exact: &Qrels, depth: usize) -> (DirectionScores, vlp_eval::Run) {
    let run = exact_run("vlp", queries, docs, depth);
    (score_run(&run, graded, exact), run)
}

fn score_run(run: &vlp_eval::Run, graded: &Qrels, exact: &Qrels) -> DirectionScores {
    let g = evaluate(graded, run, &GRADED, MissingQueries::Zero);
    let e = evaluate(exact, run, &EXACT, MissingQueries::Zero);
    DirectionScores {
        ndcg_5: g.mean_at(0),
        ndcg_10: g.mean_at(1),
        ndcg_20: g.mean_at(2),
        map: g.mean_at(3),
        mrr: g.mean_at(4),
        r_1: e.mean_at(0),
        r_5: e.mean_at(1),
        r_10: e.mean_at(2),
        queries: g.num_queries(),
    }
}

/// Every row for one pair of embeddings: all texts, then each (language, field) group.
fn rows_for(model: &str, images: &Embeddings, texts: &Embeddings, set: &EvalSet, depth: usize) -> (Vec<Row>, [vlp_eval::Run; 2]) {
    let t2i_g = qrels_of(&set.qrels(Direction::T2i, 1));
    let t2i_e = qrels_of(&set.qrels(Direction::T2i, 2));
    let i2t_g = qrels_of(&set.qrels(Direction::I2t, 1));
    let i2t_e = qrels_of(&set.qrels(Direction::I2t, 2));
    let (t2i, run_t2i) = score(texts, images, &t2i_g, &t2i_e, depth);
    let (i2t, run_i2t) = score(images, texts, &i2t_g, &i2t_e, depth);
    let mut rows = vec![Row { model: model.into(), group: "all".into(), t2i, i2t }];
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for t in &set.texts {
        let name = match (&t.lang, &t.field) {
            (Some(l), Some(f)) => format!("{l} {f}"),
            (Some(l), None) => l.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => continue,
        };
        groups.entry(name).or_default().push(&t.id);
    }
    if groups.len() > 1 {
        for (name, ids) in groups {
            let ids: std::collections::HashSet<&str> = ids.into_iter().collect();
            let in_group = |id: &str| ids.contains(id);
            let any = |_: &str| true;
            let sub = subset(texts, &in_group);
            let (t2i, _) = score(&sub, images, &restrict(&t2i_g, &in_group, &any), &restrict(&t2i_e, &in_group, &any), depth);
            let (i2t, _) = score(images, &sub, &restrict(&i2t_g, &any, &in_group), &restrict(&i2t_e, &any, &in_group), depth);
            rows.push(Row { model: model.into(), group: name, t2i, i2t });
        }
    }
    (rows, [run_t2i, run_i2t])
}

pub fn markdown(rows: &[Row], split: &str, data: &str) -> String {
    let mut s = format!(
        "Retrieval on `{data}` ({split}), exact search. NDCG@k, MAP and MRR count grade ≥ 1 as relevant \
         (trec_eval's definitions, gain = grade); R@k counts a grade-2 item in the top k.\n\n"
    );
    s.push_str("| model | texts | T→I NDCG@5 | NDCG@10 | NDCG@20 | MAP | I→T NDCG@5 | NDCG@10 | NDCG@20 | MAP | T→I R@1 | R@5 | R@10 | MRR | I→T R@1 | R@5 | R@10 | MRR |\n");
    s.push_str(&format!("|{}\n", "---|".repeat(18)));
    for r in rows {
        let (a, b) = (&r.t2i, &r.i2t);
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.model, r.group, a.ndcg_5, a.ndcg_10, a.ndcg_20, a.map, b.ndcg_5, b.ndcg_10, b.ndcg_20, b.map, a.r_1, a.r_5, a.r_10, a.mrr, b.r_1, b.r_5, b.r_10, b.mrr
        );
    }
    s
}

pub(crate) fn model_name(path: &Path) -> String {
    path.components().rev().find_map(|c| {
        let s = c.as_os_str().to_string_lossy();
        (!s.starts_with("ckpt-") && s != "." && !s.is_empty()).then(|| s.into_owned())
    }).unwrap_or_else(|| path.display().to_string())
}

pub fn run(a: EvalArgs) -> Result<()> {
    let set = EvalSet::load(&a.data, &a.split, &ReadOptions::default()).with_context(|| format!("reading {} ({})", a.data, a.split))?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = Default::default();
    let text_ids: Vec<String> = set.texts.iter().map(|t| t.id.clone()).collect();
    let text_strings: Vec<String> = set.texts.iter().map(|t| t.text.clone()).collect();
    eprintln!("{} images, {} texts in {} ({})", set.images.len(), set.texts.len(), a.data, a.split);
    let mut rows = Vec::new();
    let mut dim = 0;
    let mut names = Vec::new();
    for ck in &a.checkpoints {
        let enc = Encoder::<burn::backend::Flex>::load(ck, &device).with_context(|| format!("loading {}", ck.display()))?;
        let mut name = model_name(ck);
        while names.contains(&name) {
            name.push('\'');
        }
        names.push(name.clone());
        let started = std::time::Instant::now();
        let (images, skipped) = embed_images(&enc.model, &set.images, &enc.config.image_config(), 128, &device);
        let texts = embed_texts(&enc.model, &enc.tokenizer, &text_ids, &text_strings, 256, &device)?;
        eprintln!("{name}: encoded in {:.1}s ({} images skipped)", started.elapsed().as_secs_f64(), skipped.total());
        dim = images.dim;
        let (r, [run_t2i, run_i2t]) = rows_for(&name, &images, &texts, &set, a.depth);
        let safe = name.replace(['/', '\''], "_");
        run_t2i.write(&a.out.join(format!("{safe}.{}.t2i.run", a.split)))?;
        run_i2t.write(&a.out.join(format!("{safe}.{}.i2t.run", a.split)))?;
        rows.extend(r);
        if let Some(dir) = &a.index {
            rows.extend(index_rows(dir, &name, &enc, &images, &texts, &set, &a)?);
        }
    }
    let image_ids: Vec<String> = set.images.iter().map(|s| s.key.clone()).collect();
    let (r, _) = rows_for("random embeddings", &random_embeddings(&image_ids, dim, 1), &random_embeddings(&text_ids, dim, 2), &set, a.depth);
    rows.extend(r);
    let table = markdown(&rows, &a.split, &a.data);
    std::fs::write(a.out.join("table.md"), &table)?;
    std::fs::write(a.out.join("report.json"), serde_json::to_string_pretty(&serde_json::json!({"data": a.data, "split": a.split, "rows": rows}))?)?;
    println!("{table}");
    eprintln!("wrote {}/table.md, report.json and the TREC runs (*.t2i.run, *.i2t.run)", a.out.display());
    Ok(())
}

/// Rows for ranking through an index: text→image per mode, image→text by HNSW.
fn index_rows(
    dir: &Path,
    name: &str,
    enc: &Encoder<burn::backend::Flex>,
    images: &Embeddings,
    texts: &Embeddings,
    set: &EvalSet,
    a: &EvalArgs,
) -> Result<Vec<Row>> {
    use vlp_index::catalog::{Mode, RetrievalIndex};
    let idx = RetrievalIndex::open(dir)?;
    let model = super::index::model_identity(&enc.dir)?;
    let split = idx.info.source.get("split").and_then(|v| v.as_str()).unwrap_or("");
    if split != a.split {
        eprintln!("warning: {} indexes split {split:?}, the qrels are of {:?}; unjudged items count as non-relevant", dir.display(), a.split);
    }
    let depth = a.depth.min(idx.items.len()).max(1);
    let grade = |d: Direction, g: i32| qrels_of(&set.qrels(d, g));
    let (t2i_g, t2i_e, i2t_g, i2t_e) = (grade(Direction::T2i, 1), grade(Direction::T2i, 2), grade(Direction::I2t, 1), grade(Direction::I2t, 2));
    let mut i2t_run = vlp_eval::Run::new("vlp-hnsw");
    for (i, id) in images.ids.iter().enumerate() {
        let hits = idx.dense_texts(images.row(i), &model, depth.min(idx.texts.len()), a.ef, false)?;
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
        for (i, id) in texts.ids.iter().enumerate() {
            let ranked = idx.text_to_images(text_of[id.as_str()], Some((texts.row(i), &model)), m, depth, a.ef, false, &[])?;
            run.insert_query(id, ranked.iter().map(|r| (idx.items[r.row].id.clone(), r.score)).collect());
        }
        rows.push(Row { model: format!("{name} [{label}]"), group: "all".into(), t2i: score_run(&run, &t2i_g, &t2i_e), i2t });
    }
    if let Some(k) = a.rerank {
        let mut run = vlp_eval::Run::new("vlp-rerank");
        for (i, id) in texts.ids.iter().enumerate() {
            let rows: Vec<usize> = idx.dense_images(texts.row(i), &model, k, a.ef, false, &[])?.iter().map(|h| h.row).collect();
            let q = vlp_serve::searcher::text_tokens(enc, text_of[id.as_str()], &Default::default())?;
            let ranked = idx.rerank_images(&rows, &q, &model)?;
            run.insert_query(id, ranked.iter().map(|r| (idx.items[r.row].id.clone(), r.score)).collect());
        }
        let label = format!("index: HNSW top {k}, token re-rank (T→I)");
        rows.push(Row { model: format!("{name} [{label}]"), group: "all".into(), t2i: score_run(&run, &t2i_g, &t2i_e), i2t });
    }
    Ok(rows)
}
