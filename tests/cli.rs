//! Drives the `vlp` binary as a user does: build the synthetic set, check it, validate it, train a
//! tokenizer on it, and score TREC files in trec_eval's format.

use std::path::Path;
use std::process::Command;

fn vlp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vlp")).args(args).output().expect("run vlp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn synthetic_build_is_complete_deterministic_and_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    for dir in [&a, &b] {
        let (ok, _, err) = vlp(&["data", "build", "synthetic", "--out", dir.to_str().unwrap(), "--images", "300", "--size", "32"]);
        assert!(ok, "{err}");
    }
    // deterministic by seed: same manifests, qrels and pixels
    for f in ["train.jsonl", "val.texts.jsonl", "test.t2i.qrels", "val.i2t.qrels", "images/syn000123.png"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    // every query has a grade-2 item and every id resolves (checked independently of the builder)
    let checks = vlp_data::dataset::check(&vlp_data::dataset::DatasetDir::new(&a)).unwrap();
    assert_eq!(checks.len(), 3);
    for c in &checks {
        assert!(c.is_ok(), "{c:?}");
        assert!(c.images > 0 && c.texts > 0);
    }
    // a Chinese and an English caption per image, each a distinct text with grade 2 to its image
    let texts = std::fs::read_to_string(a.join("val.texts.jsonl")).unwrap();
    assert!(texts.contains("\"lang\":\"zh\"") && texts.contains("\"lang\":\"en\""));

    let (ok, out, err) = vlp(&["data", "validate", a.to_str().unwrap(), "--split", "train", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["good"].as_u64().unwrap() as usize, checks.iter().find(|c| c.split == "train").unwrap().images);

    let (ok, out, err) = vlp(&["data", "stats", a.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["splits"]["val"]["grades_per_query"]["t2i"]["mean_grade2"].as_f64().unwrap() >= 1.0);

    let tok = tmp.path().join("tok.json");
    let (ok, _, err) = vlp(&["tokenizer", "train", "--data", a.to_str().unwrap(), "--out", tok.to_str().unwrap(), "--vocab-size", "300"]);
    assert!(ok, "{err}");
    let (ok, out, err) = vlp(&["tokenizer", "encode", "--tokenizer", tok.to_str().unwrap(), "一个小的红色圆形"]);
    assert!(ok, "{err}");
    assert!(out.contains("decoded: 一个小的红色圆形"), "{out}");
}

#[test]
fn trec_eval_output_has_trec_eval_format_and_values() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/vlp-eval/tests/trec_cases/qrels_query_absent_from_run");
    let (q, r) = (case.join("qrels.txt"), case.join("run.txt"));
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
    for (flag, key) in [(None, "all"), (Some("-c"), "all_c")] {
        let mut args = vec!["trec-eval", q.to_str().unwrap(), r.to_str().unwrap(), "-m", "ndcg_cut.10", "-m", "map", "-q"];
        args.extend(flag);
        let (ok, out, err) = vlp(&args);
        assert!(ok, "{err}");
        assert!(err.contains("2 of 3 qrels queries are not in"), "{err}");
        let mut seen_all = 0;
        for line in out.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 3, "{line:?}");
            assert_eq!(f[0].len(), 22, "measure padded to 22 columns as trec_eval does: {line:?}");
            let value: f64 = f[2].parse().unwrap();
            assert_eq!(f[2].split('.').nth(1).unwrap().len(), 4);
            let name = f[0].trim();
            let want = if f[1] == "all" {
                seen_all += 1;
                expected[name][key].as_f64().unwrap()
            } else {
                expected[name]["per_query"][f[1]].as_f64().unwrap()
            };
            assert!((value - want).abs() < 5e-5, "{line}: want {want}");
        }
        assert_eq!(seen_all, 2);
    }
}

#[test]
fn trec_eval_compare_reports_difference_and_p_value() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/vlp-eval/tests/trec_cases/random_0");
    let (q, r) = (case.join("qrels.txt"), case.join("run.txt"));
    // a run compared with itself: no difference, p = 1
    let (ok, out, err) = vlp(&["trec-eval", q.to_str().unwrap(), r.to_str().unwrap(), "--compare", r.to_str().unwrap(), "-m", "map", "--permutations", "200"]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with("map")).unwrap();
    let f: Vec<&str> = row.split('\t').map(str::trim).collect();
    assert_eq!(f[3], "+0.0000");
    assert_eq!(f[4], "1.0000");
}

#[test]
fn bad_arguments_give_clear_errors() {
    let (ok, _, err) = vlp(&["trec-eval", "/nonexistent/qrels", "/nonexistent/run"]);
    assert!(!ok && err.contains("/nonexistent/qrels"), "{err}");
    let (ok, _, err) = vlp(&["trec-eval", "x", "y", "-m", "ndcg"]);
    assert!(!ok && err.contains("unknown measure 'ndcg'"), "{err}");
    let (ok, _, err) = vlp(&["data", "validate", "/nonexistent/shards-{00..02}.tar"]);
    assert!(!ok && err.contains("/nonexistent/shards-00.tar"), "{err}");
}
