//! What the trainer's tests share: a tiny model, a tiny generated data set, a job, and a run's
//! weights by name.
#![allow(dead_code)] // each test binary uses its own part

use burn::backend::Flex;
use burn::tensor::Tensor;
use std::path::Path;
use vlp_data::synthetic::{build, SyntheticConfig};
use vlp_train::checkpoint::Encoder;
use vlp_train::trainer::TrainJob;
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

