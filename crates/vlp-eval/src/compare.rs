//! Two systems on the same qrels: means, differences and a paired randomization test.
//!
//! The test's noise is the choice of queries: it says whether one trained model beats another on
//! this query set, not whether one *recipe* beats another. Training seeds move the measures more
//! than that: on the emoji test split, OpenCLIP trained with seeds 0 and 2 of one recipe differ
//! on image→text MAP with p = 0.0006 (BENCHMARKS.md, "Seed noise"). To compare recipes, train
//! several seeds of each and compare the per-query means over the seeds ([`pooled`]).

use crate::evaluate::{Evaluation, MissingQueries};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct MeasureComparison {
    pub measure: String,
    pub mean_a: f64,
    pub mean_b: f64,
    /// `mean_b - mean_a`.
    pub difference: f64,
    /// Two-sided p-value of the paired randomization (sign-flip) test.
    pub p_value: f64,
    pub queries: usize,
}

/// Compares two evaluations over the queries both scored (with `-c`, missing ones count as 0).
/// The test flips the sign of each per-query difference at random, `permutations` times, seeded,
/// and counts how often the mean difference is at least as large as the one observed.
pub fn compare(a: &Evaluation, b: &Evaluation, permutations: usize, seed: u64) -> Vec<MeasureComparison> {
    let mut out = Vec::new();
    for (i, m) in a.measures.iter().enumerate() {
        let Some(j) = b.measures.iter().position(|x| x == m) else { continue };
        let (va, vb) = (a.values_at(i), b.values_at(j));
        let diffs: Vec<f64> = va.iter().filter_map(|(q, x)| vb.get(q).map(|y| y - x)).collect();
        let n = diffs.len();
        if n == 0 {
            continue;
        }
        let mean_a = va.iter().filter(|(q, _)| vb.contains_key(*q)).map(|(_, x)| x).sum::<f64>() / n as f64;
        let mean_b = vb.iter().filter(|(q, _)| va.contains_key(*q)).map(|(_, y)| y).sum::<f64>() / n as f64;
        let observed = diffs.iter().sum::<f64>().abs();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut at_least = 0usize;
        for _ in 0..permutations {
            let s: f64 = diffs.iter().map(|d| if rng.gen::<bool>() { *d } else { -*d }).sum();
            // a small tolerance so that exact ties in the sum count as "at least as large"
            if s.abs() >= observed - 1e-12 {
                at_least += 1;
            }
        }
        out.push(MeasureComparison {
            measure: m.to_string(),
            mean_a,
            mean_b,
            difference: mean_b - mean_a,
            p_value: (at_least + 1) as f64 / (permutations + 1) as f64,
            queries: n,
        });
    }
    out
}

/// The per-query mean over several evaluations of one system (runs of one recipe trained with
/// different seeds) on the same qrels and measures. A query counts if every run has it; under
/// [`MissingQueries::Zero`] a run that lacks a query scores it 0. Panics if the evaluations do not
/// share their measures and policy (a caller's mistake, not a data error).
pub fn pooled(evals: &[Evaluation]) -> Evaluation {
    let first = evals.first().expect("pooled needs at least one evaluation");
    for e in evals {
        assert_eq!(e.measures, first.measures, "pooled evaluations must share their measures");
        assert_eq!(e.missing_policy, first.missing_policy, "pooled evaluations must share their missing-query policy");
    }
    let width = first.measures.len();
    let n = evals.len() as f64;
    let mut queries: BTreeMap<&str, ()> = BTreeMap::new();
    for e in evals {
        queries.extend(e.per_query.keys().map(|q| (q.as_str(), ())));
        if first.missing_policy == MissingQueries::Zero {
            queries.extend(e.missing.iter().map(|q| (q.as_str(), ())));
        }
    }
    let mut per_query = BTreeMap::new();
    let mut missing = Vec::new();
    for q in queries.into_keys() {
        let mut sum = vec![0.0; width];
        let mut present = 0;
        for e in evals {
            if let Some(v) = e.per_query.get(q) {
                present += 1;
                for (s, x) in sum.iter_mut().zip(v) {
                    *s += x;
                }
            }
        }
        if present == evals.len() || (first.missing_policy == MissingQueries::Zero && present > 0) {
            per_query.insert(q.to_string(), sum.into_iter().map(|s| s / n).collect());
        } else {
            missing.push(q.to_string());
        }
    }
    Evaluation { measures: first.measures.clone(), per_query, missing, missing_policy: first.missing_policy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Measure;

    fn eval(rows: &[(&str, f64)], missing: &[&str], policy: MissingQueries) -> Evaluation {
        Evaluation {
            measures: vec![Measure::Map],
            per_query: rows.iter().map(|(q, v)| (q.to_string(), vec![*v])).collect(),
            missing: missing.iter().map(|q| q.to_string()).collect(),
            missing_policy: policy,
        }
    }

    #[test]
    fn pooled_averages_per_query_and_drops_queries_a_run_lacks() {
        let a = eval(&[("q1", 0.2), ("q2", 1.0), ("q3", 0.5)], &[], MissingQueries::Skip);
        let b = eval(&[("q1", 0.4), ("q2", 0.0)], &["q3"], MissingQueries::Skip);
        let p = pooled(&[a, b]);
        assert_eq!(p.per_query.len(), 2);
        assert!((p.per_query["q1"][0] - 0.3).abs() < 1e-12);
        assert!((p.per_query["q2"][0] - 0.5).abs() < 1e-12);
        assert_eq!(p.missing, vec!["q3".to_string()]);
    }

    #[test]
    fn pooled_counts_a_missing_query_as_zero_under_complete() {
        let a = eval(&[("q1", 0.6)], &[], MissingQueries::Zero);
        let b = eval(&[], &["q1"], MissingQueries::Zero);
        let p = pooled(&[a, b]);
        assert!((p.per_query["q1"][0] - 0.3).abs() < 1e-12);
        assert!(p.missing.is_empty());
    }

    #[test]
    fn a_system_pooled_with_itself_does_not_differ() {
        let a = eval(&[("q1", 0.2), ("q2", 0.9)], &[], MissingQueries::Skip);
        let p = pooled(&[a.clone(), a.clone()]);
        let c = compare(&a, &p, 100, 0);
        assert_eq!(c[0].difference, 0.0);
        assert_eq!(c[0].p_value, 1.0);
    }
}
