//! The training loop: batches from any vlp-data input, the weighted loss, AdamW steps on the
//! schedule, progress, a JSONL log of every step, validation R@k, and checkpoints; on one
//! device or data-parallel on several (`train_on`, `crate::parallel`).

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use crate::optimizer::ClipOptimizer;
use crate::parallel::{self, NodeSpec, Rank};
use crate::schedule::lr_at;
use crate::step::{self, Replica, Updated, Work};
use crate::{Result, TrainError};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use vlp_data::evalset::EvalSet;
use vlp_data::loader::{BatchLoader, LoaderConfig};
use vlp_data::source::{self, CsvColumns, ReadOptions};
use vlp_data::text::TextTokenizer;
use vlp_data::SkipLog;
use vlp_embed::embed::{embed_images, embed_texts, is_out_of_memory, panic_text, random_embeddings};
use vlp_embed::retrieval::{recall, Recall};
use vlp_model::MomentumState;

/// What `vlp train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub config: RunConfig,
    /// Directory of the config file, for a relative `tokenizer.file`.
    pub config_dir: PathBuf,
    pub train: String,
    pub val: Option<String>,
    pub out: PathBuf,
    pub resume: bool,
    /// Start a new run from this checkpoint's weights and tokenizer (an imported model, or
    /// another run) instead of a fresh initialisation; its model config must be the job's.
    pub init: Option<PathBuf>,
    /// Show a progress bar (off in tests and when stderr is not a terminal).
    pub progress: bool,
    /// Stop (with a checkpoint) after this many steps of the configured schedule, as an
    /// interruption would; `--resume` continues from there.
    pub stop_after: Option<usize>,
    /// Column names and separator of CSV/TSV inputs (training and validation).
    pub csv: CsvColumns,
}

impl TrainJob {
    /// How the job's inputs are read: all of each, CSV by its columns.
    fn read_options(&self) -> ReadOptions {
        ReadOptions { csv: self.csv.clone(), ..ReadOptions::default() }
    }
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub state: TrainState,
    pub final_loss: f32,
    pub val: Option<Recall>,
    pub random_baseline: Option<Recall>,
    pub skipped: SkipLog,
    pub checkpoint: PathBuf,
}

fn tokenizer_for(job: &TrainJob) -> Result<TextTokenizer> {
    let cfg = &job.config;
    let ctx = cfg.model.text.context_length;
    let tk = match &cfg.tokenizer.file {
        Some(f) => TextTokenizer::from_file(&job.config_dir.join(f), ctx)?,
        None => {
            let mut captions = Vec::new();
            for s in source::open(&job.train, Some("train"), &job.read_options())?.flatten() {
                captions.extend(s.captions.into_iter().map(|c| c.text));
            }
            if captions.is_empty() {
                return Err(TrainError::Other(format!("{}: no captions to learn a vocabulary from", job.train)));
            }
            TextTokenizer::train(cfg.tokenizer.kind, cfg.tokenizer.vocab_size, captions.iter(), ctx)?
        }
    };
    if tk.vocab_size() > cfg.model.text.vocab_size {
        return Err(TrainError::Other(format!(
            "model.text.vocab_size: the tokenizer has {} tokens, more than the model's {}",
            tk.vocab_size(),
            cfg.model.text.vocab_size
        )));
    }
    Ok(tk)
}

/// Validation on `set`: the model's R@k and the random-embedding baseline.
pub fn validate<B: AutodiffBackend>(
    model: &vlp_model::DualEncoder<B>,
    tokenizer: &TextTokenizer,
    cfg: &RunConfig,
    set: &EvalSet,
    device: &B::Device,
) -> Result<(Recall, Recall)> {
    let inner = model.valid();
    let (images, _) = embed_images(&inner, &set.images, &cfg.image_config(), 128, device);
    let ids: Vec<String> = set.texts.iter().map(|t| t.id.clone()).collect();
    let texts: Vec<String> = set.texts.iter().map(|t| t.text.clone()).collect();
    let txt = embed_texts(&inner, tokenizer, &ids, &texts, 256, device)?;
    let r = recall(&images, &txt, set);
    let base = recall(&random_embeddings(&images.ids, images.dim, 1), &random_embeddings(&ids, images.dim, 2), set);
    Ok((r, base))
}

