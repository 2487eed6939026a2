//! Every case of `tests/trec_cases/` (qrels, run, and the values trec_eval 9 gives for them,
//! made with pytrec_eval) must match to 1e-6, per query and in both means.

use serde_json::Value;
use std::path::{Path, PathBuf};
use vlp_eval::{evaluate, parse_measures, DuplicatePolicy, MissingQueries, Qrels, Run};

const MEASURES: [&str; 8] = ["ndcg_cut_5", "ndcg_cut_10", "ndcg_cut_20", "map", "recip_rank", "recall_5", "recall_10", "P_10"];

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/trec_cases")
}

fn measure_specs() -> Vec<String> {
    ["ndcg_cut.5,10,20", "map", "recip_rank", "recall.5,10", "P.10"].iter().map(|s| s.to_string()).collect()
}

/// Checks one expected.json against a run; returns the number of values compared.
fn check(case: &str, qrels: &Qrels, run: &Run, expected: &Value) -> usize {
    let measures = parse_measures(&measure_specs()).unwrap();
    let names: Vec<String> = measures.iter().map(|m| m.to_string()).collect();
    let mut compared = 0;
    for (policy, all_key, n_key) in [(MissingQueries::Skip, "all", "num_q"), (MissingQueries::Zero, "all_c", "num_q_c")] {
        let ev = evaluate(qrels, run, &measures, policy);
        for name in MEASURES {
            let i = names.iter().position(|n| n == name).unwrap();
            let want = &expected[name];
            assert_eq!(ev.num_queries() as u64, want[n_key].as_u64().unwrap(), "{case} {name} {n_key}");
            let got = ev.mean_at(i);
            let w = want[all_key].as_f64().unwrap();
            assert!((got - w).abs() < 1e-6, "{case} {name} {all_key}: got {got}, trec_eval {w}");
            let per_q = want["per_query"].as_object().unwrap();
            assert_eq!(per_q.len(), ev.per_query.len(), "{case} {name}: evaluated queries differ");
            for (qid, w) in per_q {
                let got = ev.per_query.get(qid).unwrap_or_else(|| panic!("{case}: query {qid} not evaluated"))[i];
                let w = w.as_f64().unwrap();
                assert!((got - w).abs() < 1e-6, "{case} {name} {qid}: got {got}, trec_eval {w}");
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn every_reference_case_matches_trec_eval() {
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(cases_dir().join("cases.json")).unwrap()).unwrap();
    let mut n_cases = 0;
    let mut n_values = 0;
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = cases_dir().join(name);
        let qrels = Qrels::read(&dir.join("qrels.txt")).unwrap();
        let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        if let Some(err) = expected.get("error") {
            // trec_eval refuses the run; so do we, by default, naming the line.
            let e = Run::read(&dir.join("run.txt"), DuplicatePolicy::Error).unwrap_err().to_string();
            assert!(e.contains("duplicate run entry q1 a"), "{name}: {e} (trec_eval: {err})");
            for (policy, file) in [
                (DuplicatePolicy::First, "expected_dup_first.json"),
                (DuplicatePolicy::Last, "expected_dup_last.json"),
                (DuplicatePolicy::Max, "expected_dup_max.json"),
            ] {
                let run = Run::read(&dir.join("run.txt"), policy).unwrap();
                let exp: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
                n_values += check(&format!("{name}/{file}"), &qrels, &run, &exp);
            }
        } else {
            let run = Run::read(&dir.join("run.txt"), DuplicatePolicy::Error).unwrap();
            n_values += check(name, &qrels, &run, &expected);
        }
        n_cases += 1;
    }
    assert_eq!(n_cases, 16, "all reference cases are present");
    assert!(n_values > 1000, "compared only {n_values} values");
}
