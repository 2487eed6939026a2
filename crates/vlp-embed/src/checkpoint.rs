//! A run directory as every command reads it, and the one way a checkpoint is written.
//!
//! ```text
//! RUN/latest               the name of the newest complete checkpoint (replaced by rename)
//! RUN/ckpt-000500/         model.bin, config.toml, tokenizer.json, state.json, and when
//!                          written by training optim-decay.bin, optim-plain.bin (and with
//!                          BriVL's queue loss momentum.bin)
//! ```
//! A checkpoint is written under `.ckpt-000500.tmp/` and renamed when complete; `latest` is then
//! replaced by rename; older checkpoints are removed only after that. `state.json` is written
//! last: a directory without it is not a checkpoint. Training adds its optimizer state through
//! [`commit`]'s `extra` (`vlp_train::checkpoint::save`); an import writes the model alone
//! ([`save_model`]), which every command that embeds loads and `vlp train --init` starts from.

use crate::config::RunConfig;
use crate::{EmbedError, Result};
use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vlp_data::text::TextTokenizer;
use vlp_model::{DualEncoder, QueueCursor};

/// Where the run stands: enough to continue with the same batches.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: u64,
    /// Batches of `epoch` already used.
    pub batch_in_epoch: usize,
    pub samples_seen: u64,
    /// Training seconds so far, across resumes.
    pub elapsed_secs: f64,
    /// Where BriVL's key queues stand (both move together); zero without them.
    #[serde(default)]
    pub queue: QueueCursor,
    /// The parts the training data was divided into, one per machine: an epoch's batches
    /// depend on it, so a run stopped mid-epoch resumes on as many machines.
    #[serde(default = "one_part")]
    pub data_parts: usize,
}

fn one_part() -> usize {
    1
}

impl Default for TrainState {
    fn default() -> Self {
        TrainState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            samples_seen: 0,
            elapsed_secs: 0.0,
            queue: QueueCursor::default(),
            data_parts: 1,
        }
    }
}

/// The recorder of every checkpoint file: burn's binary format, full precision.
pub fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::new()
}

/// A checkpoint error naming the file or directory.
pub fn ck_err(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Checkpoint { path: path.display().to_string(), message: e.to_string() }
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(run.join("latest")).ok()?;
    let dir = run.join(name.trim());
    dir.join("state.json").is_file().then_some(dir)
}

/// The checkpoint to load: `path` itself if it is one, else the run's latest.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    latest(path).ok_or_else(|| ck_err(path, "no checkpoint here (no 'latest' naming a complete ckpt-* directory)"))
}

/// Writes a checkpoint that holds a model and no optimizer state (an imported model): every
/// command that embeds loads it, and `vlp train --init` starts from it; it cannot be resumed.
pub fn save_model<B: Backend>(
    run: &Path,
    model: &DualEncoder<B>,
    state: &TrainState,
    cfg: &RunConfig,
    tokenizer: &TextTokenizer,
) -> Result<PathBuf> {
    commit(run, model, state, cfg, tokenizer, |_| Ok(()))
}

