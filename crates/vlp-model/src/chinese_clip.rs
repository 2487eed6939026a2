//! Chinese-CLIP (OFA-Sys, `cn_clip`) checkpoints: a ViT image tower as OpenAI's (QuickGELU) or
//! OpenAI's ModifiedResNet (RN50, [`crate::modified_resnet`]), and a
//! RoBERTa-wwm / BERT text tower (post-norm, GELU, LayerNorm ε 1e-12, pooled at `[CLS]`), which
//! vlp builds as its bidirectional text tower with `norm = "post"`.
//!
//! The checkpoint is rewritten into OpenCLIP's names ([`to_openclip_layout`]) and loaded by
//! [`crate::openclip::load_openclip`], all or nothing as OpenCLIP checkpoints are:
//! - `visual.*`, `text_projection`, `logit_scale`: the same names;
//! - `bert.embeddings.word_embeddings` → `token_embedding`;
//! - `position_embeddings[..context] + token_type_embeddings[0]` → `positional_embedding`
//!   (Chinese-CLIP always passes token type 0, so the type embedding is a constant row);
//! - `bert.embeddings.LayerNorm` → `ln_final` (a post-norm tower normalises its embeddings first);
//! - per layer, `query`/`key`/`value` stacked → `attn.in_proj_*`, `attention.output.dense` →
//!   `attn.out_proj`, `attention.output.LayerNorm` → `ln_1`, `intermediate.dense` → `mlp.c_fc`,
//!   `output.dense` → `mlp.c_proj`, `output.LayerNorm` → `ln_2`.

use crate::config::{Activation, BlockNorm, ImageTowerConfig, ModelConfig, ModifiedResnetConfig, TextPool, TextTowerConfig, VitConfig};
use crate::openclip::{ImportError, StateDict};
use std::collections::BTreeSet;

/// Chinese-CLIP's context length (`cn_clip.clip.tokenize`'s default).
pub const CONTEXT: usize = 52;

/// The vlp model config of Chinese-CLIP's two model-config JSONs (`cn_clip/clip/model_configs`:
/// the vision one, e.g. `ViT-B-16.json`, and the text one, e.g.
/// `RoBERTa-wwm-ext-base-chinese.json`), for a text context of `context` tokens.
pub fn model_config(vision: &serde_json::Value, text: &serde_json::Value, context: usize) -> Result<ModelConfig, ImportError> {
    let unsupported = |what: String| ImportError::Unsupported(format!("Chinese-CLIP config: {what}"));
    let num = |v: &serde_json::Value, k: &str, default: Option<f64>| -> Result<f64, ImportError> {
        match v.get(k) {
            Some(x) => x.as_f64().ok_or_else(|| unsupported(format!("{k} = {x} is not a number"))),
            None => default.ok_or_else(|| unsupported(format!("{k} is missing"))),
        }
    };
    if let Some(act) = text.get("text_hidden_act").filter(|a| a.as_str() != Some("gelu")) {
        return Err(unsupported(format!("text_hidden_act = {act}: only \"gelu\" is built")));
    }
    let width = num(vision, "vision_width", None)? as usize;
    let head_width = num(vision, "vision_head_width", Some(64.0))? as usize;
    let image_size = num(vision, "image_resolution", None)? as usize;
    // RN50's `vision_layers` is a list, written as a string ("[3,4,6,3]") that cn_clip evaluates;
    // read here as JSON, never evaluated
    let stages = match vision.get("vision_layers") {
        Some(serde_json::Value::String(s)) => Some(
            serde_json::from_str::<Vec<usize>>(s)
                .map_err(|_| unsupported(format!("vision_layers = {s:?} is not a list of block counts")))?,
        ),
        Some(serde_json::Value::Array(a)) => Some(
            a.iter()
                .map(|n| n.as_u64().map(|n| n as usize))
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| unsupported(format!("vision_layers = {} is not a list of block counts", vision["vision_layers"])))?,
        ),
        _ => None,
    };
    let image = match stages {
        Some(layers) => {
            if head_width == 0 || !(32 * width).is_multiple_of(head_width) {
                return Err(unsupported(format!("vision_head_width = {head_width} does not divide the pool's width 32 × {width}")));
            }
            ImageTowerConfig::ModifiedResnet(ModifiedResnetConfig { image_size, layers, width, heads: 32 * width / head_width })
        }
        None => {
            if head_width == 0 || !width.is_multiple_of(head_width) {
                return Err(unsupported(format!("vision_head_width = {head_width} does not divide vision_width = {width}")));
            }
            ImageTowerConfig::Vit(VitConfig {
                image_size,
                patch_size: num(vision, "vision_patch_size", None)? as usize,
                width,
                layers: num(vision, "vision_layers", None)? as usize,
                heads: width / head_width,
                mlp_ratio: 4.0,
                token_reduction: None,
                activation: Activation::QuickGelu,
            })
        }
    };
    let hidden = num(text, "text_hidden_size", None)? as usize;
    let positions = num(text, "text_max_position_embeddings", Some(512.0))? as usize;
    if context > positions {
        return Err(unsupported(format!("a context of {context} tokens exceeds text_max_position_embeddings = {positions}")));
    }
    let cfg = ModelConfig {
        embed_dim: num(vision, "embed_dim", None)? as usize,
        token_dim: None,
        image,
        text: TextTowerConfig {
            context_length: context,
            vocab_size: num(text, "vocab_size", None)? as usize,
            width: hidden,
            layers: num(text, "text_num_hidden_layers", None)? as usize,
            heads: num(text, "text_num_attention_heads", None)? as usize,
            mlp_ratio: num(text, "text_intermediate_size", None)? / hidden as f64,
            causal: false,
            pool: TextPool::Cls,
            activation: Activation::Gelu,
            norm: BlockNorm::Post,
            layer_norm_eps: 1e-12,
        },
    };
    cfg.validate().map_err(|e| unsupported(e.to_string()))?;
    Ok(cfg)
}

