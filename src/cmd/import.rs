//! `vlp import openclip --config ViT-B-32.json --weights open_clip_model.safetensors
//! --bpe bpe_simple_vocab_16e6.txt.gz --out runs/vit-b-32`, or `vlp import chinese-clip
//! --vision-config ViT-B-16.json --text-config RoBERTa-wwm-ext-base-chinese.json --weights
//! clip_cn_vit-b-16.pt --vocab vocab.txt --out runs/cn-vit-b-16`: a published model as a vlp run
//! directory, which `eval`, `zeroshot`, `index build`, `search`, `serve` and `filter` accept.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Instant;
use vlp_embed::import::{import_chinese_clip, import_openclip, Imported, TokenizerSource};

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
}

#[derive(Subcommand)]
pub enum ImportSource {
    /// An OpenCLIP model: its model-config JSON (open_clip/model_configs/*.json) and weights.
    Openclip(OpenClipArgs),
    /// A Chinese-CLIP model (OFA-Sys/Chinese-CLIP, ViT image tower, RoBERTa/BERT text tower).
    ChineseClip(ChineseClipArgs),
}

#[derive(Args)]
pub struct ChineseClipArgs {
    /// The vision model config (`cn_clip/clip/model_configs/ViT-B-16.json`).
    #[arg(long)]
    pub vision_config: PathBuf,
    /// The text model config (`cn_clip/clip/model_configs/RoBERTa-wwm-ext-base-chinese.json`).
    #[arg(long)]
    pub text_config: PathBuf,
    /// The checkpoint (`clip_cn_vit-b-16.pt`: a `torch.save` file, or safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// The text tower's WordPiece vocabulary (`cn_clip/clip/vocab.txt`).
    #[arg(long)]
    pub vocab: PathBuf,
    /// Text positions (Chinese-CLIP's `tokenize` uses 52).
    #[arg(long, default_value_t = vlp_model::chinese_clip::CONTEXT)]
    pub context: usize,
    /// The run directory to create.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct OpenClipArgs {
    /// OpenCLIP's model config (`embed_dim`, `vision_cfg`, `text_cfg`, `quick_gelu`).
    #[arg(long)]
    pub config: PathBuf,
    /// The weights: a `.safetensors` state dict (`open_clip_model.safetensors` on the Hub) or a
    /// `torch.save` one (`open_clip_pytorch_model.bin`, `.pt`), read without Python.
    #[arg(long)]
    pub weights: PathBuf,
    /// OpenCLIP's BPE merges, `bpe_simple_vocab_16e6.txt.gz` (in every open_clip install, beside
    /// `tokenizer.py`).
    #[arg(long, conflicts_with = "tokenizer", required_unless_present = "tokenizer")]
    pub bpe: Option<PathBuf>,
    /// A `tokenizer.json` instead (a Hugging Face CLIP tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The run directory to create.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: ImportArgs) -> Result<()> {
    match a.source {
        ImportSource::Openclip(a) => openclip(a),
        ImportSource::ChineseClip(a) => {
            let started = Instant::now();
            let done = import_chinese_clip::<burn::backend::Flex>(
                &a.vision_config,
                &a.text_config,
                &a.weights,
                &a.vocab,
                a.context,
                &a.out,
                &Default::default(),
            )
            .with_context(|| format!("importing {} into {}", a.weights.display(), a.out.display()))?;
            report(&done, started);
            Ok(())
        }
    }
}

fn report(done: &Imported, started: Instant) {
    println!(
        "imported {} tensors ({} parameters) in {:.1} s: {}",
        done.tensors,
        done.parameters,
        started.elapsed().as_secs_f64(),
        done.checkpoint.display()
    );
}

fn openclip(a: OpenClipArgs) -> Result<()> {
    let tokenizer = match (&a.bpe, &a.tokenizer) {
        (Some(p), _) => TokenizerSource::OpenClipMerges(p.clone()),
        (None, Some(p)) => TokenizerSource::TokenizerJson(p.clone()),
        (None, None) => bail!("give the tokenizer: --bpe bpe_simple_vocab_16e6.txt.gz or --tokenizer tokenizer.json"),
    };
    let started = Instant::now();
    let device = Default::default();
    let done = import_openclip::<burn::backend::Flex>(&a.config, &a.weights, &tokenizer, &a.out, &device)
        .with_context(|| format!("importing {} into {}", a.weights.display(), a.out.display()))?;
    report(&done, started);
    Ok(())
}
