//! `vlp train --config configs/X.toml --train DATA [--val DATA] --out runs/NAME`, or
//! `vlp train --init runs/vit-b-32 [--lock image] --train DATA --out runs/NAME` to fine-tune.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use vlp_train::trainer::{train, TrainJob, TrainSummary};
use vlp_train::RunConfig;

#[derive(Args)]
pub struct TrainArgs {
    /// The run's config. With --init it may be left out: the init run's own config is used.
    #[arg(long, required_unless_present = "init")]
    pub config: Option<PathBuf>,
    /// Fine-tune: start from this run's (or checkpoint's) weights and tokenizer, e.g. one made by
    /// `vlp import openclip`.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Keep a tower as it is (LiT: `--lock image`); overrides train.lock.
    #[arg(long, value_enum)]
    pub lock: Option<LockArg>,
    /// Training data: shards, a manifest, a CSV/TSV table, or a built data set (its train split).
    #[arg(long)]
    pub train: String,
    /// Validation data: a built data set (its val split and qrels) or any input (captions paired
    /// with their images).
    #[arg(long)]
    pub val: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: Precision,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override train.steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Stop with a checkpoint after this many steps of the schedule (continue with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Override train.batch_size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override any config value: `--set loss.token_weight=1 --set model.text.vocab_size=4096`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockArg {
    Image,
    Text,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
}

pub fn run(a: TrainArgs) -> Result<()> {
    let config_path = match (&a.config, &a.init) {
        (Some(c), _) => c.clone(),
        (None, Some(init)) => vlp_train::checkpoint::resolve(init)?.join("config.toml"),
        (None, None) => bail!("give --config (or --init RUN to fine-tune with that run's config)"),
    };
    let mut config = RunConfig::load_with(&config_path, &a.set)?;
    if let Some(l) = a.lock {
        config.train.lock = Some(match l {
            LockArg::Image => vlp_train::config::Tower::Image,
            LockArg::Text => vlp_train::config::Tower::Text,
        });
    }
    if let Some(s) = a.steps {
        config.train.steps = s;
    }
    if let Some(b) = a.batch_size {
        config.train.batch_size = b;
    }
    config.validate()?;
    let job = TrainJob {
        config,
        config_dir: config_path.parent().map(PathBuf::from).unwrap_or_default(),
        train: a.train.clone(),
        val: a.val.clone(),
        out: a.out.clone(),
        resume: a.resume,
        init: a.init.clone(),
        progress: std::io::stderr().is_terminal(),
        stop_after: a.stop_after,
    };
    if a.val.is_none() {
        eprintln!("no --val given: validation is off (pass --val DATA for R@k during and after training)");
    }
    let summary = match (a.device, a.precision) {
        (Device::Cpu, Precision::F32) => {
            train::<burn::backend::Autodiff<burn::backend::Flex>>(&job, &Default::default()).map_err(anyhow::Error::from)
        }
        (Device::Cpu, Precision::Bf16) => bail!("--precision bf16 needs --device cuda (the CPU backend trains in f32)"),
        (Device::Cuda, p) => cuda(&job, p),
    }
    .with_context(|| format!("training into {}", a.out.display()))?;
    report(&summary);
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda(job: &TrainJob, p: Precision) -> Result<TrainSummary> {
    use burn::backend::{cuda::CudaDevice, Autodiff, Cuda};
    let device = CudaDevice::default();
    match p {
        Precision::F32 => train::<Autodiff<Cuda<f32>>>(job, &device),
        Precision::Bf16 => train::<Autodiff<Cuda<burn::tensor::bf16>>>(job, &device),
    }
    .map_err(anyhow::Error::from)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &TrainJob, _: Precision) -> Result<TrainSummary> {
    bail!("this vlp was built without CUDA: rebuild with `cargo build --release --features cuda`")
}

fn report(s: &TrainSummary) {
    if s.final_loss.is_nan() {
        // resumed at the end of its schedule: no step ran in this call
        eprintln!("{} is already trained to step {}; nothing left to do (raise --steps to go on)", s.checkpoint.display(), s.state.step);
    } else {
        eprintln!(
            "trained {} steps ({} samples, {:.0}s, {:.1} samples/s); final loss {:.4}; checkpoint {}",
            s.state.step,
            s.state.samples_seen,
            s.state.elapsed_secs,
            s.state.samples_seen as f64 / s.state.elapsed_secs.max(1e-9),
            s.final_loss,
            s.checkpoint.display()
        );
    }
    if let (Some(v), Some(b)) = (s.val, s.random_baseline) {
        eprintln!("val:             {v}\nrandom baseline: {b}");
    }
    if s.skipped.total() > 0 {
        eprint!("{}", s.skipped.summary());
    }
}
