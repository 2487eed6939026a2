//! `vlp import openclip` against OpenCLIP itself: the committed fixture
//! (`tests/fixtures/openclip-tiny`, written by `benches/openclip/import_fixture.py` with
//! open_clip 3.3.0) holds a random-initialised QuickGELU ViT model in f16, four images at its
//! input size, and the embeddings and token ids OpenCLIP gives. The imported run must give the
//! same token ids exactly and the same embeddings within 1e-4 (f32 throughout; what differs is the
//! order of float sums).

mod common;

use common::{ok, vlp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use vlp_data::image_pipeline::{process_into, Augment};
use vlp_embed::checkpoint::Encoder;
use vlp_embed::embed::{rows, text_tensors};

type B = burn::backend::Flex;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclip-tiny")
}

fn bpe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclip-bpe/bpe_simple_vocab_16e6.txt.gz")
}

fn import(config: &Path, out: &Path) -> (bool, String, String) {
    import_from(&fixture(), config, out)
}

fn import_from(f: &Path, config: &Path, out: &Path) -> (bool, String, String) {
    // the by-hand check may read the torch.save copy instead (VLP_OPENCLIP_WEIGHTS=weights.bin)
    let weights = std::env::var("VLP_OPENCLIP_WEIGHTS").unwrap_or_else(|_| "weights.safetensors".into());
    vlp(&[
        "import",
        "openclip",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        f.join(weights).to_str().unwrap(),
        "--bpe",
        bpe().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn max_abs_gap(got: &[f32], want: &Value) -> f32 {
    let want: Vec<f32> =
        want.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32)).collect();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// Imports the fixture in `dir` into `run`, checks token ids exactly and embeddings within
/// `tol`, and returns the largest image and text embedding gaps.
fn check_against_openclip(dir: &Path, run: &Path, tol: f32) -> (f32, f32) {
    let (ok_, out, err) = import_from(dir, &dir.join("config.json"), run);
    assert!(ok_, "{err}");
    assert!(out.contains("imported"), "{out}");
    eprintln!("{}", out.trim());
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let enc = Encoder::<B>::load(run, &Default::default()).unwrap();
    assert_eq!(enc.config.data.resize, vlp_data::image_pipeline::ResizeFilter::Bicubic, "OpenCLIP resizes bicubically");
    check_encoder(&enc, dir, &expected, tol, "OpenCLIP")
}

/// Compares an imported model with the reference library's outputs in a fixture's
/// `expected.json`: every string's token ids exactly (padded with 0 to the context, as both
/// references pad), and the image and caption embeddings within `tol`. The images are at the
/// model's size, so no resize filter is involved. Returns the largest image and text gaps.
fn check_encoder(enc: &Encoder<B>, dir: &Path, expected: &Value, tol: f32, reference: &str) -> (f32, f32) {
    let device = Default::default();
    let strings: Vec<&str> = expected["strings"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let batch = enc.tokenizer.encode_batch(&strings).unwrap();
    assert_eq!(enc.tokenizer.pad_id(), 0);
    for (i, want) in expected["token_ids"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = &batch.ids[i * batch.context..(i + 1) * batch.context];
        assert_eq!(got, &want[..batch.context], "token ids of {:?}", strings[i]);
        assert!(want[batch.context..].iter().all(|&t| t == 0), "{:?} is longer than the batch", strings[i]);
    }

    let cfg = enc.config.image_config();
    let px = (3 * cfg.size * cfg.size) as usize;
    let names = expected["images"].as_array().unwrap();
    let mut pixels = vec![0f32; names.len() * px];
    for (i, name) in names.iter().enumerate() {
        let bytes = std::fs::read(dir.join(name.as_str().unwrap())).unwrap();
        process_into(&bytes, &cfg, Augment::Eval, &mut pixels[i * px..(i + 1) * px]).unwrap();
    }
    let s = cfg.size as usize;
    let images = burn::tensor::Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(pixels, [names.len(), 3, s, s]), &device);
    let image_gap = max_abs_gap(&rows(enc.model.encode_image(images).global), &expected["image_embeddings"]);
    eprintln!("{reference} image embeddings: max abs gap {image_gap:e}");
    assert!(image_gap <= tol, "image embeddings differ from {reference}'s by up to {image_gap}");

    let captions: Vec<&str> = expected["captions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let (ids, mask) = text_tensors::<B>(&enc.tokenizer, &captions, &device).unwrap();
    let text_gap = max_abs_gap(&rows(enc.model.encode_text(ids, mask).global), &expected["text_embeddings"]);
    eprintln!("{reference} text embeddings: max abs gap {text_gap:e}");
    assert!(text_gap <= tol, "text embeddings differ from {reference}'s by up to {text_gap}");
    (image_gap, text_gap)
}

/// The same check at a real model's size, by hand (BENCHMARKS.md): write a fixture with
/// `benches/openclip/import_fixture.py --config ViT-B-32 --dtype f32 --out DIR` (or RN50-quickgelu), then
/// `VLP_OPENCLIP_FIXTURE=DIR cargo test --release --test import -- --ignored` (add
/// `VLP_OPENCLIP_WEIGHTS=weights.bin` to import the fixture's `torch.save` copy).
#[test]
#[ignore]
fn a_real_size_openclip_model_embeds_as_openclip_does() {
    let dir = PathBuf::from(std::env::var("VLP_OPENCLIP_FIXTURE").expect("VLP_OPENCLIP_FIXTURE=DIR written by import_fixture.py"));
    let tmp = tempfile::tempdir().unwrap();
    check_against_openclip(&dir, &tmp.path().join("run"), 1e-4);
}

#[test]
fn an_imported_openclip_model_embeds_and_tokenizes_as_openclip_does() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    check_against_openclip(&fixture(), &run, 1e-4);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let captions: Vec<&str> = expected["captions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let device = Default::default();

    // the fixture tells the activations apart: read with exact GELU, the same weights embed
    // differently by far more than the tolerance
    let gelu = tmp.path().join("gelu.json");
    let mut cfg_json: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    cfg_json["quick_gelu"] = false.into();
    std::fs::write(&gelu, cfg_json.to_string()).unwrap();
    let (ok_, _, err) = import(&gelu, &tmp.path().join("gelu"));
    assert!(ok_, "{err}");
    let other = Encoder::<B>::load(&tmp.path().join("gelu"), &device).unwrap();
    let (ids, mask) = text_tensors::<B>(&other.tokenizer, &captions, &device).unwrap();
    let gap = max_abs_gap(&rows(other.model.encode_text(ids, mask).global), &expected["text_embeddings"]);
    assert!(gap > 1e-3, "exact GELU gives OpenCLIP's QuickGELU embeddings within {gap}: the fixture cannot tell them apart");

    // the run is an ordinary one: it cannot be imported over
    let (ok_, _, err) = import(&fixture().join("config.json"), &run);
    assert!(!ok_ && err.contains("already holds a run"), "{err}");
}

/// OpenCLIP's ModifiedResNet (the RN50 family's image tower): `tests/fixtures/openclip-rn-tiny`
/// (`import_fixture.py --rn`) holds four stages of one block with BatchNorm's weights and running
/// statistics drawn away from their initial values, so the embeddings tell whether every one of
/// them was loaded; the export gives the same tensors back.
#[test]
fn an_imported_openclip_modified_resnet_embeds_as_openclip_does() {
    use vlp_model::openclip::StateDict;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclip-rn-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("export"));
    check_against_openclip(&dir, &run, 1e-4);
    ok(&["export", "openclip", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    // every tensor but BatchNorm's step counters (which no forward pass reads) comes back as it was
    let original = StateDict::read_safetensors(&dir.join("weights.safetensors")).unwrap();
    let exported = StateDict::read_safetensors(&out.join("open_clip_model.safetensors")).unwrap();
    assert_eq!(original.keys().collect::<Vec<_>>(), exported.keys().collect::<Vec<_>>());
    assert!(original.keys().any(|k| k == "visual.layer4.0.downsample.1.running_var"));
    for key in original.keys() {
        assert_eq!(original.get(key), exported.get(key), "{key}");
    }
}

#[test]
fn a_checkpoint_for_another_architecture_is_refused_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    let base: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        edit(&mut v);
        let p = tmp.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    // a wider image tower: the first tensor that differs is named, with both shapes
    let wide = write("wide.json", &|v| v["vision_cfg"]["width"] = 128.into());
    let (ok_, _, err) = import(&wide, &tmp.path().join("a"));
    assert!(!ok_ && err.contains("visual.") && err.contains("expected shape"), "{err}");
    // one text layer fewer: the checkpoint's second text block has no place
    let shallow = write("shallow.json", &|v| v["text_cfg"]["layers"] = 1.into());
    let (ok_, _, err) = import(&shallow, &tmp.path().join("b"));
    assert!(!ok_ && err.contains("transformer.resblocks.1"), "{err}");
    // an option vlp does not build is named, not ignored
    let pooled = write("pooled.json", &|v| v["vision_cfg"]["attentional_pool"] = true.into());
    let (ok_, _, err) = import(&pooled, &tmp.path().join("c"));
    assert!(!ok_ && err.contains("attentional_pool"), "{err}");
    for d in ["a", "b", "c"] {
        assert!(!tmp.path().join(d).join("latest").exists(), "a refused import left a run in {d}");
    }
    let _ = ok;
}

#[test]
fn an_exported_model_is_the_openclip_checkpoint_it_came_from() {
    use vlp_model::openclip::{model_config, StateDict};
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("export"));
    let (ok_, _, err) = import(&fixture().join("config.json"), &run);
    assert!(ok_, "{err}");
    let said = ok(&["export", "openclip", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(said.contains("wrote 62 tensors"), "{said}");
    // every tensor comes back with the values it was imported with (f16 widened to f32 exactly)
    let original = StateDict::read_safetensors(&fixture().join("weights.safetensors")).unwrap();
    let exported = StateDict::read_safetensors(&out.join("open_clip_model.safetensors")).unwrap();
    assert_eq!(original.keys().collect::<Vec<_>>(), exported.keys().collect::<Vec<_>>());
    for key in original.keys() {
        assert_eq!(original.get(key), exported.get(key), "{key}");
    }
    // the config is OpenCLIP's again, and describes the same model
    let written: Value = serde_json::from_str(&std::fs::read_to_string(out.join("open_clip_config.json")).unwrap()).unwrap();
    let source: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
    assert_eq!(model_config(&written["model_cfg"]).unwrap(), model_config(&source).unwrap());
    assert_eq!(written["model_cfg"]["text_cfg"].get("eos_id"), None, "OpenCLIP's end token is its largest id: argmax pooling");
    let (ok_, _, err) = vlp(&["export", "openclip", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok_ && err.contains("already exists"), "{err}");
}

/// `vlp import chinese-clip` against Chinese-CLIP itself: `tests/fixtures/chinese-clip-tiny`,
/// written by `benches/openclip/chinese_clip_fixture.py` with cn_clip 1.6 (a random tiny ViT +
/// BERT model saved as Chinese-CLIP saves training checkpoints, f16), gives the same token ids
/// and embeddings within 1e-4.
#[test]
fn an_imported_chinese_clip_model_embeds_and_tokenizes_as_cn_clip_does() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_cn_clip(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chinese-clip-tiny"), &tmp.path().join("run"));
}

/// The same at Chinese-CLIP's ViT-B-16 + RoBERTa-wwm-ext-base size, by hand (BENCHMARKS.md):
/// `benches/openclip/chinese_clip_fixture.py --real --out DIR`, then
/// `VLP_CHINESE_CLIP_FIXTURE=DIR cargo test --release --test import -- --ignored`.
#[test]
#[ignore]
fn a_real_size_chinese_clip_model_embeds_as_cn_clip_does() {
    let dir =
        PathBuf::from(std::env::var("VLP_CHINESE_CLIP_FIXTURE").expect("VLP_CHINESE_CLIP_FIXTURE=DIR written by chinese_clip_fixture.py"));
    let tmp = tempfile::tempdir().unwrap();
    check_against_cn_clip(&dir, &tmp.path().join("run"));
}

/// Chinese-CLIP's RN50 layout (`vision_layers` a list written as a string):
/// `tests/fixtures/chinese-clip-rn-tiny` (`chinese_clip_fixture.py --rn`).
#[test]
fn an_imported_chinese_clip_modified_resnet_embeds_as_cn_clip_does() {
    let tmp = tempfile::tempdir().unwrap();
    check_against_cn_clip(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chinese-clip-rn-tiny"), &tmp.path().join("run"));
}

fn check_against_cn_clip(dir: &Path, run: &Path) {
    let arg = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let said = ok(&[
        "import",
        "chinese-clip",
        "--vision-config",
        &arg("vision.json"),
        "--text-config",
        &arg("text.json"),
        "--weights",
        &arg("checkpoint.pt"),
        "--vocab",
        &arg("vocab.txt"),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(said.contains("imported"), "{said}");
    eprintln!("{}", said.trim());
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let enc = Encoder::<B>::load(run, &Default::default()).unwrap();
    check_encoder(&enc, dir, &expected, 1e-4, "cn_clip");
}
