//! Drives the `vlp` binary as a user does: build the synthetic set, check it, validate it, train a
//! tokenizer on it, and score TREC files in trec_eval's format.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
    let (ok, out, err) = vlp(&[
        "trec-eval",
        q.to_str().unwrap(),
        r.to_str().unwrap(),
        "--compare",
        r.to_str().unwrap(),
        "-m",
        "map",
        "--permutations",
        "200",
    ]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with("map")).unwrap();
    let f: Vec<&str> = row.split('\t').map(str::trim).collect();
    assert_eq!(f[3], "+0.0000");
    assert_eq!(f[4], "1.0000");
}

#[test]
fn trec_eval_pools_several_runs_per_side() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/vlp-eval/tests/trec_cases/random_0");
    let (q, r) = (case.join("qrels.txt"), case.join("run.txt"));
    let (q, r) = (q.to_str().unwrap(), r.to_str().unwrap());
    let (ok, single, err) = vlp(&["trec-eval", q, r, "-m", "map"]);
    assert!(ok, "{err}");
    // the per-query mean of a run with itself is the run
    let (ok, out, err) = vlp(&["trec-eval", q, r, r, "-m", "map"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("# per-query mean of 2 runs"), "{out}");
    assert_eq!(out.lines().nth(1), single.lines().next());
    let (ok, out, err) = vlp(&["trec-eval", q, r, r, "--compare", r, r, r, "-m", "map", "--permutations", "200"]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.starts_with("map")).unwrap();
    let f: Vec<&str> = row.split('\t').map(str::trim).collect();
    assert_eq!((f[3], f[4]), ("+0.0000", "1.0000"));
}

#[test]
fn bad_arguments_give_clear_errors() {
    let (ok, _, err) = vlp(&["trec-eval", "/nonexistent/qrels", "/nonexistent/run"]);
    assert!(!ok && err.contains("/nonexistent/qrels"), "{err}");
    let (ok, _, err) = vlp(&["trec-eval", "x", "y", "-m", "ndcg"]);
    assert!(!ok && err.contains("unknown measure 'ndcg'"), "{err}");
    let (ok, _, err) = vlp(&["data", "validate", "/nonexistent/shards-{00..02}.tar"]);
    assert!(!ok && err.contains("/nonexistent/shards-00.tar"), "{err}");
    // an input that yields no good sample is a failure, with the reason
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("pairs.jsonl");
    std::fs::write(&manifest, "{\"image\": \"missing.png\", \"captions\": [\"a caption\"]}\n").unwrap();
    let (ok, out, err) = vlp(&["data", "validate", manifest.to_str().unwrap()]);
    assert!(!ok && out.contains("0 good sample(s)") && err.contains("no good sample (1 skipped)"), "{out}\n{err}");
}