/// A JSONL log; the replicas that do not write the job's logs hold one that writes nothing.
struct Log {
    file: Option<std::fs::File>,
}

impl Log {
    fn discard() -> Self {
        Log { file: None }
    }
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(Log { file: Some(file) })
    }
    fn write(&mut self, v: serde_json::Value) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{v}");
        }
    }
}

/// A chart that cannot be drawn is worth a warning, not a stopped run.
fn redraw_curves(run: &Path, bar: &ProgressBar) {
    if let Err(e) = crate::plots::training_curves(run) {
        bar.println(format!("warning: curves.png not drawn: {e}"));
    }
}

/// The backend's random generator is one per process: two runs initialising at once (tests do)
/// would interleave their draws, so seeding and drawing happen under one lock. burn initialises
/// parameters lazily, on first use, so every one is touched here, in a fixed order.
fn seeded_init<B: AutodiffBackend>(cfg: &RunConfig, device: &B::Device) -> vlp_model::DualEncoder<B> {
    let _guard = vlp_model::init::rng_guard();
    B::seed(device, cfg.train.seed);
    let model = cfg.model.init::<B>(device);
    crate::optimizer::all_finite(&model); // reads, and so initialises, every parameter
    model
}

pub fn train<B: AutodiffBackend>(job: &TrainJob, device: &B::Device) -> Result<TrainSummary> {
    train_on::<B>(job, std::slice::from_ref(device), &ParallelOptions::default())
}

/// How a job on several devices of this process runs.
#[derive(Debug, Clone)]
pub struct ParallelOptions {
    /// CPU threads for each device's replica (`None`: the process's shared pool). On CPU
    /// devices, replicas × threads should be the cores.
    pub threads_per_device: Option<usize>,
    /// How long a collective call may wait for the other replicas before the job is stopped.
    pub timeout: std::time::Duration,
    /// This machine's place in a job on several, each with the same devices.
    pub node: Option<NodeSpec>,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        ParallelOptions { threads_per_device: None, timeout: parallel::DEFAULT_TIMEOUT, node: None }
    }
}

/// Where a run starts: its replica, progress, tokenizer and config.
struct Start<B: AutodiffBackend> {
    replica: Replica<B>,
    state: TrainState,
    tokenizer: TextTokenizer,
    cfg: RunConfig,
}

