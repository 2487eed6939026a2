//! Step-by-step parity with OpenCLIP: vlp starts from OpenCLIP's own initial weights, is fed the
//! batches OpenCLIP trained on, and takes the same steps (its own forward, loss, backward, AdamW,
//! clipping, schedule and temperature clamp); the loss of every step and the weights after the
//! last are compared with OpenCLIP's.
//!
//! The fixture directory is written by `benches/openclip/parity.py` (see its header): the model
//! config, the recipe, `init.safetensors`, `batches.safetensors`, `final.safetensors` and
//! `losses.json`. The same run repeated by OpenCLIP in f64 gives the floor of f32 rounding noise.

use crate::config::TrainConfig;
use crate::optimizer::ClipOptimizer;
use crate::schedule::lr_at;
use crate::{Result, TrainError};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use std::path::{Path, PathBuf};
use vlp_model::openclip::{self, StateDict};
use vlp_model::{DualEncoder, LossConfig, ModelConfig};

/// What `benches/openclip/parity.py` wrote.
pub struct Fixture {
    pub dir: PathBuf,
    pub model: ModelConfig,
    pub train: TrainConfig,
    init: StateDict,
    last: StateDict,
    /// `[steps·batch, 3, size, size]`, normalised.
    images: Vec<f32>,
    /// `[steps·batch, context]`, the end token is the largest id, 0-padded after it.
    ids: Vec<f32>,
    /// OpenCLIP's loss at each step, in f32 and repeated in f64.
    pub openclip: Vec<f64>,
    pub openclip_f64: Vec<f64>,
    pub versions: String,
}

fn fixture_err(path: &Path, message: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("{}: {message}", path.display()))
}

impl Fixture {
    pub fn load(dir: &Path) -> Result<Self> {
        let read_json = |name: &str| -> Result<serde_json::Value> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| fixture_err(&path, e))?;
            serde_json::from_str(&text).map_err(|e| fixture_err(&path, e))
        };
        let config = read_json("config.json")?;
        let losses = read_json("losses.json")?;
        let model = openclip::model_config(&config["model"]).map_err(|e| fixture_err(&dir.join("config.json"), e))?;
        let recipe = &config["recipe"];
        let num = |k: &str| recipe[k].as_f64().ok_or_else(|| fixture_err(&dir.join("config.json"), format!("recipe.{k} is missing")));
        let train = TrainConfig {
            batch_size: num("batch")? as usize,
            steps: num("steps")? as usize,
            lr: num("lr")?,
            warmup_steps: num("warmup")? as usize,
            weight_decay: num("wd")? as f32,
            beta1: num("beta1")? as f32,
            beta2: num("beta2")? as f32,
            eps: num("eps")? as f32,
            grad_clip_norm: num("clip")? as f32,
            checkpoint_every: 1,
            val_every: 0,
            seed: num("seed")? as u64,
            shuffle_buffer: 0,
            lock: None,
            grad_accum: 1,
            precision: Default::default(),
        };
        let series = |k: &str| -> Result<Vec<f64>> {
            losses[k]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .ok_or_else(|| fixture_err(&dir.join("losses.json"), format!("no `{k}` list")))
        };
        let tensors = |name: &str| StateDict::read_safetensors(&dir.join(name)).map_err(|e| TrainError::Other(e.to_string()));
        let batches = tensors("batches.safetensors")?;
        let take = |key: &str| -> Result<Vec<f32>> {
            batches
                .get(key)
                .map(|(_, v)| v.to_vec())
                .ok_or_else(|| fixture_err(&dir.join("batches.safetensors"), format!("no `{key}` tensor")))
        };
        let f = Fixture {
            dir: dir.to_path_buf(),
            init: tensors("init.safetensors")?,
            last: tensors("final.safetensors")?,
            images: take("images")?,
            ids: take("ids")?,
            openclip: series("f32")?,
            openclip_f64: series("f64")?,
            versions: format!("open_clip {}, torch {}", config["open_clip"], config["torch"]),
            model,
            train,
        };
        let n = f.train.steps * f.train.batch_size;
        if f.openclip.len() != f.train.steps || f.ids.len() != n * f.model.text.context_length {
            return Err(fixture_err(dir, "the losses or batches do not match the recipe's steps and batch size"));
        }
        Ok(f)
    }
}

