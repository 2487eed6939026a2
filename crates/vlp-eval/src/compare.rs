//! Two systems on the same qrels: means, differences and a paired randomization test.

use crate::evaluate::Evaluation;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

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