/// A Chinese-CLIP state dict under OpenCLIP's names (see the module docs), for `context` text
/// positions. A tensor this mapping has no place for is an error naming it.
pub fn to_openclip_layout(state: &StateDict, context: usize) -> Result<StateDict, ImportError> {
    let mut out = StateDict::default();
    let mut used = BTreeSet::new();
    for key in state.keys() {
        if key.starts_with("visual.") || key == "text_projection" || key == "logit_scale" {
            let (shape, values) = state.get(key).expect("listed");
            out.insert(key, shape.to_vec(), values.to_vec());
            used.insert(key.to_string());
        }
    }
    let mut take = |key: &str| -> Result<(Vec<usize>, Vec<f32>), ImportError> {
        let (shape, values) =
            state.get(key).ok_or_else(|| ImportError::Missing { key: key.to_string(), param: "the Chinese-CLIP text tower".into() })?;
        used.insert(key.to_string());
        Ok((shape.to_vec(), values.to_vec()))
    };
    let e = "bert.embeddings.";
    let (words_shape, words) = take(&format!("{e}word_embeddings.weight"))?;
    out.insert("token_embedding.weight", words_shape, words);
    let (pos_shape, pos) = take(&format!("{e}position_embeddings.weight"))?;
    let (_, types) = take(&format!("{e}token_type_embeddings.weight"))?;
    let width = pos_shape.get(1).copied().unwrap_or(0);
    if pos_shape.len() != 2 || pos_shape[0] < context || types.len() < width {
        return Err(ImportError::Shape {
            key: format!("{e}position_embeddings.weight"),
            param: format!("{context} text positions"),
            expected: vec![context, width],
            found: pos_shape,
        });
    }
    let folded: Vec<f32> = pos[..context * width].iter().enumerate().map(|(i, p)| p + types[i % width]).collect();
    out.insert("positional_embedding", vec![context, width], folded);
    for (from, to) in [("LayerNorm.weight", "ln_final.weight"), ("LayerNorm.bias", "ln_final.bias")] {
        let (s, v) = take(&format!("{e}{from}"))?;
        out.insert(to, s, v);
    }
    let layers = state
        .keys()
        .filter_map(|k| k.strip_prefix("bert.encoder.layer.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |n| n + 1);
    for i in 0..layers {
        let l = format!("bert.encoder.layer.{i}.");
        let r = format!("transformer.resblocks.{i}.");
        for part in ["weight", "bias"] {
            let mut shape = Vec::new();
            let mut stacked = Vec::new();
            for qkv in ["query", "key", "value"] {
                let (s, v) = take(&format!("{l}attention.self.{qkv}.{part}"))?;
                shape = s;
                stacked.extend(v);
            }
            shape[0] *= 3;
            out.insert(format!("{r}attn.in_proj_{part}"), shape, stacked);
            for (from, to) in [
                ("attention.output.dense", "attn.out_proj"),
                ("attention.output.LayerNorm", "ln_1"),
                ("intermediate.dense", "mlp.c_fc"),
                ("output.dense", "mlp.c_proj"),
                ("output.LayerNorm", "ln_2"),
            ] {
                let (s, v) = take(&format!("{l}{from}.{part}"))?;
                out.insert(format!("{r}{to}.{part}"), s, v);
            }
        }
    }
    // buffers and heads that do not enter the embeddings
    let ignored = |k: &str| k == "bert.embeddings.position_ids" || k.starts_with("bert.pooler.");
    let unused: Vec<String> = state.keys().filter(|k| !used.contains(*k) && !ignored(k)).map(str::to_string).collect();
    if !unused.is_empty() {
        return Err(ImportError::Unused { keys: unused });
    }
    Ok(out)
}
