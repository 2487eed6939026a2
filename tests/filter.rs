//! `vlp filter` through the binary, on a tiny trained model: the report's arithmetic, each
//! output format read back by vlp's own readers, an interrupted run resumed to the same result,
//! and the refusals (an occupied --out, changed settings on resume, writing over the input).

mod common;

use common::{ok, s, tiny_run, vlp};
use serde_json::Value;
use std::path::Path;

fn report(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

/// `(key, json)` of every sample in a shard.
fn shard_samples(path: &Path) -> Vec<(String, Value)> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".json") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            out.push((key.to_string(), serde_json::from_slice(&bytes).unwrap()));
        }
    }
    out
}

#[test]
fn filter_reports_writes_each_format_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_run(tmp.path());

    // ground truth: a fifth of the captions swapped, in shards of 10
    let shards = tmp.path().join("corrupt");
    let said = ok(&[
        "data",
        "corrupt",
        s(&data),
        "--split",
        "test",
        "--out",
        s(&shards),
        "--fraction",
        "0.2",
        "--lang",
        "en",
        "--per-shard",
        "10",
    ]);
    assert!(said.contains("with swapped captions"), "{said}");
    // and a cut-off shard, whose lost sample is counted
    let mut names: Vec<_> = std::fs::read_dir(&shards).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let bytes = std::fs::read(&names[0]).unwrap();
    std::fs::write(shards.join("corrupt-999999.tar"), &bytes[..bytes.len() / 2 + 100]).unwrap();
    // and an empty shard, as img2dataset writes for a shard with no success
    tar::Builder::new(std::fs::File::create(shards.join("corrupt-999998.tar")).unwrap()).finish().unwrap();
    let n_shards = names.len() + 2;

    // a dry run first, to place the threshold among this barely trained model's scores
    let probe = tmp.path().join("probe");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&shards), "--out", s(&probe), "--dry-run"]);
    let probed = report(&probe);
    assert!(probed["outputs"].as_array().unwrap().is_empty(), "{probed}");
    let threshold = probed["score"]["quantiles"]["p25"].as_f64().unwrap();
    let min_score = format!("{threshold}");

    let out = tmp.path().join("kept");
    let args = [
        "filter",
        "--checkpoint",
        s(&run),
        "--input",
        s(&shards),
        "--out",
        s(&out),
        "--min-score",
        &min_score,
        "--dedup",
        "0.9999",
        "--truth-field",
        "corrupted",
    ];
    let printed = ok(&args);
    let r = report(&out);
    let seen = r["seen"].as_u64().unwrap();
    let kept = r["kept"].as_u64().unwrap();
    let dropped: u64 = r["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(kept + dropped, seen, "{r}");
    assert!(r["dropped"]["shard_truncated"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["parts"], n_shards as u64);
    assert!(r["truth"]["bad_pairs"].as_u64().unwrap() > 0 && !r["truth"]["sweep"].as_array().unwrap().is_empty(), "{r}");
    assert!(printed.contains("precision") && printed.contains("pairs/s"), "{printed}");
    for png in ["scores.png", "detection.png"] {
        assert_eq!(&std::fs::read(out.join(png)).unwrap()[..4], b"\x89PNG");
    }
    // every input shard has an output shard of its name, empty or not (a brace range over the
    // input's names reads the output), and every kept sample is in one, with its score at or
    // above the threshold
    assert!(shard_samples(&out.join("corrupt-999998.tar")).is_empty());
    let mut written = shard_samples(&out.join("corrupt-999999.tar")).len() as u64;
    for name in &names {
        let path = out.join(name.file_name().unwrap());
        assert!(path.is_file(), "no output shard {}", path.display());
        for (_, json) in shard_samples(&path) {
            assert!(json["similarity"].as_f64().unwrap() >= threshold - 1e-6, "{json}");
            assert!(json.get("corrupted").is_some(), "the input's metadata is carried: {json}");
            written += 1;
        }
    }
    assert_eq!(written, kept);
    // what a curator reads back is a valid input
    let back: Value = serde_json::from_str(&ok(&["data", "validate", s(&out), "--json"])).unwrap();
    assert_eq!(back["good"].as_u64().unwrap(), kept, "{back}");

    // an occupied --out is refused without --resume; a resumed run with other settings too
    let (good, _, err) = vlp(&args);
    assert!(!good && err.contains("--resume"), "{err}");
    let mut other = args.to_vec();
    other[8] = "0.99";
    other.push("--resume");
    let (good, _, err) = vlp(&other);
    assert!(!good && err.contains("other settings"), "{err}");

    // interrupted in the second part: its statistics never written, its shard gone
    let second = out.join(names[1].file_name().unwrap());
    let before = std::fs::read(&second).ok();
    std::fs::remove_file(out.join(".vlp-filter/part-000001.json")).unwrap();
    let _ = std::fs::remove_file(&second);
    let mut resume = args.to_vec();
    resume.push("--resume");
    ok(&resume);
    let again = report(&out);
    assert_eq!(again["parts_resumed"], (n_shards - 1) as u64);
    for field in ["seen", "kept", "dropped", "truth"] {
        assert_eq!(again[field], r[field], "{field}");
    }
    assert_eq!(std::fs::read(&second).ok(), before, "the redone part writes the same shard");

    // every pair dropped (a cosine is at most 1): the shards are still all written, empty
    let none = tmp.path().join("none");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&shards), "--out", s(&none), "--min-score", "1.5"]);
    assert_eq!(report(&none)["kept"], 0);
    for name in names.iter().map(|n| n.file_name().unwrap().to_owned()).chain(["corrupt-999998.tar".into(), "corrupt-999999.tar".into()]) {
        assert!(shard_samples(&none.join(&name)).is_empty(), "{name:?}");
    }

    // the input is never written over
    let (good, _, err) = vlp(&["filter", "--checkpoint", s(&run), "--input", s(&shards), "--out", s(&shards)]);
    assert!(!good && err.contains("never writes over its input"), "{err}");
}

