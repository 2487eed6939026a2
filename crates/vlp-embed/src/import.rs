//! Pretrained models into vlp run directories: an OpenCLIP or Chinese-CLIP model config and its
//! weights become `RUN/ckpt-000000` (config, tokenizer, weights), which every command that embeds
//! loads and `vlp train --init` starts from.
//!
//! The weights go through [`vlp_model::openclip::load_openclip`], all or nothing: a missing key, a
//! wrong shape or a tensor left over is an error naming the key, and nothing is written. The
//! tokenizer is OpenCLIP's own BPE rebuilt from its merges file, or a `tokenizer.json` the user
//! gives (a Hugging Face CLIP tokenizer).

use crate::checkpoint::{save_model, TrainState};
use crate::config::RunConfig;
use crate::{EmbedError, Result};
use burn::tensor::backend::Backend;
use std::path::{Path, PathBuf};
use vlp_data::text::TextTokenizer;
use vlp_model::openclip::{load_openclip, model_config, StateDict};
use vlp_model::{chinese_clip, ModelConfig};

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

/// The run config of an imported model: its architecture, and a `[train]` table that is a
/// fine-tuning starting point (OpenCLIP's fine-tuning defaults: AdamW, lr 1e-5, wd 0.1), not a
/// record of how the weights were trained.
fn run_config(model: &ModelConfig, tokenizer_kind: &str, tokenizer_vocab: usize, source: &Path) -> Result<RunConfig> {
    let mut table = toml::Table::new();
    table.insert("model".into(), toml::Value::try_from(model).map_err(|e| EmbedError::invalid(source, e))?);
    let train: toml::Table =
        toml::from_str("batch_size = 256\nsteps = 1000\nlr = 1e-5\nweight_decay = 0.1\nwarmup_steps = 100\ncheckpoint_every = 500")
            .expect("a fixed table");
    table.insert("train".into(), toml::Value::Table(train));
    let mut tok = toml::Table::new();
    tok.insert("kind".into(), tokenizer_kind.into());
    tok.insert("vocab_size".into(), (tokenizer_vocab as i64).into());
    table.insert("tokenizer".into(), toml::Value::Table(tok));
    // OpenCLIP evaluates with a bicubic resize of the shorter side, then a center crop;
    // Chinese-CLIP resizes bicubically to the square (the same on square images)
    let mut data = toml::Table::new();
    data.insert("resize".into(), "bicubic".into());
    table.insert("data".into(), toml::Value::Table(data));
    Ok(RunConfig::from_toml(&toml::to_string(&table).expect("a table serialises"), &source.display().to_string())?)
}

/// Imports an OpenCLIP model (`config`: its model-config JSON; `weights`: a `.safetensors` or
/// `torch.save` (`.bin`, `.pt`) state dict) into a new run directory `out`. Refuses an `out` that
/// already holds a run.
pub fn import_openclip<B: Backend>(
    config: &Path,
    weights: &Path,
    tokenizer: &TokenizerSource,
    out: &Path,
    device: &B::Device,
) -> Result<Imported> {
    refuse_existing(out)?;
    let model_cfg = model_config(&read_json(config)?).map_err(|e| EmbedError::import(config, e))?;
    let context = model_cfg.text.context_length;
    let (tk, source) = match tokenizer {
        TokenizerSource::OpenClipMerges(p) => (TextTokenizer::openclip_bpe(p, context)?, p),
        TokenizerSource::TokenizerJson(p) => (TextTokenizer::from_file(p, context)?, p),
    };
    let state = StateDict::read(weights).map_err(|e| EmbedError::import(weights, e))?;
    write_run::<B>(model_cfg, "bpe", tk, source, config, weights, &state, out, device)
}

/// Imports a Chinese-CLIP model: its vision and text model-config JSONs
/// (`cn_clip/clip/model_configs/ViT-B-16.json`, `RoBERTa-wwm-ext-base-chinese.json`), its
/// checkpoint (`clip_cn_vit-b-16.pt`, a `torch.save` training checkpoint, or safetensors) and
/// the text tower's `vocab.txt`, with `context` text positions (Chinese-CLIP uses 52).
pub fn import_chinese_clip<B: Backend>(
    vision_config: &Path,
    text_config: &Path,
    weights: &Path,
    vocab: &Path,
    context: usize,
    out: &Path,
    device: &B::Device,
) -> Result<Imported> {
    refuse_existing(out)?;
    let model_cfg = chinese_clip::model_config(&read_json(vision_config)?, &read_json(text_config)?, context)
        .map_err(|source| EmbedError::Import { path: format!("{} + {}", vision_config.display(), text_config.display()), source })?;
    let tk = TextTokenizer::bert_vocab(vocab, context)?;
    let state = StateDict::read(weights).map_err(|e| EmbedError::import(weights, e))?;
    let state = chinese_clip::to_openclip_layout(&state, context).map_err(|e| EmbedError::import(weights, e))?;
    write_run::<B>(model_cfg, "wordpiece", tk, vocab, vision_config, weights, &state, out, device)
}

fn refuse_existing(out: &Path) -> Result<()> {
    if out.join("latest").exists() {
        return Err(EmbedError::invalid(out, "already holds a run; import into a new directory"));
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| EmbedError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EmbedError::invalid(path, format!("not JSON: {e}")))
}

/// The shared last steps: the tokenizer fits the model, the weights fill it (all or nothing),
/// and the run is written.
#[allow(clippy::too_many_arguments)]
fn write_run<B: Backend>(
    model_cfg: ModelConfig,
    tokenizer_kind: &str,
    tk: TextTokenizer,
    tokenizer_source: &Path,
    config: &Path,
    weights: &Path,
    state: &StateDict,
    out: &Path,
    device: &B::Device,
) -> Result<Imported> {
    if tk.vocab_size() > model_cfg.text.vocab_size {
        return Err(EmbedError::invalid(
            tokenizer_source,
            format!("{} tokens, more than the model's vocabulary of {}", tk.vocab_size(), model_cfg.text.vocab_size),
        ));
    }
    let cfg = run_config(&model_cfg, tokenizer_kind, tk.vocab_size(), config)?;
    // held through the save: the parameters the checkpoint has no key for (FILIP's token
    // projections) are drawn there, when first read
    let rng = vlp_model::init::rng_guard();
    let model =
        load_openclip(vlp_model::init::for_loading(|| cfg.model.init::<B>(device)), state).map_err(|e| EmbedError::import(weights, e))?;
    std::fs::create_dir_all(out).map_err(|e| EmbedError::io(out, e))?;
    let checkpoint = save_model(out, &model, &TrainState::default(), &cfg, &tk)?;
    drop(rng);
    use burn::module::Module;
    Ok(Imported { checkpoint, config: cfg, parameters: model.num_params(), tensors: state.keys().count() })
}