fn start<B: AutodiffBackend>(job: &TrainJob, device: &B::Device) -> Result<Start<B>> {
    std::fs::create_dir_all(&job.out).map_err(|e| TrainError::io(&job.out, e))?;
    // `--resume` on a run that has no checkpoint yet starts it, so one command line can be
    // re-run after an interruption or after it finished (it then has nothing left to do).
    let resume_from = if job.resume { checkpoint::latest(&job.out) } else { None };
    if job.resume && resume_from.is_none() {
        eprintln!("--resume: {} holds no checkpoint yet; starting a new run", job.out.display());
    }
    let (model, optim, momentum, state, tokenizer, cfg) = if let Some(dir) = resume_from {
        let (mut cfg, tokenizer, _) = checkpoint::read_meta(&dir)?;
        if cfg.model != job.config.model || cfg.loss != job.config.loss {
            return Err(TrainError::Other(format!(
                "--resume: the model or loss of {} differs from the config given; resume with the run's own config",
                dir.display()
            )));
        }
        // The training section may change on resume (more steps, another lr); the model may not.
        cfg.train = job.config.train.clone();
        let r = checkpoint::load_for_resume::<B>(&dir, device, &cfg.train)?;
        eprintln!("resuming from {} (step {})", dir.display(), r.state.step);
        (r.model, r.optim, r.momentum, r.state, tokenizer, cfg)
    } else {
        if checkpoint::latest(&job.out).is_some() {
            return Err(TrainError::Other(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                job.out.display()
            )));
        }
        let cfg = job.config.clone();
        let (model, tokenizer) = match &job.init {
            Some(from) => {
                let dir = checkpoint::resolve(from)?;
                let (init_cfg, tokenizer, init_state) = checkpoint::read_meta(&dir)?;
                if init_cfg.model != cfg.model {
                    return Err(TrainError::Other(format!(
                        "--init {}: its model differs from the config's [model]; fine-tuning keeps the architecture (leave out --config to train with the init run's own)",
                        dir.display()
                    )));
                }
                eprintln!("starting from {} (step {})", dir.display(), init_state.step);
                (checkpoint::load_model::<B>(&dir, &cfg, device)?, tokenizer)
            }
            None => (seeded_init::<B>(&cfg, device), tokenizer_for(job)?),
        };
        let optim = ClipOptimizer::new(&model, &cfg.train);
        // BriVL's momentum towers start as copies of the online ones, with empty queues.
        let momentum =
            (cfg.loss.queue_weight > 0.0).then(|| MomentumState::new(model.valid(), &cfg.loss.momentum, cfg.model.embed_dim, device));
        (model, optim, momentum, TrainState::default(), tokenizer, cfg)
    };
    // A locked tower takes no gradients; the flag is not saved, so it is set again on resume.
    let model = crate::optimizer::lock(model, cfg.train.lock);
    Ok(Start { replica: Replica { model, optim, momentum }, state, tokenizer, cfg })
}

/// Trains on `devices` of this process (and, with `opts.node`, the same on every machine of the
/// job), one replica each, data-parallel (`crate::parallel`): `train.batch_size` is the global
/// batch, split among all the replicas, so the same config trains the same model on one device
/// or many. Each process's first replica reads the data (every process the same global
/// batches) and hands them to the others; the job's first replica also logs, validates and
/// writes the checkpoints. A run resumes on any number of devices.
pub fn train_on<B: AutodiffBackend>(job: &TrainJob, devices: &[B::Device], opts: &ParallelOptions) -> Result<TrainSummary> {
    if devices.is_empty() {
        return Err(TrainError::Other("no device to train on".into()));
    }
    let world = devices.len() * opts.node.as_ref().map_or(1, |n| n.nodes);
    if job.config.train.batch_size < 2 * world {
        return Err(TrainError::Other(format!(
            "train.batch_size {} is too small for {world} devices: each needs at least 2 pairs of the global batch",
            job.config.train.batch_size
        )));
    }
    if world == 1 {
        let begin = start::<B>(job, &devices[0])?;
        let cfg = begin.cfg.clone();
        return caught(0, &cfg, 1, || lead(job, begin, &Rank::single(), &devices[0], Vec::new()));
    }
    let mut ranks = parallel::ranks(devices.len(), opts.timeout, opts.node.as_ref())?;
    let begin = start::<B>(job, &devices[0])?;
    let _one_group = parallel::group_lock();
    let pools = match opts.threads_per_device {
        Some(t) => (0..devices.len())
            .map(|r| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .thread_name(move |i| format!("vlp-rank{r}-{i}"))
                    .build()
                    .map(Some)
                    .map_err(|e| TrainError::Other(format!("a thread pool for rank {r}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?,
        None => devices.iter().map(|_| None).collect(),
    };
    let followers = ranks.split_off(1);
    let rank0 = ranks.pop().expect("rank 0");
    let first = rank0.index;
    std::thread::scope(|scope| {
        let mut work = Vec::new();
        let mut handles = Vec::new();
        for (rank, (device, pool)) in followers.into_iter().zip(devices[1..].iter().zip(&pools[1..])) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            work.push(tx);
            let replica = Replica {
                model: begin.replica.model.clone().fork(device),
                optim: begin.replica.optim.clone(),
                momentum: begin.replica.momentum.clone().map(|m| m.fork(device)),
            };
            let cfg = begin.cfg.clone();
            handles.push(scope.spawn(move || {
                in_pool(pool.as_ref(), move || {
                    let out = caught(rank.index, &cfg, rank.world, || step::follow(replica, &cfg, &rank, device, rx));
                    if let Err(e) = &out {
                        rank.fail(&e.to_string());
                    }
                    out
                })
            }));
        }
        let cfg = begin.cfg.clone();
        let led = in_pool(pools[0].as_ref(), move || {
            let out = caught(rank0.index, &cfg, rank0.world, || lead(job, begin, &rank0, &devices[0], work));
            if let Err(e) = &out {
                rank0.fail(&e.to_string());
            }
            out
        });
        for (r, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(Err(e)) if led.is_ok() => return Err(e),
                Ok(_) => {}
                Err(_) => return Err(TrainError::Other(format!("rank {} stopped unexpectedly", first + r + 1))),
            }
        }
        led
    })
    .inspect_err(|_| parallel::reset::<B::InnerBackend>())
}

/// Runs `f` on `pool`'s threads, or on the caller's with the process's shared pool.
fn in_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Runs a replica's loop, turning a panic into an error: a device out of memory into one that
/// names the batch each replica held and what to change, anything else into "rank N panicked".
fn caught<R>(rank: usize, cfg: &RunConfig, world: usize, f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let text = panic_text(p.as_ref());
        let t = &cfg.train;
        Err(TrainError::Other(match is_out_of_memory(&text) {
            true => format!(
                "rank {rank}: the device ran out of memory with {} pairs per replica (train.batch_size {} over {world} replica(s), {} micro-batch(es) each): {}; give --grad-accum N (the loss stays the whole batch's) or a smaller --batch-size",
                t.batch_size / world,
                t.batch_size,
                t.grad_accum,
                text.lines().take(3).collect::<Vec<_>>().join(" / ")
            ),
            false => format!("rank {rank} panicked: {text}"),
        }))
    })
}