#[test]
fn manifests_and_tables_come_back_in_their_own_format() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_run(tmp.path());

    // a built data set (JSONL manifest): only Chinese captions kept, in parts of 7 rows
    let out = tmp.path().join("zh");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&data), "--split", "test", "--out", s(&out), "--lang", "zh", "--part-rows", "7"]);
    let r = report(&out);
    let lines = std::fs::read_to_string(out.join("test.jsonl")).unwrap();
    assert_eq!(lines.lines().count() as u64, r["kept"].as_u64().unwrap());
    assert!(r["parts"].as_u64().unwrap() > 1);
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(Path::new(v["image"].as_str().unwrap()).is_absolute(), "{v}");
        assert!(v["similarity"].is_number());
        for c in v["captions"].as_array().unwrap() {
            assert!(c["lang"].as_str().unwrap().starts_with("zh"), "{c}");
        }
    }
    let back: Value = serde_json::from_str(&ok(&["data", "validate", s(&out.join("test.jsonl")), "--json"])).unwrap();
    assert_eq!(back["good"], r["kept"]);

    // a CSV table: same columns plus `similarity`; a dry run writes only the report
    let table = tmp.path().join("pairs.csv");
    let mut csv = String::from("filepath,title,source\n");
    for line in std::fs::read_to_string(data.join("test.jsonl")).unwrap().lines().take(12) {
        let v: Value = serde_json::from_str(line).unwrap();
        let caption = v["captions"][0]["text"].as_str().unwrap().replace('"', "");
        csv.push_str(&format!("{},\"{caption}\",synthetic\n", data.join(v["image"].as_str().unwrap()).display()));
    }
    csv.push_str("missing.png,a lost image,synthetic\n");
    std::fs::write(&table, csv).unwrap();
    let dry = tmp.path().join("dry");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&table), "--out", s(&dry), "--dry-run"]);
    assert!(!dry.join("pairs.csv").exists());
    assert_eq!(report(&dry)["dropped"]["image_file_missing"], 1);
    let out = tmp.path().join("csv");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&table), "--out", s(&out), "--min-side", "8"]);
    let written = std::fs::read_to_string(out.join("pairs.csv")).unwrap();
    let mut rows = written.lines();
    assert_eq!(rows.next(), Some("filepath,title,source,similarity"));
    assert_eq!(rows.count(), 12);
    let back: Value = serde_json::from_str(&ok(&["data", "validate", s(&out.join("pairs.csv")), "--json"])).unwrap();
    assert_eq!(back["good"], 12);
    // --min-side above the images' 16 px drops them all as too small
    let small = tmp.path().join("small");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&table), "--out", s(&small), "--min-side", "17", "--dry-run"]);
    assert_eq!(report(&small)["dropped"]["too_small"], 12);
    // nothing readable is a failure, with the reason, and the report still written
    let lost = tmp.path().join("lost.csv");
    std::fs::write(&lost, "filepath,title\nnowhere-1.png,a lost image\nnowhere-2.png,another\n").unwrap();
    let none = tmp.path().join("none");
    let (ok_, _, err) = vlp(&["filter", "--checkpoint", s(&run), "--input", s(&lost), "--out", s(&none)]);
    assert!(!ok_ && err.contains("no pair could be read") && err.contains("lost.csv"), "{err}");
    assert_eq!(report(&none)["dropped"]["image_file_missing"], 2);
}