/// Writes `ckpt-STEP` under a temporary name (model, config, tokenizer, what `extra` adds, and
/// state.json last), renames it into place, points `latest` at it and prunes older ones.
pub fn commit<B: Backend>(
    run: &Path,
    model: &DualEncoder<B>,
    state: &TrainState,
    cfg: &RunConfig,
    tokenizer: &TextTokenizer,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let name = format!("ckpt-{:06}", state.step);
    let dest = run.join(&name);
    let tmp = vlp_atomic::temp_dir(&dest).map_err(|e| ck_err(&dest, e))?;
    model.clone().save_file(tmp.join("model"), &recorder()).map_err(|e| ck_err(&tmp, e))?;
    extra(&tmp)?;
    write(&tmp.join("config.toml"), cfg.to_toml().as_bytes())?;
    write(&tmp.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
    // state.json last: its presence marks a complete checkpoint
    write(&tmp.join("state.json"), serde_json::to_string_pretty(state).expect("serialises").as_bytes())?;
    vlp_atomic::commit(&tmp, &dest).map_err(|e| ck_err(&dest, e))?;
    write_atomic(&run.join("latest"), name.as_bytes())?;
    // Keep the newest two: a reader that picked the previous one a moment ago still finds it.
    let mut old: Vec<PathBuf> = std::fs::read_dir(run)
        .map_err(|e| ck_err(run, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ckpt-")) && *p != dest)
        .collect();
    old.sort();
    let keep_from = old.len().saturating_sub(1);
    for p in &old[..keep_from] {
        let _ = std::fs::remove_dir_all(p);
    }
    Ok(dest)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ck_err(path, e))
}

/// Writes a file all or nothing (`vlp_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    vlp_atomic::write(path, bytes).map_err(|e| ck_err(path, e))
}

/// A checkpoint's config, tokenizer and state, without the weights.
pub fn read_meta(dir: &Path) -> Result<(RunConfig, TextTokenizer, TrainState)> {
    let cfg = RunConfig::load(&dir.join("config.toml"))?;
    let tok_text = std::fs::read_to_string(dir.join("tokenizer.json")).map_err(|e| ck_err(&dir.join("tokenizer.json"), e))?;
    let tokenizer = TextTokenizer::from_json(&tok_text, cfg.model.text.context_length)?;
    let state_path = dir.join("state.json");
    let state_text = std::fs::read_to_string(&state_path).map_err(|e| ck_err(&state_path, e))?;
    let state = serde_json::from_str(&state_text).map_err(|e| ck_err(&state_path, e))?;
    Ok((cfg, tokenizer, state))
}

/// Loads weights into a model built from the checkpoint's own config.
///
/// Older vlp wrote records without the fields added since, which are the last ones of
/// [`DualEncoder`]: `image_token_reduction` (bincode's `None`, one 0 byte, for a model without a
/// reduction) and `arch` (a skipped field, also one 0 byte). burn's bincode record puts the
/// model last, so an old file followed by those missing bytes is the record of the same model
/// today, and it loads: one 0 byte for a checkpoint written between the two fields, two for one
/// written before both.
pub fn load_model<B: Backend>(dir: &Path, cfg: &RunConfig, device: &B::Device) -> Result<DualEncoder<B>> {
    let _guard = vlp_model::init::rng_guard();
    let file = dir.join("model.bin");
    let first = match vlp_model::init::for_loading(|| cfg.model.init::<B>(device)).load_file(dir.join("model"), &recorder(), device) {
        Ok(model) => return Ok(model),
        Err(e) => e,
    };
    let reduces = matches!(&cfg.model.image, vlp_model::ImageTowerConfig::Vit(v) if v.token_reduction.is_some());
    let missing: &[usize] = if reduces { &[1] } else { &[1, 2] };
    let bytes = std::fs::read(&file).map_err(|e| ck_err(&file, e))?;
    for &n in missing {
        let mut patched = bytes.clone();
        patched.extend(std::iter::repeat_n(0u8, n));
        let tmp = tempfile::Builder::new().suffix(".bin").tempfile().map_err(|e| ck_err(&file, e))?;
        std::fs::write(tmp.path(), &patched).map_err(|e| ck_err(&file, e))?;
        if let Ok(model) =
            vlp_model::init::for_loading(|| cfg.model.init::<B>(device)).load_file(tmp.path().with_extension(""), &recorder(), device)
        {
            return Ok(model);
        }
    }
    Err(ck_err(&file, first))
}

/// An encoder ready for inference: the model, its config and its tokenizer.
pub struct Encoder<B: Backend> {
    pub model: DualEncoder<B>,
    pub config: RunConfig,
    pub tokenizer: TextTokenizer,
    pub state: TrainState,
    pub dir: PathBuf,
}

impl<B: Backend> Encoder<B> {
    /// `path`: a run directory (its latest checkpoint) or a checkpoint directory.
    ///
    /// Its weights do not change, so from here on the CPU kernels keep them packed between
    /// batches, up to the model's own size in f32 ([`vlp_model::cpu::pack`]).
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let dir = resolve(path)?;
        let (config, tokenizer, state) = read_meta(&dir)?;
        let model = load_model(&dir, &config, device)?;
        vlp_model::cpu::pack::keep_packed_weights(model.num_params() * std::mem::size_of::<f32>());
        Ok(Encoder { model, config, tokenizer, state, dir })
    }
}

/// What identifies a checkpoint's model: its weights and config, hashed. An index records it,
/// and refuses queries embedded by another model.
pub fn model_identity(dir: &Path) -> Result<String> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| ck_err(&dir.join(name), e));
    let (weights, config) = (read("model.bin")?, read("config.toml")?);
    Ok(vlp_index::checksum::identity(&[&weights, &config]))
}
