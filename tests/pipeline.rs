//! The binary through a whole small pipeline: data → train (a few steps) → plot → index → search
//! → zero-shot → eval → filter → index add/delete, checking what each step wrote, and that a
//! damaged index is refused by name.

mod common;

use common::{ok, s, tiny_run, vlp};

#[test]
fn data_train_plot_index_search_zeroshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_run(tmp.path());
    let index = tmp.path().join("index");
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    assert_eq!(std::fs::read_to_string(run.join("train_log.jsonl")).unwrap().lines().count(), 6);

    let built: serde_json::Value = serde_json::from_str(
        ok(&["index", "build", "--checkpoint", s(&run), "--data", s(&data), "--split", "test", "--out", s(&index)]).trim(),
    )
    .unwrap();
    let items = built["items"].as_u64().unwrap();
    assert!(items > 0 && built["skipped"] == 0);
    let check: serde_json::Value = serde_json::from_str(ok(&["index", "check", "--index", s(&index)]).trim()).unwrap();
    assert!(check["text_to_image"]["recall_at_10"].as_f64().unwrap() >= 0.95, "{check}");
    assert!(check["image_to_text"]["recall_at_10"].as_f64().unwrap() >= 0.95, "{check}");

    for mode in ["dense", "bm25", "hybrid"] {
        let out = ok(&["search", "--index", s(&index), "--text", "a large red star", "-k", "5", "--mode", mode, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 5, "{mode}: {out}");
        if mode == "bm25" {
            // BM25 ranks a caption holding all four words first
            assert!(results[0]["caption"].as_str().unwrap().contains("red star"), "{out}");
        }
    }
    let rr = ok(&["search", "--index", s(&index), "--text", "a small blue circle", "-k", "4", "--rerank", "20", "--json"]);
    let rr: serde_json::Value = serde_json::from_str(&rr).unwrap();
    let scores: Vec<f64> = rr["results"].as_array().unwrap().iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.len() == 4 && scores.windows(2).all(|w| w[0] >= w[1]), "{rr}");
    let zh = ok(&["search", "--index", s(&index), "--text", "红色星形", "--mode", "bm25", "--filter", "lang=zh", "-k", "3", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&zh).unwrap()["results"].as_array().unwrap().len(), 3);
    let image = std::fs::read_dir(data.join("images")).unwrap().next().unwrap().unwrap().path();
    let by_image = ok(&["search", "--index", s(&index), "--image", s(&image), "-k", "3", "--json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&by_image).unwrap()["results"].as_array().unwrap().len(), 3);

    // a checkpoint that is not the index's model (as one retrained in place would be) is refused
    // when the index is opened, naming both models, not with every query
    let other = tmp.path().join("other-ckpt");
    let ckpt = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("state.json").is_file()).unwrap();
    std::fs::create_dir(&other).unwrap();
    for f in std::fs::read_dir(&ckpt).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
    }
    let config = std::fs::read_to_string(other.join("config.toml")).unwrap();
    std::fs::write(other.join("config.toml"), format!("{config}\n# retrained\n")).unwrap();
    let (good, _, err) = vlp(&["search", "--index", s(&index), "--checkpoint", s(&other), "--text", "a red star"]);
    assert!(!good && err.contains("was built with the model") && err.contains("is the model"), "{err}");

    // a model that did not learn token embeddings (CLIP's loss alone, as every imported one):
    // its index stores none, re-ranking is refused saying why, and the index still grows
    let clip = tmp.path().join("clip-ckpt");
    std::fs::create_dir(&clip).unwrap();
    for f in std::fs::read_dir(&other).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, clip.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(clip.join("config.toml"), config.replace("token_weight = 0.5", "token_weight = 0.0")).unwrap();
    let clip_index = tmp.path().join("clip-index");
    ok(&["index", "build", "--checkpoint", s(&clip), "--data", s(&data), "--split", "test", "--out", s(&clip_index)]);
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(clip_index.join("index.json")).unwrap()).unwrap();
    assert!(info["image_tokens"].is_null() && !clip_index.join("image_tokens.vec").exists(), "{info}");
    let (good, _, err) = vlp(&["search", "--index", s(&clip_index), "--text", "a small blue circle", "--rerank", "20"]);
    assert!(!good && err.contains("stores no token embeddings") && err.contains("token_weight = 0"), "{err}");
    ok(&["index", "add", "--index", s(&clip_index), "--data", s(&data), "--split", "val"]);
    let (good, _, err) = vlp(&["search", "--index", s(&clip_index), "--text", "a small blue circle", "--rerank", "20"]);
    assert!(!good && err.contains("stores no token embeddings"), "{err}");

    let zs = ok(&["zeroshot", "--checkpoint", s(&run), "--data", s(&data), "--label-field", "main", "--out", s(&tmp.path().join("zs"))]);
    assert!(zs.contains("global, mean embedding") && zs.contains("token-level, mean similarity") && zs.contains("random"), "{zs}");

    // eval: exact search and the index's modes in one table, both directions, with a random row
    let eval_dir = tmp.path().join("eval");
    ok(&[
        "eval",
        "--checkpoint",
        s(&run),
        "--data",
        s(&data),
        "--split",
        "test",
        "--index",
        s(&index),
        "--mode",
        "dense,bm25",
        "--out",
        s(&eval_dir),
    ]);
    let table = std::fs::read_to_string(eval_dir.join("table.md")).unwrap();
    assert!(table.contains("NDCG@5") && table.contains("random embeddings") && table.contains("BM25"), "{table}");

    // filter: every pair is kept or dropped for a reason, and the kept ones come back as a manifest
    let kept = tmp.path().join("kept");
    ok(&["filter", "--checkpoint", s(&run), "--input", s(&data), "--split", "val", "--out", s(&kept), "--dedup", "0.99999"]);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(kept.join("report.json")).unwrap()).unwrap();
    let dropped: u64 = report["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(report["kept"].as_u64().unwrap() + dropped, report["seen"].as_u64().unwrap(), "{report}");
    assert_eq!(std::fs::read_to_string(kept.join("val.jsonl")).unwrap().lines().count() as u64, report["kept"].as_u64().unwrap());

    // add the val split to the index without a rebuild, then delete one of the added items
    let added: serde_json::Value =
        serde_json::from_str(ok(&["index", "add", "--index", s(&index), "--data", s(&data), "--split", "val"]).trim()).unwrap();
    assert_eq!(added["items"].as_u64().unwrap(), items + added["added_items"].as_u64().unwrap());
    let val_id = std::fs::read_to_string(data.join("val.jsonl"))
        .unwrap()
        .lines()
        .next()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .unwrap();
    let val_image = data.join(format!("images/{val_id}.png"));
    let top = |k: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&ok(&[
            "search",
            "--index",
            s(&index),
            "--image",
            s(&val_image),
            "--images",
            "-k",
            k,
            "--exact",
            "--json",
        ]))
        .unwrap();
        v["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    assert!(top("3").contains(&val_id), "an added image finds itself");
    ok(&["index", "delete", "--index", s(&index), &val_id]);
    assert!(!top("50").contains(&val_id), "a deleted item is never returned");
    let check: serde_json::Value = serde_json::from_str(ok(&["index", "check", "--index", s(&index)]).trim()).unwrap();
    assert!(check["text_to_image"]["recall_at_10"].as_f64().unwrap() >= 0.95, "after an addition: {check}");

    // a damaged part is refused with its name, and an interrupted rebuild would not have touched it
    let graph = index.join("images.hnsw");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 3]).unwrap();
    let (good, _, err) = vlp(&["search", "--index", s(&index), "--text", "red", "--mode", "bm25"]);
    assert!(!good && err.contains("images.hnsw"), "{err}");
}