/// One step's losses.
#[derive(Debug, Clone, Copy)]
pub struct StepLosses {
    pub step: usize,
    pub vlp: f64,
    pub openclip: f64,
    pub openclip_f64: f64,
}

#[derive(Debug, Clone)]
pub struct ParityReport {
    pub steps: Vec<StepLosses>,
    /// max over steps of |vlp − OpenCLIP|.
    pub max_loss_gap: f64,
    /// max over steps of |OpenCLIP f32 − OpenCLIP f64|: f32 rounding alone.
    pub noise_floor: f64,
    /// max |vlp − OpenCLIP| over every weight after the last step (only when every step ran),
    /// and the OpenCLIP key where it is.
    pub max_weight_gap: Option<(f64, String)>,
}

/// Runs the first `steps` (default all) steps of the fixture.
pub fn run<B: AutodiffBackend>(fixture: &Fixture, steps: Option<usize>, device: &B::Device) -> Result<ParityReport> {
    let t = &fixture.train;
    let steps = steps.unwrap_or(t.steps).min(t.steps);
    let model = fixture.model.init::<B>(device);
    let mut model = openclip::load_openclip(model, &fixture.init).map_err(|e| TrainError::Other(e.to_string()))?;
    let mut optim = ClipOptimizer::new(&model, t);
    let loss_cfg = LossConfig::default();
    let (b, ctx, size) = (t.batch_size, fixture.model.text.context_length, fixture.model.image_size());
    let pixels = 3 * size * size;
    let mut out = Vec::new();
    for step in 0..steps {
        let rows = step * b..(step + 1) * b;
        let images = fixture.images[rows.start * pixels..rows.end * pixels].to_vec();
        let ids = &fixture.ids[rows.start * ctx..rows.end * ctx];
        // The mask covers each text up to its end token, the largest id of the row.
        let mut mask = vec![0f32; b * ctx];
        for r in 0..b {
            let row = &ids[r * ctx..(r + 1) * ctx];
            let end = (0..ctx).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            mask[r * ctx..r * ctx + end + 1].fill(1.0);
        }
        let images = Tensor::<B, 4>::from_data(TensorData::new(images, [b, 3, size, size]), device);
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.iter().map(|&x| x as i32).collect::<Vec<_>>(), [b, ctx]), device);
        let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [b, ctx]), device);
        let loss = model.loss(images, ids, mask, &loss_cfg).total;
        let value: f32 = loss.clone().into_scalar().elem();
        let lr = lr_at(step, t.lr, t.warmup_steps, t.steps);
        model = match optim.step(lr, model, loss.backward()) {
            Ok((m, _)) => m,
            Err((_, norm)) => return Err(TrainError::Diverged(format!("parity step {}: gradient norm {norm}", step + 1))),
        };
        out.push(StepLosses {
            step: step + 1,
            vlp: value as f64,
            openclip: fixture.openclip[step],
            openclip_f64: fixture.openclip_f64[step],
        });
    }
    let max = |f: &dyn Fn(&StepLosses) -> f64| out.iter().map(f).fold(0.0, f64::max);
    let max_weight_gap = if steps == t.steps { Some(weight_gap(&model, &fixture.last)?) } else { None };
    Ok(ParityReport {
        max_loss_gap: max(&|s| (s.vlp - s.openclip).abs()),
        noise_floor: max(&|s| (s.openclip - s.openclip_f64).abs()),
        steps: out,
        max_weight_gap,
    })
}

/// The largest |vlp − OpenCLIP| over the weights both have, and where.
fn weight_gap<B: Backend>(model: &DualEncoder<B>, state: &StateDict) -> Result<(f64, String)> {
    let ours = openclip::to_state_dict(model).map_err(|e| TrainError::Other(e.to_string()))?;
    let mut worst = (0.0, String::new());
    for key in ours.keys() {
        let (Some((_, a)), Some((_, b))) = (ours.get(key), state.get(key)) else { continue };
        for (x, y) in a.iter().zip(b) {
            let gap = (*x as f64 - *y as f64).abs();
            if gap > worst.0 {
                worst = (gap, key.to_string());
            }
        }
    }
    Ok(worst)
}
