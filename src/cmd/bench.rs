//! `vlp bench decode | train | embed | parity | serve`: the work that BENCHMARKS.md times beside its peers.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use vlp_data::image_pipeline::{process_into, Augment, ImageConfig};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Decode + resize + center crop + normalise every image file of a directory (recursively),
    /// in parallel; prints images/s. The peer is `benches/decode_pillow.py`.
    Decode {
        dir: PathBuf,
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Passes over the files (after one untimed pass that warms the page cache).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Training steps of a config's model on random images and token ids (both towers forward,
    /// the configured loss, backward, AdamW): what `benches/peers/openclip_bench.py` times.
    /// Prints median step time, samples/s and peak memory.
    Train {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        batch: Option<usize>,
        /// Timed steps; the first two are warm-up and not counted.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[arg(long, value_enum, default_value = "cpu")]
        device: super::train::Device,
        /// The towers' products' type (default: the config's train.precision).
        #[arg(long, value_enum)]
        precision: Option<super::train::Precision>,
    },
    /// Embedding throughput of a run's model (an imported OpenCLIP model, say): images from
    /// ready `[batch, 3, size, size]` tensors (decoding is `bench decode`), texts from strings
    /// (tokenizing included). Prints images/s and texts/s; the peer is
    /// `benches/openclip/embed_bench.py` on the same weights.
    Embed {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed batches of each kind, after one untimed warm-up batch.
        #[arg(long, default_value_t = 8)]
        batches: usize,
        #[arg(long, value_enum, default_value = "cpu")]
        device: super::train::Device,
    },
    /// Step-by-step parity with OpenCLIP: start from the initial weights in a fixture written by
    /// `benches/openclip/parity.py`, train on its batches, and compare every step's loss and the
    /// final weights with OpenCLIP's. Prints a table and a RESULT line.
    Parity {
        #[arg(long)]
        fixture: PathBuf,
        /// Run only the first N steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Also write the per-step losses here (JSON).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Load-test a running `vlp serve`: N clients of text searches (optionally mixed with
    /// malformed requests) for a fixed time; queries/s, p50/p99, errors, server memory.
    Serve(super::load::LoadArgs),
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.command {
        BenchCommand::Serve(a) => super::load::run(a),
        BenchCommand::Parity { fixture, steps, json } => parity(&fixture, steps, json.as_deref()),
        BenchCommand::Decode { dir, size, repeat, threads } => decode(&dir, size, repeat, threads),
        BenchCommand::Embed { checkpoint, batch, batches, device } => match device {
            super::train::Device::Cpu => embed::<burn::backend::Flex>(&checkpoint, batch, batches, &Default::default()),
            #[cfg(feature = "cuda")]
            super::train::Device::Cuda => embed::<burn::backend::Cuda<f32>>(&checkpoint, batch, batches, &Default::default()),
            #[cfg(not(feature = "cuda"))]
            super::train::Device::Cuda => bail!("--device cuda: this vlp was built without the `cuda` feature"),
        },
        BenchCommand::Train { config, batch, steps, device, precision } => match device {
            super::train::Device::Cpu => {
                train_steps::<burn::backend::Autodiff<burn::backend::Flex>>(&config, batch, steps, precision, &Default::default())
            }
            #[cfg(feature = "cuda")]
            super::train::Device::Cuda => {
                train_steps::<burn::backend::Autodiff<burn::backend::Cuda<f32>>>(&config, batch, steps, precision, &Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            super::train::Device::Cuda => bail!("--device cuda: this vlp was built without the `cuda` feature"),
        },
    }
}

/// The captions `bench embed` encodes on both sides: CLIP prompt-like texts of 8–14 words.
pub fn bench_captions(n: usize) -> Vec<String> {
    const THINGS: [&str; 8] =
        ["dog", "red bicycle", "bowl of noodles", "mountain lake", "street market", "old clock", "paper lantern", "sailing boat"];
    (0..n)
        .map(|i| format!("a photo of a {} seen from the {} side, picture number {i}", THINGS[i % THINGS.len()], ["left", "right"][i % 2]))
        .collect()
}

/// Embedding throughput on `B`; every timed batch is read back to the host, as an index build
/// reads it.
fn embed<B: burn::tensor::backend::Backend>(checkpoint: &std::path::Path, batch: usize, batches: usize, device: &B::Device) -> Result<()> {
    use vlp_embed::checkpoint::Encoder;
    use vlp_embed::embed::text_tensors;
    let device = device.clone();
    let enc = Encoder::<B>::load(checkpoint, &device).with_context(|| format!("loading {}", checkpoint.display()))?;
    let s = enc.config.model.image_size();
    let images = burn::tensor::Tensor::<B, 4>::random([batch, 3, s, s], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let captions = bench_captions(batch * (batches + 1));
    let time = |f: &mut dyn FnMut(usize)| {
        f(0);
        let started = Instant::now();
        for i in 1..=batches {
            f(i);
        }
        started.elapsed().as_secs_f64()
    };
    let image_secs = time(&mut |_| {
        let _ = vlp_embed::embed::rows(enc.model.embed_image(images.clone()));
    });
    let mut failed = None;
    let text_secs = time(&mut |i| {
        let refs: Vec<&str> = captions[i * batch..(i + 1) * batch].iter().map(String::as_str).collect();
        match text_tensors::<B>(&enc.tokenizer, &refs, &device) {
            Ok((ids, mask)) => {
                let _ = vlp_embed::embed::rows(enc.model.embed_text(ids, mask));
            }
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        bail!("tokenizing the benchmark captions: {e}");
    }
    let n = (batch * batches) as f64;
    println!(
        "RESULT images_per_s={:.1} texts_per_s={:.1} batch={batch} batches={batches} image_size={s} threads={} backend={} packed_weights_kept_mb={:.0}",
        n / image_secs,
        n / text_secs,
        rayon::current_num_threads(),
        B::name(&device),
        vlp_model::cpu::pack::kept_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn parity(dir: &std::path::Path, steps: Option<usize>, json: Option<&std::path::Path>) -> Result<()> {
    use vlp_train::parity::{run, Fixture};
    let fixture = Fixture::load(dir)?;
    let started = Instant::now();
    let report = run::<burn::backend::Autodiff<burn::backend::Flex>>(&fixture, steps, &Default::default())?;
    println!("fixture {} ({}), {} steps of batch {}", dir.display(), fixture.versions, report.steps.len(), fixture.train.batch_size);
    println!("{:>5} {:>10} {:>10} {:>10} {:>10}", "step", "vlp", "openclip", "|gap|", "f32-f64");
    for s in &report.steps {
        let show = s.step <= 5 || s.step % 10 == 0 || s.step == report.steps.len();
        if show {
            println!(
                "{:>5} {:>10.6} {:>10.6} {:>10.2e} {:>10.2e}",
                s.step,
                s.vlp,
                s.openclip,
                (s.vlp - s.openclip).abs(),
                (s.openclip - s.openclip_f64).abs()
            );
        }
    }
    let weights = match &report.max_weight_gap {
        Some((gap, key)) => format!(" max_weight_gap={gap:.2e} ({key})"),
        None => String::new(),
    };
    println!(
        "RESULT steps={} max_loss_gap={:.2e} openclip_f32_vs_f64={:.2e}{weights} seconds={:.1}",
        report.steps.len(),
        report.max_loss_gap,
        report.noise_floor,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = json {
        let rows: Vec<_> = report
            .steps
            .iter()
            .map(|s| serde_json::json!({"step": s.step, "vlp": s.vlp, "openclip": s.openclip, "openclip_f64": s.openclip_f64}))
            .collect();
        vlp_atomic::write(path, serde_json::to_string_pretty(&rows)?.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn image_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if vlp_data::source::image_format_of_ext(p.extension().and_then(|x| x.to_str()).unwrap_or("")).is_some() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn decode(dir: &std::path::Path, size: u32, repeat: usize, threads: Option<usize>) -> Result<()> {
    let files = image_files(dir)?;
    if files.is_empty() {
        bail!("{}: no .jpg/.jpeg/.png/.webp files", dir.display());
    }
    let bytes: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let cfg = ImageConfig { size, ..Default::default() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    let pass = || -> usize {
        pool.install(|| {
            bytes
                .par_iter()
                .map_init(|| vec![0f32; (3 * size * size) as usize], |buf, b| process_into(b, &cfg, Augment::Eval, buf).is_ok() as usize)
                .sum()
        })
    };
    let ok = pass();
    let started = Instant::now();
    for _ in 0..repeat {
        pass();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = files.len() * repeat;
    println!(
        "{{\"files\": {}, \"decoded\": {ok}, \"size\": {size}, \"threads\": {}, \"seconds\": {secs:.3}, \"images_per_s\": {:.1}}}",
        files.len(),
        pool.current_num_threads(),
        n as f64 / secs
    );
    Ok(())
}

/// Peak resident memory of this process so far, from the kernel (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// This process's resident memory now (VmRSS), MiB.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn train_steps<B: burn::tensor::backend::AutodiffBackend>(
    config: &std::path::Path,
    batch: Option<usize>,
    steps: usize,
    precision: Option<super::train::Precision>,
    device: &B::Device,
) -> Result<()> {
    use burn::tensor::{Distribution, Int, Tensor};
    let cfg = vlp_train::RunConfig::load(config)?;
    let precision = precision.map_or(cfg.train.precision, Into::into);
    let n = batch.unwrap_or(cfg.train.batch_size);
    let (size, ctx, vocab) = (cfg.model.image_size(), cfg.model.text.context_length, cfg.model.text.vocab_size);
    B::seed(device, 0);
    let mut model = cfg.model.init::<B>(device);
    let mut optim = vlp_train::optimizer::ClipOptimizer::new(&model, &cfg.train);
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps.max(3) {
        let t0 = Instant::now();
        let images = Tensor::<B, 4>::random([n, 3, size, size], Distribution::Normal(0.0, 1.0), device);
        let ids = Tensor::<B, 2, Int>::random([n, ctx], Distribution::Uniform(1.0, (vocab - 1) as f64), device);
        let mask = Tensor::<B, 2>::ones([n, ctx], device);
        let loss = {
            let _precision = vlp_model::autocast::scope(precision);
            model.loss(images, ids, mask, &cfg.loss).total
        };
        let grads = loss.backward();
        model = match optim.step(1e-4, model, grads) {
            Ok((m, _)) => m,
            Err((_, norm)) => bail!("gradient norm {norm} on random inputs"),
        };
        // reading one weight waits for the step to finish on an asynchronous device
        let _ = model.logit_scale.val().into_data();
        times.push(t0.elapsed().as_secs_f64());
    }
    let mut warm = times[2..].to_vec();
    warm.sort_by(f64::total_cmp);
    let median = warm[warm.len() / 2];
    println!(
        "RESULT peer=vlp config={} batch={n} precision={precision:?} loss=global{} median_step_ms={:.1} samples_per_s={:.1} peak_rss_mb={:.0}",
        config.display(),
        if cfg.loss.token_weight > 0.0 { "+token" } else { "" },
        median * 1e3,
        n as f64 / median,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
