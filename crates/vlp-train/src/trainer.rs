//! The training loop: batches from any vlp-data input, the weighted loss, AdamW steps on the
//! schedule, progress, a JSONL log of every step, validation R@k, and checkpoints.

use crate::checkpoint::{self, TrainState};
use crate::config::RunConfig;
use vlp_embed::embed::{embed_images, embed_texts, random_embeddings};
use crate::optimizer::ClipOptimizer;
use vlp_embed::retrieval::{recall, Recall};
use crate::schedule::lr_at;
use crate::{Result, TrainError};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn::module::AutodiffModule;
use vlp_model::momentum::Keys;
use vlp_model::{MomentumState, QueueInputs};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vlp_data::evalset::EvalSet;
use vlp_data::loader::{BatchLoader, LoaderConfig};
use vlp_data::source::{self, ReadOptions};
use vlp_data::text::TextTokenizer;
use vlp_data::SkipLog;

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
            for s in source::open(&job.train, Some("train"), &ReadOptions::default())?.flatten() {
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

struct Log {
    file: std::fs::File,
}

impl Log {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
        Ok(Log { file })
    }
    fn write(&mut self, v: serde_json::Value) {
        let _ = writeln!(self.file, "{v}");
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
    std::fs::create_dir_all(&job.out).map_err(|e| TrainError::Other(format!("{}: {e}", job.out.display())))?;
    // `--resume` on a run that has no checkpoint yet starts it, so one command line can be
    // re-run after an interruption or after it finished (it then has nothing left to do).
    let resume_from = if job.resume { checkpoint::latest(&job.out) } else { None };
    if job.resume && resume_from.is_none() {
        eprintln!("--resume: {} holds no checkpoint yet; starting a new run", job.out.display());
    }
    let (mut model, mut optim, mut momentum, mut state, tokenizer, cfg) = if let Some(dir) = resume_from {
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
        let momentum = (cfg.loss.queue_weight > 0.0)
            .then(|| MomentumState::new(model.valid(), &cfg.loss.momentum, cfg.model.embed_dim, device));
        (model, optim, momentum, TrainState::default(), tokenizer, cfg)
    };
    // A locked tower takes no gradients; the flag is not saved, so it is set again on resume.
    model = crate::optimizer::lock(model, cfg.train.lock);
    let t = &cfg.train;
    let val_set = match &job.val {
        Some(v) => Some(EvalSet::load(v, "val", &ReadOptions::default())?),
        None => None,
    };
    let mut steps_log = Log::open(&job.out.join("train_log.jsonl"))?;
    let mut val_log = Log::open(&job.out.join("val_log.jsonl"))?;
    let image_cfg = cfg.image_config();
    let total = t.steps;
    let stop_at = job.stop_after.unwrap_or(total).min(total);
    let bar = if job.progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}").expect("valid template"),
    );
    bar.set_position(state.step as u64);
    let started = Instant::now();
    let elapsed_before = state.elapsed_secs;
    let mut skipped = SkipLog::new();
    let mut last_loss = f32::NAN;
    let mut last_val = None;
    let mut last_checkpoint = checkpoint::latest(&job.out).unwrap_or_default();
    let mut samples_since = 0u64;
    let mut window = Instant::now();
    let mut samples_per_s = 0.0;
    let mut pending: Option<TrainState> = None;

    let run_val = |model: &vlp_model::DualEncoder<B>, step: usize, val_log: &mut Log, bar: &ProgressBar| -> Result<Option<(Recall, Recall)>> {
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

    'epochs: while state.step < stop_at {
        let stream = source::open(&job.train, Some("train"), &ReadOptions::default())?;
        let loader_cfg = LoaderConfig {
            batch_size: t.batch_size,
            image: image_cfg.clone(),
            train_seed: Some(t.seed),
            epoch: state.epoch,
            drop_last: true,
            prefetch: 4,
            shuffle_buffer: t.shuffle_buffer,
        };
        let mut loader = BatchLoader::new(stream, tokenizer.clone(), loader_cfg);
        let mut batches_this_epoch = 0usize;
        for (i, batch) in loader.by_ref().enumerate() {
            let batch = batch?;
            batches_this_epoch = i + 1;
            if i < state.batch_in_epoch {
                continue; // already trained on before the resume
            }
            let n = batch.len();
            let s = batch.image_size as usize;
            let images = Tensor::<B, 4>::from_data(TensorData::new(batch.images, [n, 3, s, s]), device);
            let ids: Vec<i32> = batch.ids.iter().map(|&x| x as i32).collect();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, batch.context]), device);
            let mask: Vec<f32> = batch.mask.iter().map(|&x| x as f32).collect();
            let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [n, batch.context]), device);
            let (out, keys) = match &momentum {
                None => (model.loss(images, ids, mask, &cfg.loss), None),
                Some(m) => {
                    let keys = m.keys(images.clone().inner(), ids.clone().inner(), mask.clone().inner());
                    let queue = QueueInputs {
                        keys: Keys { image: Tensor::from_inner(keys.image.clone()), text: Tensor::from_inner(keys.text.clone()) },
                        image_queue: m.image_queue.filled(state.queue).map(Tensor::from_inner),
                        text_queue: m.text_queue.filled(state.queue).map(Tensor::from_inner),
                    };
                    (model.loss_with_queue(images, ids, mask, &cfg.loss, queue), Some(keys))
                }
            };
            let loss: f32 = out.total.clone().into_scalar().elem();
            if !loss.is_finite() {
                return Err(diverged(format!("the loss became {loss}"), &state, &bar));
            }
            // A checkpoint is written only once its weights have given a finite loss on the
            // next batch: weights can be finite and still overflow in the forward pass.
            if let Some(at) = pending.take() {
                last_checkpoint = checkpoint::save(&job.out, &model, &optim, momentum.as_ref(), &at, &cfg, &tokenizer)?;
                redraw_curves(&job.out, &bar);
            }
            let lr = lr_at(state.step, t.lr, t.warmup_steps, total);
            let grads = out.total.backward();
            let report = match optim.step(lr, model, grads) {
                Ok((m, report)) => {
                    model = m;
                    report
                }
                Err((_, norm)) => return Err(diverged(format!("the gradient norm became {norm}"), &state, &bar)),
            };
            // BriVL's momentum update, then this batch's keys into the queues.
            if let Some(keys) = keys {
                let m = momentum.take().expect("keys come from the momentum towers");
                let (m, cursor) = m.update(&model.valid(), cfg.loss.momentum.momentum, keys, state.queue);
                momentum = Some(m);
                state.queue = cursor;
            }
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
            let scale: f32 = model.logit_scale.val().into_scalar().elem();
            steps_log.write(json!({
                "step": state.step, "epoch": state.epoch, "loss": loss,
                "global": out.global.map(|g| g.into_scalar().elem::<f32>()),
                "token": out.token.map(|g| g.into_scalar().elem::<f32>()),
                "queue": out.queue.map(|g| g.into_scalar().elem::<f32>()),
                "lr": lr, "logit_scale": scale.exp(), "grad_norm": report.grad_norm,
                "samples_per_s": samples_per_s, "elapsed_s": state.elapsed_secs,
            }));
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {samples_per_s:.0} samples/s"));
            let at_end = state.step == stop_at;
            if t.val_every > 0 && state.step % t.val_every == 0 && !at_end {
                last_val = run_val(&model, state.step, &mut val_log, &bar)?;
            }
            if at_end {
                if !crate::optimizer::all_finite(&model) {
                    state.step -= 1;
                    return Err(diverged("the weights became non-finite".into(), &state, &bar));
                }
                last_checkpoint = checkpoint::save(&job.out, &model, &optim, momentum.as_ref(), &state, &cfg, &tokenizer)?;
            } else if state.step % t.checkpoint_every == 0 {
                pending = Some(state);
            }
            if at_end {
                break 'epochs;
            }
        }
        if state.epoch == 0 || skipped.total() == 0 {
            skipped = loader.skips();
        }
        if batches_this_epoch == 0 {
            return Err(TrainError::Other(format!(
                "{}: fewer than {} good samples, not one full batch ({})",
                job.train,
                t.batch_size,
                loader.skips().summary().trim()
            )));
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    bar.finish_and_clear();
    let final_val = run_val(&model, state.step, &mut val_log, &bar)?.or(last_val);
    redraw_curves(&job.out, &bar);
    Ok(TrainSummary {
        state,
        final_loss: last_loss,
        val: final_val.map(|v| v.0),
        random_baseline: final_val.map(|v| v.1),
        skipped,
        checkpoint: last_checkpoint,
    })
}
