//! Per-query measures, defined as in trec_eval's `m_ndcg_cut.c`, `m_map.c`, `m_recip_rank.c`,
//! `m_P.c`, `m_recall.c` and `m_success.c`. A document is relevant when its grade is ≥ 1.

use crate::{EvalError, Result};
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// Mean average precision; divides by every relevant document in the qrels.
    Map,
    /// 1 / rank of the first relevant document.
    RecipRank,
    /// NDCG over the first k: gain = grade, discount log2(rank + 1), ideal from all judged ≥ 1.
    NdcgCut(usize),
    /// Precision at k (divides by k, however short the run).
    P(usize),
    /// Relevant retrieved in the first k / all relevant.
    Recall(usize),
    /// 1 if any relevant document is in the first k (R@k of CLIP papers).
    Success(usize),
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Map => f.write_str("map"),
            Measure::RecipRank => f.write_str("recip_rank"),
            Measure::NdcgCut(k) => write!(f, "ndcg_cut_{k}"),
            Measure::P(k) => write!(f, "P_{k}"),
            Measure::Recall(k) => write!(f, "recall_{k}"),
            Measure::Success(k) => write!(f, "success_{k}"),
        }
    }
}

/// trec_eval's default cutoffs for the measures that take them.
const DEFAULT_CUTOFFS: [usize; 9] = [5, 10, 15, 20, 30, 100, 200, 500, 1000];

/// Parses trec_eval `-m` arguments: `map`, `recip_rank`, `ndcg_cut.5,10,20`, `P.10`,
/// `recall.5,10`, `success.1,5,10`; a bare `ndcg_cut`/`P`/`recall` takes trec_eval's cutoffs.
pub fn parse_measures(specs: &[String]) -> Result<Vec<Measure>> {
    let mut out = Vec::new();
    for spec in specs {
        let (name, cutoffs) = match spec.split_once('.') {
            Some((n, c)) => {
                let ks: Vec<usize> = c
                    .split(',')
                    .map(|k| k.trim().parse().ok().filter(|&k: &usize| k > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| EvalError::UnknownMeasure(spec.clone()))?;
                (n, ks)
            }
            None => (spec.as_str(), DEFAULT_CUTOFFS.to_vec()),
        };
        let make: fn(usize) -> Measure = match name {
            "map" => {
                out.push(Measure::Map);
                continue;
            }
            "recip_rank" => {
                out.push(Measure::RecipRank);
                continue;
            }
            "ndcg_cut" => Measure::NdcgCut,
            "P" => Measure::P,
            "recall" => Measure::Recall,
            "success" => Measure::Success,
            _ => return Err(EvalError::UnknownMeasure(spec.clone())),
        };
        let cutoffs = if name == "success" && !spec.contains('.') { vec![1, 5, 10] } else { cutoffs };
        out.extend(cutoffs.into_iter().map(make));
    }
    out.dedup();
    Ok(out)
}

/// What one query's evaluation needs: the grade of each ranked document (`None` = unjudged),
/// and the judged grades ≥ 1 of the whole qrels, best first (for the ideal DCG and recall).
pub struct QueryJudgements {
    pub ranked_grades: Vec<i32>,
    pub ideal_grades: Vec<i32>,
}

impl QueryJudgements {
    /// `ranked` must already be in trec_eval's order.
    pub fn new<'a>(ranked: impl Iterator<Item = &'a str>, qrels: &HashMap<String, i32>) -> Self {
        let ranked_grades = ranked.map(|d| qrels.get(d).copied().unwrap_or(0)).collect();
        let mut ideal_grades: Vec<i32> = qrels.values().copied().filter(|&g| g >= 1).collect();
        ideal_grades.sort_unstable_by(|a, b| b.cmp(a));
        QueryJudgements { ranked_grades, ideal_grades }
    }

    fn num_rel(&self) -> usize {
        self.ideal_grades.len()
    }

    pub fn value(&self, m: Measure) -> f64 {
        let rel = |g: &i32| *g >= 1;
        match m {
            Measure::Map => {
                if self.num_rel() == 0 {
                    return 0.0;
                }
                let mut found = 0usize;
                let mut sum = 0.0;
                for (i, g) in self.ranked_grades.iter().enumerate() {
                    if rel(g) {
                        found += 1;
                        sum += found as f64 / (i + 1) as f64;
                    }
                }
                sum / self.num_rel() as f64
            }
            Measure::RecipRank => self.ranked_grades.iter().position(rel).map_or(0.0, |i| 1.0 / (i + 1) as f64),
            Measure::NdcgCut(k) => {
                let dcg = |grades: &[i32]| -> f64 {
                    grades.iter().take(k).enumerate().filter(|(_, g)| **g > 0).map(|(i, &g)| g as f64 / ((i + 2) as f64).log2()).sum()
                };
                let ideal = dcg(&self.ideal_grades);
                if ideal > 0.0 {
                    dcg(&self.ranked_grades) / ideal
                } else {
                    0.0
                }
            }
            Measure::P(k) => self.ranked_grades.iter().take(k).filter(|g| rel(g)).count() as f64 / k as f64,
            Measure::Recall(k) => {
                if self.num_rel() == 0 {
                    return 0.0;
                }
                self.ranked_grades.iter().take(k).filter(|g| rel(g)).count() as f64 / self.num_rel() as f64
            }
            Measure::Success(k) => {
                if self.ranked_grades.iter().take(k).any(rel) {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_specs_parse_as_trec_eval_writes_them() {
        let m = parse_measures(&["ndcg_cut.5,10,20".into(), "map".into(), "P.10".into()]).unwrap();
        assert_eq!(m, vec![Measure::NdcgCut(5), Measure::NdcgCut(10), Measure::NdcgCut(20), Measure::Map, Measure::P(10)]);
        assert_eq!(parse_measures(&["recall".into()]).unwrap().len(), 9);
        assert!(parse_measures(&["ndcg".into()]).is_err());
        assert!(parse_measures(&["P.x".into()]).is_err());
        assert_eq!(Measure::NdcgCut(10).to_string(), "ndcg_cut_10");
    }

    #[test]
    fn hand_computed_graded_ndcg() {
        // ranked grades 2, 0, 1; judged {2, 1, 1}: DCG = 2 + 1/log2(4) = 2.5;
        // IDCG = 2 + 1/log2(3) + 1/log2(4)
        let mut q = HashMap::new();
        for (d, g) in [("a", 2), ("b", 0), ("c", 1), ("x", 1)] {
            q.insert(d.to_string(), g);
        }
        let j = QueryJudgements::new(["a", "b", "c"].into_iter(), &q);
        let idcg = 2.0 + 1.0 / 3f64.log2() + 0.5;
        assert!((j.value(Measure::NdcgCut(10)) - 2.5 / idcg).abs() < 1e-12);
        assert!((j.value(Measure::Map) - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(j.value(Measure::Success(1)), 1.0);
        assert_eq!(j.value(Measure::P(5)), 0.4);
    }
}
