//! A run scored against qrels: per-query values, means, and trec_eval's output format.

use crate::metrics::{Measure, QueryJudgements};
use crate::trec::{Qrels, Run};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Queries that have judgements but no results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingQueries {
    /// Leave them out of the means (trec_eval's default).
    #[default]
    Skip,
    /// Count them with every measure 0 (`trec_eval -c`).
    Zero,
}

/// Per-query values of each measure, for the queries of the qrels.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub measures: Vec<Measure>,
    /// Query id → one value per measure, for queries present in both qrels and run.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// Queries of the qrels that the run lacks.
    pub missing: Vec<String>,
    pub missing_policy: MissingQueries,
}

/// Scores `run` against `qrels`. Queries only in the run are ignored, as trec_eval does.
pub fn evaluate(qrels: &Qrels, run: &Run, measures: &[Measure], missing: MissingQueries) -> Evaluation {
    let qids: Vec<&str> = qrels.query_ids().collect();
    let rows: Vec<(String, Option<Vec<f64>>)> = qids
        .par_iter()
        .map(|&qid| {
            let judged = qrels.query(qid).expect("qid from qrels");
            let values = run.query(qid).map(|results| {
                let j = QueryJudgements::new(results.iter().map(|(d, _)| d.as_str()), judged);
                measures.iter().map(|&m| j.value(m)).collect()
            });
            (qid.to_string(), values)
        })
        .collect();
    let mut per_query = BTreeMap::new();
    let mut missing_ids = Vec::new();
    for (qid, v) in rows {
        match v {
            Some(v) => {
                per_query.insert(qid, v);
            }
            None => missing_ids.push(qid),
        }
    }
    Evaluation { measures: measures.to_vec(), per_query, missing: missing_ids, missing_policy: missing }
}

impl Evaluation {
    /// Number of queries in the mean.
    pub fn num_queries(&self) -> usize {
        match self.missing_policy {
            MissingQueries::Skip => self.per_query.len(),
            MissingQueries::Zero => self.per_query.len() + self.missing.len(),
        }
    }

    /// Mean of measure `i` under the missing-query policy (0 when no query counts).
    pub fn mean_at(&self, i: usize) -> f64 {
        let n = self.num_queries();
        if n == 0 {
            return 0.0;
        }
        self.per_query.values().map(|v| v[i]).sum::<f64>() / n as f64
    }

    pub fn mean(&self, m: Measure) -> Option<f64> {
        self.measures.iter().position(|&x| x == m).map(|i| self.mean_at(i))
    }

    /// Values of measure `i` per query, with missing queries as 0 under `Zero` (for paired tests).
    pub fn values_at(&self, i: usize) -> BTreeMap<&str, f64> {
        let mut out: BTreeMap<&str, f64> = self.per_query.iter().map(|(q, v)| (q.as_str(), v[i])).collect();
        if self.missing_policy == MissingQueries::Zero {
            for q in &self.missing {
                out.insert(q, 0.0);
            }
        }
        out
    }

    /// trec_eval's output: `measure<TAB>qid<TAB>value`, measure names padded to 22 columns,
    /// values to 4 decimals; per-query lines first with `per_query`, then the `all` lines.
    pub fn to_trec_eval(&self, per_query: bool) -> String {
        let mut s = String::new();
        if per_query {
            for (qid, values) in &self.per_query {
                for (m, v) in self.measures.iter().zip(values) {
                    let _ = writeln!(s, "{:<22}\t{}\t{:.4}", m.to_string(), qid, v);
                }
            }
        }
        for (i, m) in self.measures.iter().enumerate() {
            let _ = writeln!(s, "{:<22}\tall\t{:.4}", m.to_string(), self.mean_at(i));
        }
        s
    }
}
