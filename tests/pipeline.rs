//! The binary through a whole small pipeline: data → train (a few steps) → plot → index → search
//! → zero-shot, checking what each step wrote, and that a damaged index is refused by name.

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

    let built: serde_json::Value = serde_json::from_str(ok(&["index", "build", "--checkpoint", s(&run), "--data", s(&data), "--split", "test", "--out", s(&index)]).trim()).unwrap();
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

    let zs = ok(&["zeroshot", "--checkpoint", s(&run), "--data", s(&data), "--label-field", "main", "--out", s(&tmp.path().join("zs"))]);
    assert!(zs.contains("global, mean embedding") && zs.contains("token-level, mean similarity") && zs.contains("random"), "{zs}");

    // a damaged part is refused with its name, and an interrupted rebuild would not have touched it
    let graph = index.join("images.hnsw.graph");
    let bytes = std::fs::read(&graph).unwrap();
    std::fs::write(&graph, &bytes[..bytes.len() / 3]).unwrap();
    let (good, _, err) = vlp(&["search", "--index", s(&index), "--text", "red", "--mode", "bm25"]);
    assert!(!good && err.contains("images.hnsw.graph"), "{err}");
}
