//! Reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009): an item's fused score is the sum
//! over the lists of `1 / (k + rank)`, rank from 1. Scores of different systems are not on one
//! scale, so only ranks are used.

use std::collections::HashMap;

/// The usual constant; it damps the weight of the very top ranks.
pub const RRF_K: f64 = 60.0;

/// Fuses ranked lists of ids (best first). Ties by id ascending, so the output is stable.
pub fn reciprocal_rank_fusion(lists: &[Vec<String>], k: f64) -> Vec<(String, f64)> {
    let mut scores: HashMap<&str, f64> = HashMap::new();
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            *scores.entry(id).or_default() += 1.0 / (k + rank as f64 + 1.0);
        }
    }
    let mut out: Vec<(String, f64)> = scores.into_iter().map(|(id, s)| (id.to_string(), s)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula_by_hand() {
        let a = vec!["x".to_string(), "y".into(), "z".into()];
        let b = vec!["y".to_string(), "w".into()];
        let f = reciprocal_rank_fusion(&[a, b], 60.0);
        // y: 1/62 + 1/61; x: 1/61; w: 1/62; z: 1/63
        assert_eq!(f.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["y", "x", "w", "z"]);
        assert!((f[0].1 - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
    }
}
