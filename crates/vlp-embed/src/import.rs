//! Pretrained models into vlp run directories: an OpenCLIP model-config JSON and its weights
//! become `RUN/ckpt-000000` (config, tokenizer, weights), which every command that embeds loads
//! and `vlp train` can start from.
//!
//! The weights go through [`vlp_model::openclip::load_openclip`], all or nothing: a missing key, a
//! wrong shape or a tensor left over is an error naming the key, and nothing is written. The
//! tokenizer is OpenCLIP's own BPE rebuilt from its merges file, or a `tokenizer.json` the user
//! gives (a Hugging Face CLIP tokenizer).

use crate::checkpoint::{save_model, TrainState};
use crate::config::RunConfig;
use crate::{Result, EmbedError};
use burn::tensor::backend::Backend;
use std::path::{Path, PathBuf};
use vlp_data::text::TextTokenizer;
use vlp_model::openclip::{load_openclip, model_config, StateDict};

/// Where the imported model's tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// OpenCLIP's merges file, `bpe_simple_vocab_16e6.txt.gz` (gzip or plain text).
    OpenClipMerges(PathBuf),
    /// Any `tokenizer.json`.
    TokenizerJson(PathBuf),
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The checkpoint directory (`RUN/ckpt-000000`).
    pub checkpoint: PathBuf,
    pub config: RunConfig,
    pub parameters: usize,
    pub tensors: usize,
}

fn other(path: &Path, e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Other(format!("{}: {e}", path.display()))
}

/// The run config of an imported model: its architecture, and a `[train]` table that is a
/// fine-tuning starting point (OpenCLIP's fine-tuning defaults: AdamW, lr 1e-5, wd 0.1), not a
/// record of how the weights were trained.
fn run_config(model: &vlp_model::ModelConfig, tokenizer_vocab: usize, source: &Path) -> Result<RunConfig> {
    let mut table = toml::Table::new();
    table.insert("model".into(), toml::Value::try_from(model).map_err(|e| other(source, e))?);
    let train: toml::Table = toml::from_str(
        "batch_size = 256\nsteps = 1000\nlr = 1e-5\nweight_decay = 0.1\nwarmup_steps = 100\ncheckpoint_every = 500",
    )
    .expect("a fixed table");
    table.insert("train".into(), toml::Value::Table(train));
    let mut tok = toml::Table::new();
    tok.insert("kind".into(), "bpe".into());
    tok.insert("vocab_size".into(), (tokenizer_vocab as i64).into());
    table.insert("tokenizer".into(), toml::Value::Table(tok));
    // OpenCLIP evaluates with a bicubic resize of the shorter side, then a center crop
    let mut data = toml::Table::new();
    data.insert("resize".into(), "bicubic".into());
    table.insert("data".into(), toml::Value::Table(data));
    Ok(RunConfig::from_toml(&toml::to_string(&table).expect("a table serialises"), &source.display().to_string())?)
}

/// Imports an OpenCLIP model (`config`: its model-config JSON; `weights`: a `.safetensors` or
/// `torch.save` (`.bin`, `.pt`) state dict) into a new run directory `out`. Refuses an `out` that already holds a run.
pub fn import_openclip<B: Backend>(
    config: &Path,
    weights: &Path,
    tokenizer: &TokenizerSource,
    out: &Path,
    device: &B::Device,
) -> Result<Imported> {
    if out.join("latest").exists() {
        return Err(other(out, "already holds a run; import into a new directory"));
    }
    let text = std::fs::read_to_string(config).map_err(|e| other(config, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| other(config, format!("not JSON: {e}")))?;
    let model_cfg = model_config(&json).map_err(|e| other(config, e))?;
    let context = model_cfg.text.context_length;
    let tk = match tokenizer {
        TokenizerSource::OpenClipMerges(p) => TextTokenizer::openclip_bpe(p, context)?,
        TokenizerSource::TokenizerJson(p) => TextTokenizer::from_file(p, context)?,
    };
    if tk.vocab_size() > model_cfg.text.vocab_size {
        let p = match tokenizer {
            TokenizerSource::OpenClipMerges(p) | TokenizerSource::TokenizerJson(p) => p,
        };
        return Err(other(p, format!("{} tokens, more than the model's text_cfg.vocab_size {}", tk.vocab_size(), model_cfg.text.vocab_size)));
    }
    let cfg = run_config(&model_cfg, tk.vocab_size(), config)?;
    let state = StateDict::read(weights).map_err(|e| EmbedError::Other(e.to_string()))?;
    let model = load_openclip(cfg.model.init::<B>(device), &state).map_err(|e| other(weights, e))?;
    std::fs::create_dir_all(out).map_err(|e| other(out, e))?;
    let checkpoint = save_model(out, &model, &TrainState::default(), &cfg, &tk)?;
    use burn::module::Module;
    Ok(Imported { checkpoint, config: cfg, parameters: model.num_params(), tensors: state.keys().count() })
}
