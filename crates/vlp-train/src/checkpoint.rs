//! Training's part of a checkpoint: the optimizer state (and BriVL's momentum towers and queues)
//! beside the model, and loading all of it to resume exactly. The directory layout, the atomic
//! write and the reading are `vlp_embed::checkpoint`'s, re-exported here.

pub use vlp_embed::checkpoint::*;

use crate::config::RunConfig;
use crate::optimizer::ClipOptimizer;
use crate::{Result, TrainError};
use burn::module::Module;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};
use vlp_data::text::TextTokenizer;
use vlp_model::{DualEncoder, MomentumState};

/// Writes a checkpoint atomically and makes it the latest.
pub fn save<B: AutodiffBackend>(
    run: &Path,
    model: &DualEncoder<B>,
    optim: &ClipOptimizer<B>,
    momentum: Option<&MomentumState<B::InnerBackend>>,
    state: &TrainState,
    cfg: &RunConfig,
    tokenizer: &TextTokenizer,
) -> Result<PathBuf> {
    Ok(commit(run, model, state, cfg, tokenizer, |tmp| {
        let (decayed, plain) = optim.to_records();
        Recorder::<B>::record(&recorder(), decayed, tmp.join("optim-decay")).map_err(|e| ck_err(tmp, e))?;
        Recorder::<B>::record(&recorder(), plain, tmp.join("optim-plain")).map_err(|e| ck_err(tmp, e))?;
        if let Some(m) = momentum {
            m.clone().save_file(tmp.join("momentum"), &recorder()).map_err(|e| ck_err(tmp, e))?;
        }
        Ok(())
    })?)
}

/// Loads everything a resumed run needs. The optimizer is built on the loaded model, whose
/// parameter ids are the saved ones its state refers to. The momentum towers and queues come
/// back when the run's loss uses them.
pub fn load_for_resume<B: AutodiffBackend>(dir: &Path, device: &B::Device, train: &crate::config::TrainConfig) -> Result<Resumed<B>> {
    let (cfg, _, state) = read_meta(dir)?;
    if !dir.join("optim-decay.bin").is_file() {
        return Err(TrainError::Other(format!(
            "{}: a model without optimizer state (written by `vlp import`) cannot be resumed; start a run from it with --init",
            dir.display()
        )));
    }
    let model = load_model::<B>(dir, &cfg, device)?;
    let optim = ClipOptimizer::new(&model, train);
    let decayed = Recorder::<B>::load(&recorder(), dir.join("optim-decay"), device).map_err(|e| ck_err(&dir.join("optim-decay.bin"), e))?;
    let plain = Recorder::<B>::load(&recorder(), dir.join("optim-plain"), device).map_err(|e| ck_err(&dir.join("optim-plain.bin"), e))?;
    let momentum = if cfg.loss.queue_weight > 0.0 {
        let path = dir.join("momentum");
        let _guard = vlp_model::init::rng_guard();
        let template =
            vlp_model::init::for_loading(|| MomentumState::new(cfg.model.init(device), &cfg.loss.momentum, cfg.model.embed_dim, device));
        Some(template.load_file(path, &recorder(), device).map_err(|e| ck_err(&dir.join("momentum.bin"), e))?)
    } else {
        None
    };
    Ok(Resumed { model, optim: optim.load_records(decayed, plain), momentum, state })
}

/// What [`load_for_resume`] gives back.
pub struct Resumed<B: AutodiffBackend> {
    pub model: DualEncoder<B>,
    pub optim: ClipOptimizer<B>,
    pub momentum: Option<MomentumState<B::InnerBackend>>,
    pub state: TrainState,
}
