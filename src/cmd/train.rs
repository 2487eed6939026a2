//! `vlp train --config configs/X.toml --train DATA [--val DATA] --out runs/NAME`, or
//! `vlp train --init runs/vit-b-32 [--lock image] --train DATA --out runs/NAME` to fine-tune.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use vlp_train::parallel::NodeSpec;
use vlp_train::trainer::{train_on, ParallelOptions, TrainJob, TrainSummary};
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
    #[command(flatten)]
    pub csv: super::CsvArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
    /// Train data-parallel on several devices of this machine, one replica each:
    /// `cpu:2` (two CPU replicas, the cores shared among them) or `cuda:0,cuda:1` (the cards by
    /// index). train.batch_size is the global batch, split among them.
    #[arg(long, value_name = "DEVICES", conflicts_with = "device")]
    pub devices: Option<String>,
    /// CPU threads for each replica of --devices cpu:N (default: the cores divided among them).
    #[arg(long)]
    pub threads_per_device: Option<usize>,
    /// How long a collective call of a data-parallel job may wait for the other replicas
    /// before the job is stopped, naming the rank (they wait while rank 0 validates and writes
    /// checkpoints).
    #[arg(long, default_value_t = 1800)]
    pub collective_timeout_s: u64,
    /// Train on several machines: how many run this same command (each with the same devices).
    #[arg(long, default_value_t = 1, requires_all = ["node_rank", "coordinator", "node_address"])]
    pub nodes: usize,
    /// This machine's rank among --nodes (0 writes the checkpoints and logs).
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// HOST:PORT of `vlp coordinator`.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// HOST:PORT at which the other machines reach this one (it listens on PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub node_address: Option<String>,
    /// The towers' products in f32 or in bf16 (mixed precision, as OpenCLIP's amp_bf16: f32
    /// weights, optimizer state, norms and losses); overrides train.precision. On the CPU, bf16
    /// is emulated (bf16 inputs, f32 sums) and slower: for checking a recipe before a card.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
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
    /// Encode each replica's slice of the global batch in N micro-batches (gradient caching:
    /// the loss and its gradient stay the whole batch's, the encoders hold one micro-batch's
    /// activations at a time); overrides train.grad_accum.
    #[arg(long, value_name = "N")]
    pub grad_accum: Option<usize>,
    /// Override any config value: `--set loss.token_weight=1 --set model.text.vocab_size=4096`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Port to listen on; every machine's `vlp train --coordinator HOST:PORT` connects to it.
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
}