/// The first replica's loop: reads the data, hands each global batch to the other replicas
/// (`work`), trains its own slice, and does everything that happens once per job: logs,
/// progress, validation, checkpoints.
fn lead<B: AutodiffBackend>(
    job: &TrainJob,
    begin: Start<B>,
    rank: &Rank,
    device: &B::Device,
    work: Vec<std::sync::mpsc::SyncSender<Work>>,
) -> Result<TrainSummary> {
    let Start { mut replica, mut state, tokenizer, cfg } = begin;
    rank.register::<B::InnerBackend>(device)?;
    let t = &cfg.train;
    // The job's first replica logs, validates and writes the checkpoints.
    let writes = rank.index == 0;
    let val_set = match &job.val {
        Some(v) if writes => Some(EvalSet::load(v, "val", &job.read_options())?),
        _ => None,
    };
    let (mut steps_log, mut val_log) = match writes {
        true => (Log::open(&job.out.join("train_log.jsonl"))?, Log::open(&job.out.join("val_log.jsonl"))?),
        false => (Log::discard(), Log::discard()),
    };
    let image_cfg = cfg.image_config();
    let total = t.steps;
    let stop_at = job.stop_after.unwrap_or(total).min(total);
    let bar = if job.progress && writes { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}").expect("valid template"));
    bar.set_position(state.step as u64);
    let started = Instant::now();
    let elapsed_before = state.elapsed_secs;
    let mut skipped = SkipLog::new();
    let mut last_loss = f32::NAN;
    let mut last_val = None;
    // empty on the replicas that write no checkpoint
    let mut last_checkpoint = if writes { checkpoint::latest(&job.out).unwrap_or_default() } else { PathBuf::new() };
    let mut samples_since = 0u64;
    let mut window = Instant::now();
    let mut samples_per_s = 0.0;
    let mut pending: Option<TrainState> = None;

    let run_val =
        |model: &vlp_model::DualEncoder<B>, step: usize, val_log: &mut Log, bar: &ProgressBar| -> Result<Option<(Recall, Recall)>> {
            let Some(set) = &val_set else { return Ok(None) };
            let (r, base) = validate(model, &tokenizer, &cfg, set, device)?;
            bar.println(format!("step {step}: val {r}\n          random-embedding baseline: {base}"));
            val_log.write(json!({"step": step, "val": r, "random_baseline": base}));
            Ok(Some((r, base)))
        };

    let diverged = |what: String, state: &TrainState, bar: &ProgressBar| {
        bar.abandon();
        let kept = checkpoint::latest(&job.out)
            .map(|p| format!("the last good checkpoint, {}, is kept", p.display()))
            .unwrap_or_else(|| "no checkpoint had been written yet".into());
        TrainError::Diverged(format!(
            "{what} at step {} (lr {:.3e}); stopping without saving: {kept}",
            state.step + 1,
            lr_at(state.step, t.lr, t.warmup_steps, total)
        ))
    };

    let part = rank.data_part();
    if state.batch_in_epoch > 0 && state.data_parts != part.count() {
        return Err(TrainError::Other(format!(
            "--resume: the run stopped in epoch {} after {} batches with its data divided among {} machine(s), and an epoch's batches depend on that; resume on {} machine(s) (a run stopped at an epoch's end resumes on any number)",
            state.epoch, state.batch_in_epoch, state.data_parts, state.data_parts
        )));
    }
    state.data_parts = part.count();
    let read = ReadOptions { part, ..job.read_options() };
    if part.count() > 1 {
        let n = part.count();
        let kind = source::InputKind::detect(&job.train, Some("train"))?;
        let how = match (kind.division(part), &kind) {
            (source::Division::Shards, source::InputKind::WebDataset(shards)) => {
                format!("this one reads shards {}, {}, ... of the {} (one in {n})", part.index(), part.index() + n, shards.len())
            }
            (_, source::InputKind::WebDataset(shards)) => format!(
                "{} shards do not divide among them, so each reads them all and keeps one sample in {n} (with a multiple of {n} shards each reads only its own)",
                shards.len()
            ),
            _ => format!("each opens the images of one sample in {n} of the list, this one from sample {}", part.index()),
        };
        eprintln!("the training data is divided among {n} machines: {how}");
    }
    'epochs: while state.step < stop_at {
        let stream = source::open(&job.train, Some("train"), &read)?;
        let loader_cfg = LoaderConfig {
            batch_size: rank.machine_batch(t.batch_size),
            image: image_cfg.clone(),
            train_seed: Some(t.seed),
            epoch: state.epoch,
            drop_last: true,
            prefetch: 4,
            shuffle_buffer: t.shuffle_buffer,
        };
        let mut loader = BatchLoader::new(stream, tokenizer.clone(), loader_cfg);
        let resumed_at = state.batch_in_epoch;
        let mut steps_this_epoch = 0usize;
        let mut ended_elsewhere = false;
        for (i, batch) in loader.by_ref().enumerate() {
            let batch = batch?;
            if i < resumed_at {
                continue; // already trained on before the resume
            }
            let lr = lr_at(state.step, t.lr, t.warmup_steps, total);
            let batch = Arc::new(batch);
            for (r, w) in work.iter().enumerate() {
                w.send(Work::Step { batch: Arc::clone(&batch), lr, queue: state.queue })
                    .map_err(|_| TrainError::Other(format!("rank {} has stopped", rank.index + r + 1)))?;
            }
            // `None`: another machine's part has run out, and the epoch ends here for all
            let Some(fwd) = replica.forward(&batch, &cfg, state.queue, rank, device)? else {
                ended_elsewhere = true;
                break;
            };
            steps_this_epoch += 1;
            let (loss, n) = (fwd.loss, fwd.pairs);
            if !loss.is_finite() {
                return Err(diverged(format!("the loss became {loss}"), &state, &bar));
            }
            // A checkpoint is written only once its weights have given a finite loss on the
            // next batch: weights can be finite and still overflow in the forward pass.
            if let Some(at) = pending.take().filter(|_| writes) {
                last_checkpoint = save(&job.out, &replica, &at, &cfg, &tokenizer)?;
                redraw_curves(&job.out, &bar);
            }
            let parts =
                [fwd.out.global.clone(), fwd.out.token.clone(), fwd.out.queue.clone()].map(|p| p.map(|g| g.into_scalar().elem::<f32>()));
            let report = match replica.update(fwd, lr, &cfg, state.queue, rank)? {
                Updated::Stepped { replica: r, report, queue } => {
                    replica = r;
                    state.queue = queue;
                    report
                }
                Updated::NonFinite { grad_norm } => return Err(diverged(format!("the gradient norm became {grad_norm}"), &state, &bar)),
            };
            state.step += 1;
            state.batch_in_epoch = i + 1;
            state.samples_seen += n as u64;
            state.elapsed_secs = elapsed_before + started.elapsed().as_secs_f64();
            last_loss = loss;
            samples_since += n as u64;
            if window.elapsed().as_secs_f64() >= 2.0 {
                samples_per_s = samples_since as f64 / window.elapsed().as_secs_f64();
                samples_since = 0;
                window = Instant::now();
            }
            let scale: f32 = replica.model.logit_scale.val().into_scalar().elem();
            let mut line = json!({
                "step": state.step, "epoch": state.epoch, "loss": loss,
                "global": parts[0], "token": parts[1], "queue": parts[2],
                "lr": lr, "logit_scale": scale.exp(), "grad_norm": report.grad_norm,
                "samples_per_s": samples_per_s, "elapsed_s": state.elapsed_secs,
            });
            if rank.world > 1 {
                line["devices"] = json!(rank.world);
                line["collective_s"] = json!(rank.take_collective_secs());
            }
            steps_log.write(line);
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {samples_per_s:.0} samples/s"));
            let at_end = state.step == stop_at;
            if t.val_every > 0 && state.step % t.val_every == 0 && !at_end {
                last_val = run_val(&replica.model, state.step, &mut val_log, &bar)?;
            }
            if at_end {
                if !crate::optimizer::all_finite(&replica.model) {
                    state.step -= 1;
                    return Err(diverged("the weights became non-finite".into(), &state, &bar));
                }
                if writes {
                    last_checkpoint = save(&job.out, &replica, &state, &cfg, &tokenizer)?;
                }
            } else if state.step % t.checkpoint_every == 0 {
                pending = Some(state);
            }
            if at_end {
                break 'epochs;
            }
        }
        if part.count() > 1 && !ended_elsewhere {
            // this machine's part has run out: the others hear it in their next step's exchange
            for w in &work {
                let _ = w.send(Work::EndOfPart);
            }
            rank.end_of_part::<B::InnerBackend>(device)?;
        }
        if state.epoch == 0 || skipped.total() == 0 {
            skipped = loader.skips();
        }
        if steps_this_epoch == 0 && resumed_at == 0 {
            return Err(TrainError::Other(format!(
                "{}: fewer than {} good samples{}, not one full batch ({})",
                job.train,
                rank.machine_batch(t.batch_size),
                if part.count() > 1 { " in a machine's part" } else { "" },
                loader.skips().summary().trim()
            )));
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    bar.finish_and_clear();
    drop(work); // the other replicas leave the group
    let final_val = run_val(&replica.model, state.step, &mut val_log, &bar)?.or(last_val);
    if writes {
        redraw_curves(&job.out, &bar);
    }
    rank.finish::<B::InnerBackend>()?;
    Ok(TrainSummary {
        state,
        final_loss: last_loss,
        val: final_val.map(|v| v.0),
        random_baseline: final_val.map(|v| v.1),
        skipped,
        checkpoint: last_checkpoint,
    })
}

fn save<B: AutodiffBackend>(run: &Path, r: &Replica<B>, state: &TrainState, cfg: &RunConfig, tokenizer: &TextTokenizer) -> Result<PathBuf> {
    checkpoint::save(run, &r.model, &r.optim, r.momentum.as_ref(), state, cfg, tokenizer)
}
