//! What the trainer's tests share: a tiny model, a tiny generated data set, a job, and a run's
//! weights by name.
#![allow(dead_code)] // each test binary uses its own part

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use std::path::Path;
use vlp_data::synthetic::{build, SyntheticConfig};
use vlp_train::checkpoint::Encoder;
use vlp_train::trainer::{train_on, ParallelOptions, TrainJob, TrainSummary};
use vlp_train::RunConfig;

pub const CONFIG: &str = r#"
[model]
embed_dim = 16
[model.image]
kind = "vit"
image_size = 16
patch_size = 8
width = 16
layers = 1
heads = 2
[model.text]
context_length = 16
vocab_size = 200
width = 16
layers = 1
heads = 2
causal = false
pool = "cls"
[loss]
global_weight = 1.0
token_weight = 0.5
[train]
batch_size = 8
steps = 6
lr = 1e-3
warmup_steps = 2
checkpoint_every = 3
seed = 7
shuffle_buffer = 100
[tokenizer]
kind = "wordpiece"
vocab_size = 200
"#;

pub type B = Autodiff<Flex>;

pub fn data(dir: &Path) -> String {
    build(&SyntheticConfig { images: 40, size: 16, ..Default::default() }, dir).unwrap();
    dir.display().to_string()
}

pub fn job(cfg: &RunConfig, train_data: &str, out: &Path, resume: bool) -> TrainJob {
    TrainJob {
        config: cfg.clone(),
        config_dir: ".".into(),
        train: train_data.to_string(),
        val: Some(train_data.to_string()),
        out: out.to_path_buf(),
        resume,
        init: None,
        progress: false,
        stop_after: None,
        csv: Default::default(),
    }
}

/// Every parameter of a run's latest checkpoint by path.
pub fn parameters(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Collect {
        path: Vec<String>,
        out: std::collections::BTreeMap<String, Vec<f32>>,
    }
    impl ModuleVisitor<Flex> for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<Flex, D>>) {
            self.out.insert(self.path.join("."), p.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let enc = Encoder::<Flex>::load(run, &Default::default()).unwrap();
    let mut c = Collect { path: Vec::new(), out: Default::default() };
    enc.model.visit(&mut c);
    c.out
}

/// Trains `job` on two CPU devices of this process, one thread each.
pub fn on_two_devices(job: &TrainJob) -> vlp_train::Result<TrainSummary> {
    let opts = ParallelOptions { threads_per_device: Some(1), ..Default::default() };
    train_on::<B>(job, &[Default::default(), Default::default()], &opts)
}

/// Each step's log line: (loss, gradient norm, devices).
pub fn steps(run: &Path) -> Vec<(f64, f64, u64)> {
    std::fs::read_to_string(run.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap(), v["devices"].as_u64().unwrap_or(1))
        })
        .collect()
}

/// Asserts that run `b` took the steps of run `a`: every step's loss and gradient norm, and the
/// weights at the end. (Adam's step does not change when one parameter's gradient is scaled, so
/// the weights alone would not show a temperature's gradient counted twice; the norm, which
/// clipping uses, does.) The tolerance, 1e-5 relative, is float rounding: the runs add the same
/// gradient terms in another order (one matrix product over the batch, or parts summed).
pub fn assert_same_training(a: &Path, b: &Path, what: &str) {
    let (sa, sb) = (steps(a), steps(b));
    assert_eq!(sa.len(), sb.len(), "{what}: steps logged");
    for (step, (x, y)) in sa.iter().zip(&sb).enumerate() {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0.abs().max(1.0), "step {}: loss {} against {} with {what}", step + 1, x.0, y.0);
        assert!((x.1 - y.1).abs() <= 1e-5 * x.1.abs().max(1.0), "step {}: gradient norm {} against {} with {what}", step + 1, x.1, y.1);
    }
    let (pa, pb) = (parameters(a), parameters(b));
    assert_eq!(pa.keys().collect::<Vec<_>>(), pb.keys().collect::<Vec<_>>());
    let mut worst = (0f32, String::new());
    for (name, x) in &pa {
        for (u, v) in x.iter().zip(&pb[name]) {
            if (u - v).abs() > worst.0 {
                worst = ((u - v).abs(), name.clone());
            }
        }
    }
    eprintln!("{what}: largest weight difference after {} steps: {:e} ({})", sa.len(), worst.0, worst.1);
    assert!(worst.0 <= 1e-5, "{what}: weights differ by {} in {} after {} steps", worst.0, worst.1, sa.len());
}
