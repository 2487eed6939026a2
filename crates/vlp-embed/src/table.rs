//! The BriVL/Wukong evaluation table: for each model, NDCG@5/10/20 and MAP (graded qrels,
//! trec_eval's definitions) and R@1/5/10 and MRR, text→image and image→text, over all texts and
//! per (language, field) group, from exact retrieval. `vlp eval` writes it as `table.md` and
//! `report.json`.

use crate::embed::Embeddings;
use crate::retrieval::{exact_run, qrels_of};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use vlp_data::dataset::Direction;
use vlp_data::evalset::EvalSet;
use vlp_eval::{evaluate, Measure, MissingQueries, Qrels};

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

/// One direction's columns for a run against graded (≥ 1) and exact (grade 2) qrels.
pub fn score_run(run: &vlp_eval::Run, graded: &Qrels, exact: &Qrels) -> DirectionScores {
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
pub fn rows_for(model: &str, images: &Embeddings, texts: &Embeddings, set: &EvalSet, depth: usize) -> (Vec<Row>, [vlp_eval::Run; 2]) {
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

/// The table as markdown, one line per row.
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

/// A row's name for a run or checkpoint path: the run directory's name, not `ckpt-*`.
pub fn model_name(path: &Path) -> String {
    path.components()
        .rev()
        .find_map(|c| {
            let s = c.as_os_str().to_string_lossy();
            (!s.starts_with("ckpt-") && s != "." && !s.is_empty()).then(|| s.into_owned())
        })
        .unwrap_or_else(|| path.display().to_string())
}
