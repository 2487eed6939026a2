//! Exact (brute-force) retrieval both ways over embeddings, scored with vlp-eval.

use crate::embed::Embeddings;
use rayon::prelude::*;
use serde::Serialize;
use vlp_data::dataset::Direction;
use vlp_data::evalset::EvalSet;
use vlp_eval::{evaluate, run_from_scores, Measure, MissingQueries, Qrels, Run};

/// `queries · docsᵀ`, `[queries, docs]` row-major.
pub fn scores(queries: &Embeddings, docs: &Embeddings) -> Vec<f32> {
    assert_eq!(queries.dim, docs.dim, "embedding widths differ");
    let n = docs.len();
    let mut out = vec![0f32; queries.len() * n];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(q, row)| {
        let qv = queries.row(q);
        for (d, s) in row.iter_mut().enumerate() {
            *s = vlp_index::exact::dot(qv, docs.row(d));
        }
    });
    out
}

/// The exact run of every query against every document, best `k` kept.
pub fn exact_run(tag: &str, queries: &Embeddings, docs: &Embeddings, k: usize) -> Run {
    run_from_scores(tag, &queries.ids, &docs.ids, &scores(queries, docs), k)
}

pub fn qrels_of(triples: &[(String, String, i32)]) -> Qrels {
    let mut q = Qrels::new();
    for (qid, did, g) in triples {
        q.insert(qid, did, *g);
    }
    q
}

/// R@1 and R@5 with grade-2 relevance, both ways.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Recall {
    pub t2i_r1: f64,
    pub t2i_r5: f64,
    pub i2t_r1: f64,
    pub i2t_r5: f64,
}

impl std::fmt::Display for Recall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "text→image R@1 {:.3} R@5 {:.3} | image→text R@1 {:.3} R@5 {:.3}", self.t2i_r1, self.t2i_r5, self.i2t_r1, self.i2t_r5)
    }
}

/// R@k (any grade-2 item in the top k) both ways; queries without results count as 0.
pub fn recall(images: &Embeddings, texts: &Embeddings, set: &EvalSet) -> Recall {
    let measures = [Measure::Success(1), Measure::Success(5)];
    let one_way = |q: &Embeddings, d: &Embeddings, dir: Direction| {
        let run = exact_run("val", q, d, 5);
        let ev = evaluate(&qrels_of(&set.qrels(dir, 2)), &run, &measures, MissingQueries::Zero);
        (ev.mean_at(0), ev.mean_at(1))
    };
    let (t2i_r1, t2i_r5) = one_way(texts, images, Direction::T2i);
    let (i2t_r1, i2t_r5) = one_way(images, texts, Direction::I2t);
    Recall { t2i_r1, t2i_r5, i2t_r1, i2t_r5 }
}