/// Vectors made elsewhere: built into an index from .npy, searched by vector, benchmarked against
/// a ground truth computed here by brute force; bad vector files refused with the file named.
#[test]
fn an_index_of_vectors_made_elsewhere() {
    use vlp_index::npy;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (distinct, dim) = (400usize, 16usize);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let unique: Vec<f32> = (0..distinct * dim).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    // each vector three times, scaled by 1, 2 and 4 (rows need not be unit length), ids "v<row>"
    let rows = distinct * 3;
    let base: Vec<f32> = (0..rows)
        .flat_map(|r| unique[(r % distinct) * dim..(r % distinct + 1) * dim].iter().map(move |x| x * (1u32 << (r / distinct)) as f32))
        .collect();
    npy::write_f32(Path::new(&p("base.npy")), rows, dim, &base).unwrap();
    std::fs::write(p("ids.txt"), (0..rows).map(|r| format!("v{r}\n")).collect::<String>()).unwrap();
    let out = ok_json(&["index", "build", "--vectors", &p("base.npy"), "--ids", &p("ids.txt"), "--out", &p("idx")]);
    // rows not already of unit length (|norm − 1| > 1e-3) are reported as normalised
    let off_unit = base.chunks(dim).filter(|v| (v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() - 1.0).abs() > 1e-3).count();
    assert!(off_unit > rows / 2);
    assert_eq!(
        (out["items"].as_u64(), out["dim"].as_u64(), out["normalised_rows"].as_u64()),
        (Some(rows as u64), Some(dim as u64), Some(off_unit as u64))
    );

    // queries and their exact top 10 by plain loops over the normalised rows
    let norm = |v: &[f32]| -> Vec<f64> {
        let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        v.iter().map(|x| *x as f64 / n).collect()
    };
    let nq = 50;
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
    let mut gt = Vec::new();
    for q in queries.chunks(dim) {
        let q = norm(q);
        let mut scored: Vec<(f64, usize)> =
            (0..rows).map(|r| (norm(&base[r * dim..(r + 1) * dim]).iter().zip(&q).map(|(a, b)| a * b).sum(), r)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        gt.extend(scored[..10].iter().map(|x| x.1 as i64));
    }
    npy::write_f32(Path::new(&p("q.npy")), nq, dim, &queries).unwrap();
    write_i64_npy(Path::new(&p("gt.npy")), nq, 10, &gt);
    let (good, bench, err) = vlp(&["index", "bench", "--index", &p("idx"), "--queries", &p("q.npy"), "--gt", &p("gt.npy"), "--ef", "64"]);
    assert!(good, "{err}");
    let line: serde_json::Value = serde_json::from_str(bench.lines().last().unwrap()).unwrap();
    assert!(line["recall_at_10"].as_f64().unwrap() >= 0.95, "{bench}");

    // the same vectors stored and searched as f16: half the vector file, the same recall
    let out = ok_json(&["index", "build", "--vectors", &p("base.npy"), "--precision", "f16", "--out", &p("idx16")]);
    assert_eq!(out["precision"], "f16", "{out}");
    let size = |d: &str| std::fs::metadata(Path::new(&p(d)).join("images.vec")).unwrap().len();
    assert!(size("idx") - size("idx16") >= (rows * dim * 2) as u64);
    let (good, bench, err) = vlp(&["index", "bench", "--index", &p("idx16"), "--queries", &p("q.npy"), "--gt", &p("gt.npy"), "--ef", "64"]);
    assert!(good, "{err}");
    let line: serde_json::Value = serde_json::from_str(bench.lines().last().unwrap()).unwrap();
    assert!(line["recall_at_10"].as_f64().unwrap() >= 0.95, "{bench}");
    let (good, _, err) = vlp(&["index", "build", "--vectors", &p("base.npy"), "--precision", "f64", "--out", &p("idx64")]);
    assert!(!good && err.contains("f64"), "{err}");

    // a query vector from a file: the three copies of the nearest vector come first, by row
    let (good, found, err) = vlp(&["search", "--index", &p("idx"), "--vector", &p("q.npy"), "--row", "3", "--json", "-k", "3"]);
    assert!(good, "{err}");
    let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&found).unwrap()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let best = gt[3 * 10] as usize % distinct;
    assert_eq!(ids, (0..3).map(|c| format!("v{}", best + c * distinct)).collect::<Vec<_>>());

    // refusals, each naming its file
    std::fs::write(p("short.txt"), "a\nb\n").unwrap();
    let (good, _, err) = vlp(&["index", "build", "--vectors", &p("base.npy"), "--ids", &p("short.txt"), "--out", &p("bad")]);
    assert!(!good && err.contains("short.txt") && err.contains("2 ids for 1200 rows"), "{err}");
    let mut zero = base.clone();
    zero[5 * dim..6 * dim].iter_mut().for_each(|x| *x = 0.0);
    npy::write_f32(Path::new(&p("zero.npy")), rows, dim, &zero).unwrap();
    let (good, _, err) = vlp(&["index", "build", "--vectors", &p("zero.npy"), "--out", &p("bad")]);
    assert!(!good && err.contains("zero.npy") && err.contains("row 5"), "{err}");
    let (good, _, err) = vlp(&["search", "--index", &p("idx"), "--vector", &p("q.npy"), "--row", "99"]);
    assert!(!good && err.contains("q.npy") && err.contains("50 rows"), "{err}");
    assert!(!Path::new(&p("bad")).exists());
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    let (good, out, err) = vlp(args);
    assert!(good, "vlp {args:?}: {err}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// A `<i8` .npy, as numpy writes ground truth.
fn write_i64_npy(path: &Path, rows: usize, cols: usize, data: &[i64]) {
    let mut header = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}
