//! Helpers shared by the tests that drive the `vlp` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `vlp`: success, stdout, stderr.
pub fn vlp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vlp")).args(args).output().expect("run vlp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `vlp` and returns its stdout; fails the test with its stderr if it fails.
pub fn ok(args: &[&str]) -> String {
    let (ok, out, err) = vlp(args);
    assert!(ok, "vlp {args:?} failed: {err}");
    out
}

/// A tiny model: 16 px ViT, 16-wide towers, both losses; trains in seconds.
pub const CONFIG: &str = r#"
[model]
embed_dim = 16
token_dim = 8
[model.image]
kind = "vit"
image_size = 16
patch_size = 8
width = 16
layers = 1
heads = 2
[model.text]
context_length = 16
vocab_size = 256
width = 16
layers = 1
heads = 2
causal = true
pool = "eos"
[loss]
global_weight = 1.0
token_weight = 0.5
[train]
batch_size = 16
steps = 6
lr = 1e-3
warmup_steps = 2
checkpoint_every = 3
val_every = 3
seed = 1
[tokenizer]
kind = "wordpiece"
vocab_size = 256
"#;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds 200 synthetic 16 px images into `dir/data` and trains [`CONFIG`] on them into `dir/run`.
pub fn tiny_run(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, run, config) = (dir.join("data"), dir.join("run"), dir.join("tiny.toml"));
    std::fs::write(&config, CONFIG).unwrap();
    ok(&["data", "build", "synthetic", "--out", s(&data), "--images", "200", "--size", "16"]);
    ok(&["train", "--config", s(&config), "--train", s(&data), "--val", s(&data), "--out", s(&run)]);
    (data, run)
}