/// `vlp coordinator --port P`: burn-collective's orchestrator, until stopped (Ctrl-C).
pub fn coordinator(a: CoordinatorArgs) -> Result<()> {
    eprintln!("coordinating data-parallel jobs on port {} (stop with Ctrl-C)", a.port);
    Ok(vlp_train::parallel::run_coordinator(a.port)?)
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

impl From<Precision> for vlp_model::autocast::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => vlp_model::autocast::Precision::F32,
            Precision::Bf16 => vlp_model::autocast::Precision::Bf16,
        }
    }
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
    if let Some(n) = a.grad_accum {
        config.train.grad_accum = n;
    }
    if let Some(p) = a.precision {
        config.train.precision = p.into();
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
        csv: a.csv.columns(),
    };
    if a.val.is_none() {
        eprintln!("no --val given: validation is off (pass --val DATA for R@k during and after training)");
    }
    let (device, replicas) = match &a.devices {
        Some(d) => parse_devices(d)?,
        None => (a.device, vec![0]),
    };
    let opts = ParallelOptions {
        threads_per_device: match (device, replicas.len()) {
            (_, 1) => None,
            (Device::Cpu, n) => Some(a.threads_per_device.unwrap_or_else(|| (cores() / n).max(1))),
            (Device::Cuda, _) => None,
        },
        timeout: std::time::Duration::from_secs(a.collective_timeout_s),
        node: match (a.nodes, a.node_rank, &a.coordinator, &a.node_address) {
            (1, None, None, None) => None,
            (nodes, Some(rank), Some(coordinator), Some(address)) => {
                Some(NodeSpec { nodes, rank, coordinator: coordinator.clone(), address: address.clone() })
            }
            _ => bail!("a job on several machines needs --nodes, --node-rank, --coordinator and --node-address together"),
        },
    };
    let world = replicas.len() * a.nodes;
    if world > 1 {
        eprintln!(
            "data-parallel on {} {} device(s) × {} machine(s): about {} pairs each of the global batch of {}",
            replicas.len(),
            if device == Device::Cpu { "CPU" } else { "CUDA" },
            a.nodes,
            job.config.train.batch_size / world,
            job.config.train.batch_size
        );
    }
    let summary = match device {
        Device::Cpu => {
            let devices = vec![Default::default(); replicas.len()];
            train_on::<burn::backend::Autodiff<burn::backend::Flex>>(&job, &devices, &opts).map_err(anyhow::Error::from)
        }
        Device::Cuda => cuda(&job, &replicas, &opts),
    }
    .with_context(|| format!("training into {}", a.out.display()))?;
    report(&summary);
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `cpu`, `cpu:N` or `cuda:I,cuda:J,...` → the kind and one index per replica.
fn parse_devices(spec: &str) -> Result<(Device, Vec<usize>)> {
    let bad = |why: &str| anyhow::anyhow!("--devices {spec}: {why} (e.g. cpu:2 or cuda:0,cuda:1)");
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    let kind = |p: &str| match p.split(':').next() {
        Some("cpu") => Ok(Device::Cpu),
        Some("cuda") => Ok(Device::Cuda),
        _ => Err(bad(&format!("'{p}' is not cpu or cuda"))),
    };
    let device = kind(parts[0])?;
    if parts.iter().any(|p| kind(p).ok() != Some(device)) {
        return Err(bad("all devices must be of one kind"));
    }
    let number = |p: &str| -> Result<Option<usize>> {
        match p.split_once(':') {
            None => Ok(None),
            Some((_, n)) => n.parse().map(Some).map_err(|_| bad(&format!("'{n}' is not a number"))),
        }
    };
    let replicas: Vec<usize> = match (device, parts.len()) {
        (Device::Cpu, 1) => (0..number(parts[0])?.unwrap_or(1)).collect(),
        (Device::Cpu, _) => return Err(bad("give CPU replicas as cpu:N")),
        (Device::Cuda, _) => parts.iter().map(|p| number(p).map(|n| n.unwrap_or(0))).collect::<Result<_>>()?,
    };
    if replicas.is_empty() {
        return Err(bad("no device"));
    }
    let mut seen = replicas.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != replicas.len() && device == Device::Cuda {
        return Err(bad("a card is named twice"));
    }
    Ok((device, replicas))
}

#[cfg(feature = "cuda")]
fn cuda(job: &TrainJob, cards: &[usize], opts: &ParallelOptions) -> Result<TrainSummary> {
    use burn::backend::{cuda::CudaDevice, Autodiff, Cuda};
    let devices: Vec<CudaDevice> = cards.iter().map(|&i| CudaDevice::new(i)).collect();
    // f32 parameters always; train.precision picks the products' type (vlp_model::autocast)
    train_on::<Autodiff<Cuda<f32>>>(job, &devices, opts).map_err(anyhow::Error::from)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &TrainJob, _: &[usize], _: &ParallelOptions) -> Result<TrainSummary> {
    bail!("this vlp was built without CUDA: rebuild with `cargo build --release --features cuda`")
}

fn report(s: &TrainSummary) {
    if s.final_loss.is_nan() {
        // resumed at the end of its schedule: no step ran in this call
        eprintln!("{} is already trained to step {}; nothing left to do (raise --steps to go on)", s.checkpoint.display(), s.state.step);
    } else {
        eprintln!(
            "trained {} steps ({} samples, {:.0}s, {:.1} samples/s); final loss {:.4}; {}",
            s.state.step,
            s.state.samples_seen,
            s.state.elapsed_secs,
            s.state.samples_seen as f64 / s.state.elapsed_secs.max(1e-9),
            s.final_loss,
            match s.checkpoint.as_os_str().is_empty() {
                true => "the checkpoints are written by node 0".to_string(),
                false => format!("checkpoint {}", s.checkpoint.display()),
            }
        );
    }
    if let (Some(v), Some(b)) = (s.val, s.random_baseline) {
        eprintln!("val:             {v}\nrandom baseline: {b}");
    }
    if s.skipped.total() > 0 {
        eprint!("{}", s.skipped.summary());
    }
}
