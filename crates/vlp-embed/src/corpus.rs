//! A data split embedded into what `vlp_index` builds an index from: `vlp index build` and
//! `vlp index add` (and anything else that indexes a corpus) go through [`embed_corpus`].

use crate::checkpoint::{model_identity, Encoder};
use crate::embed::{embed_texts, for_each_image_batch, rows, Embeddings};
use crate::Result;
use burn::tensor::backend::Backend;
use serde_json::{json, Map, Value};
use std::path::Path;
use vlp_data::evalset::EvalSet;
use vlp_data::source::ReadOptions;
use vlp_index::ann::HnswConfig;
use vlp_index::catalog::{BuildInput, Item, ItemText, TextEntry};
use vlp_index::store::Precision;

/// Where an item's image is, as the index records it: the manifest's `image` resolved against
/// the data set (absolute when it exists), else the sample's location in its shard.
fn image_path(data: &str, meta: &Map<String, Value>, location: &str) -> String {
    let Some(rel) = meta.get("image").and_then(Value::as_str) else { return location.to_string() };
    let root = Path::new(data);
    let base = if root.is_dir() { root } else { root.parent().unwrap_or(Path::new(".")) };
    let p = base.join(rel);
    std::fs::canonicalize(&p).unwrap_or(p).display().to_string()
}

/// Whether an index stores its images' token vectors, for token-level re-ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    Store,
    Skip,
}

impl Tokens {
    /// [`Tokens::Store`] for a model that learnt token embeddings
    /// ([`vlp_model::config::LossConfig::learns_tokens`]). Any other model's are its projection's
    /// random start: an imported ViT-B/32's are 49 × 512 per image, 50 KB in f16 beside its global
    /// vector's 2 KB (1.66 of a 1.89 MB index of 33 images), and re-ranking by them is noise.
    pub fn if_learnt<B: Backend>(enc: &Encoder<B>) -> Self {
        if enc.config.loss.learns_tokens() {
            Tokens::Store
        } else {
            Tokens::Skip
        }
    }
}

/// Embeds a data split with a checkpoint: everything an index needs (global vectors of images
/// and texts, items and captions, and with [`Tokens::Store`] the images' token vectors for
/// re-ranking), and what was skipped. Images go `batch` at a time, texts twice as many. A new
/// index takes token vectors where the model learnt them ([`Tokens::if_learnt`]), an index that
/// grows what it already holds.
pub fn embed_corpus<B: Backend>(
    enc: &Encoder<B>,
    data: &str,
    split: &str,
    hnsw: HnswConfig,
    batch: usize,
    tokens: Tokens,
    device: &B::Device,
) -> Result<(BuildInput, vlp_data::SkipLog)> {
    let model = model_identity(&enc.dir)?;
    let set = EvalSet::load(data, split, &ReadOptions::default())?;
    eprintln!("embedding {} images and {} texts of {data} ({split}) with {}", set.images.len(), set.texts.len(), enc.dir.display());
    // global and token embeddings in one pass over the images
    let with_tokens = tokens == Tokens::Store;
    let mut images = Embeddings::default();
    let mut tokens: Vec<f32> = Vec::new();
    let mut token_shape = [0usize; 2];
    let skipped = for_each_image_batch::<B>(&set.images, &enc.config.image_config(), batch, device, |ids, x| {
        if !with_tokens {
            return images.push_rows(ids, enc.model.embed_image(x));
        }
        let out = enc.model.encode_image(x);
        let [_, n, d] = out.tokens.dims();
        token_shape = [n, d];
        tokens.extend(rows(out.tokens));
        images.push_rows(ids, out.global);
    });
    let ids: Vec<String> = set.texts.iter().map(|t| t.id.clone()).collect();
    let strings: Vec<String> = set.texts.iter().map(|t| t.text.clone()).collect();
    let texts = embed_texts(&enc.model, &enc.tokenizer, &ids, &strings, 2 * batch, device)?;
    let kept: std::collections::HashSet<&str> = images.ids.iter().map(String::as_str).collect();
    let items: Vec<Item> = set
        .images
        .iter()
        .filter(|s| kept.contains(s.key.as_str()))
        .map(|s| Item {
            id: s.key.clone(),
            image: image_path(data, &s.meta, &s.location),
            captions: s.captions.iter().map(|c| ItemText { text: c.text.clone(), lang: c.lang.clone(), field: c.field.clone() }).collect(),
            meta: s.meta.clone(),
        })
        .collect();
    let text_entries: Vec<TextEntry> = set
        .texts
        .iter()
        .map(|t| TextEntry { id: t.id.clone(), body: ItemText { text: t.text.clone(), lang: t.lang.clone(), field: t.field.clone() } })
        .collect();
    let mut source = Map::new();
    source.insert("checkpoint".into(), json!(enc.dir.display().to_string()));
    source.insert("data".into(), json!(data));
    source.insert("split".into(), json!(split));
    let dim = if images.is_empty() { texts.dim } else { images.dim };
    let input = BuildInput {
        model,
        dim,
        hnsw,
        items,
        image_vectors: images.vectors,
        texts: text_entries,
        text_vectors: texts.vectors,
        source,
        image_tokens: with_tokens.then_some((token_shape, tokens)),
        precision: Precision::F32,
    };
    Ok((input, skipped))
}
