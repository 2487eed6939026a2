//! The query engine: an index, the checkpoint that built it, and one `search` for every kind of
//! query. Errors say whether the request was at fault (and how) or the server.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::Path;
use vlp_data::image_pipeline::{process_into, Augment};
use vlp_embed::checkpoint::Encoder;
use vlp_embed::embed::{rows, text_tensors};
use vlp_index::catalog::{Mode, RetrievalIndex, SearchParams};
use vlp_index::IndexError;

/// What is searched for.
#[derive(Debug, Clone)]
pub enum Query {
    Text(String),
    /// An encoded image file (PNG, JPEG, WebP).
    Image(Vec<u8>),
    /// A vector from the index's own model, `dim` long.
    Embedding(Vec<f32>),
    /// An item of the index: its stored image embedding ("more like this").
    Item(String),
}

/// Which side of the index answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Images,
    Texts,
}

/// A query, the side that answers it, and how the index searches.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: Query,
    pub side: Side,
    pub params: SearchParams,
}

impl SearchRequest {
    /// The image side, ten results, dense, by the HNSW graph.
    pub fn new(query: Query) -> Self {
        SearchRequest { query, side: Side::Images, params: SearchParams::default() }
    }
}

/// Why a search failed: each variant is the request's fault, with a stable [`code`](Self::code),
/// except [`Internal`](Self::Internal), the server's. `vlp serve` maps each to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// An item the request names is not in the index.
    #[error("{0}")]
    NotFound(String),
    /// The image is not PNG, JPEG or WebP.
    #[error("{0}")]
    UnsupportedImage(String),
    /// The image has more pixels than the server accepts.
    #[error("{0}")]
    ImageTooLarge(String),
    /// The image cannot be decoded.
    #[error("{0}")]
    BadImage(String),
    /// A given embedding has the wrong length or values.
    #[error("{0}")]
    BadEmbedding(String),
    /// The query needs the model, and the index was opened without one (the server's
    /// configuration, not the request's fault).
    #[error("{0}")]
    NoModel(String),
    /// Anything else the request asks that this index cannot answer (re-ranking without token
    /// vectors, say).
    #[error("{0}")]
    BadRequest(String),
    /// The server's fault.
    #[error("{0}")]
    Internal(String),
}

impl SearchError {
    /// The API's stable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            SearchError::NotFound(_) => "not_found",
            SearchError::UnsupportedImage(_) => "unsupported_image",
            SearchError::ImageTooLarge(_) => "image_too_large",
            SearchError::BadImage(_) => "bad_image",
            SearchError::BadEmbedding(_) => "bad_embedding",
            SearchError::NoModel(_) => "no_model",
            SearchError::BadRequest(_) => "bad_request",
            SearchError::Internal(_) => "internal",
        }
    }
}

impl From<IndexError> for SearchError {
    /// What the request could get wrong is checked before the index is asked, so whatever the
    /// index refuses is the server's fault: a query embedded by another model than the index's
    /// (the server embeds its own queries), a damaged file, an I/O error.
    fn from(e: IndexError) -> Self {
        SearchError::Internal(e.to_string())
    }
}

/// Why an index could not be opened for searching.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The checkpoint that embeds queries did not load.
    #[error("loading the index's checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    /// The checkpoint is another model than the one the index's vectors came from (a run
    /// retrained in place, or a wrong `--checkpoint`): every query would be refused.
    #[error(
        "{index} was built with the model {index_model}, but the checkpoint {checkpoint} is the model {checkpoint_model}: \
         rebuild the index with this checkpoint, or give the checkpoint the index was built with"
    )]
    ModelMismatch { index: String, index_model: String, checkpoint: String, checkpoint_model: String },
}

/// An index with the encoder that embeds its queries.
pub struct Searcher<B: Backend> {
    pub index: RetrievalIndex,
    /// `None` when the checkpoint is not at hand: BM25 and item queries still work.
    pub encoder: Option<Encoder<B>>,
    /// The identity of the index's model.
    pub model: String,
    /// Image queries above this many pixels are refused before decoding.
    pub max_image_pixels: u64,
    rows_by_id: std::collections::HashMap<String, usize>,
    device: B::Device,
}

impl<B: Backend> Searcher<B> {
    pub fn new(index: RetrievalIndex, encoder: Option<Encoder<B>>, model: String, device: B::Device) -> Self {
        let rows_by_id = index.items.iter().enumerate().map(|(i, it)| (it.id.clone(), i)).collect();
        let max_image_pixels = vlp_data::image_pipeline::ImageConfig::default().max_pixels;
        Searcher { index, encoder, model, max_image_pixels, rows_by_id, device }
    }

    /// Opens an index; `checkpoint` overrides the one recorded at build time.
    pub fn open(
        dir: &Path,
        checkpoint: Option<&Path>,
        identity: impl Fn(&Path) -> std::io::Result<String>,
        device: B::Device,
    ) -> Result<Self, OpenError> {
        let index = RetrievalIndex::open(dir)?;
        let recorded = index.info.source.get("checkpoint").and_then(Value::as_str).map(Path::new);
        let (encoder, model) = match checkpoint.or(recorded) {
            Some(ck) => {
                let ck_err = |message: String| OpenError::Checkpoint { path: ck.display().to_string(), message };
                let enc = Encoder::<B>::load(ck, &device).map_err(|e| ck_err(e.to_string()))?;
                let model = identity(&enc.dir).map_err(|e| ck_err(e.to_string()))?;
                // Queries embedded by another model than the index's would all be refused, so a
                // checkpoint retrained in place (or a wrong --checkpoint) is refused here, at once.
                if model != index.info.model {
                    return Err(OpenError::ModelMismatch {
                        index: dir.display().to_string(),
                        index_model: index.info.model.clone(),
                        checkpoint: enc.dir.display().to_string(),
                        checkpoint_model: model,
                    });
                }
                (Some(enc), model)
            }
            None => (None, index.info.model.clone()),
        };
        Ok(Searcher::new(index, encoder, model, device))
    }

    fn encoder(&self) -> Result<&Encoder<B>, SearchError> {
        self.encoder
            .as_ref()
            .ok_or_else(|| SearchError::NoModel("this index was opened without its checkpoint: only BM25 and item queries work".into()))
    }

    /// Ranked results as JSON objects: `id`, `score`, and the item's caption, image and
    /// metadata (image side) or the text, its language and field (text side).
    pub fn search(&self, r: &SearchRequest) -> Result<Vec<Value>, SearchError> {
        let idx = &self.index;
        let p = &r.params;
        if p.k == 0 {
            return Ok(Vec::new());
        }
        let hits: Vec<(usize, f32)> = match (&r.query, r.side) {
            (Query::Text(text), Side::Images) => {
                if p.rerank.is_some() && idx.image_tokens.is_none() {
                    return Err(SearchError::BadRequest(vlp_index::catalog::NO_TOKEN_EMBEDDINGS.into()));
                }
                let dense = !matches!(p.mode, Mode::Bm25) || p.rerank.is_some();
                let q = if dense { Some(self.text_embedding(text)?) } else { None };
                let depth = p.rerank.map_or(p.k, |n| n.max(p.k));
                let mut ranked = idx.text_to_images(text, q.as_deref().map(|v| (v, self.model.as_str())), &p.with_k(depth))?;
                if p.rerank.is_some() {
                    let rows: Vec<usize> = ranked.iter().map(|x| x.row).collect();
                    ranked = idx.rerank_images(&rows, &self.text_tokens(text)?, &self.model)?;
                    ranked.truncate(p.k);
                }
                ranked.iter().map(|x| (x.row, x.score)).collect()
            }
            (Query::Text(text), Side::Texts) => {
                let q = self.text_embedding(text)?;
                idx.dense_texts(&q, &self.model, p)?.iter().map(|h| (h.row, h.score)).collect()
            }
            (query, side) => {
                let q = match query {
                    Query::Image(bytes) => self.image_embedding(bytes)?,
                    Query::Embedding(v) => self.checked_embedding(v)?,
                    Query::Item(id) => {
                        let row = self.item_row(id).ok_or_else(|| SearchError::NotFound(format!("no item {id:?} in this index")))?;
                        idx.image_vectors.row_vec(row)
                    }
                    Query::Text(_) => unreachable!("matched above"),
                };
                let hits = match side {
                    Side::Images => idx.dense_images(&q, &self.model, p)?,
                    Side::Texts => idx.dense_texts(&q, &self.model, p)?,
                };
                hits.iter().map(|h| (h.row, h.score)).collect()
            }
        };
        Ok(hits
            .into_iter()
            .map(|(row, score)| match r.side {
                Side::Images => self.item_json(row, score),
                Side::Texts => {
                    let t = &idx.texts[row];
                    json!({"id": t.id, "score": score, "text": t.body.text, "lang": t.body.lang, "field": t.body.field})
                }
            })
            .collect())
    }

    pub fn item_row(&self, id: &str) -> Option<usize> {
        self.rows_by_id.get(id).copied()
    }

    pub fn item_json(&self, row: usize, score: f32) -> Value {
        let it = &self.index.items[row];
        json!({"id": it.id, "score": score, "caption": it.captions.first().map(|c| c.text.as_str()), "captions": it.captions, "image": it.image, "meta": it.meta})
    }

    fn text_embedding(&self, text: &str) -> Result<Vec<f32>, SearchError> {
        let enc = self.encoder()?;
        let (ids, mask) = text_tensors::<B>(&enc.tokenizer, &[text], &self.device).map_err(|e| SearchError::Internal(e.to_string()))?;
        Ok(rows(enc.model.embed_text(ids, mask)))
    }

    fn text_tokens(&self, text: &str) -> Result<Vec<f32>, SearchError> {
        text_tokens(self.encoder()?, text, &self.device).map_err(|e| SearchError::Internal(e.to_string()))
    }

    /// Decodes (within the model's pixel limit) and embeds an image.
    pub fn image_embedding(&self, bytes: &[u8]) -> Result<Vec<f32>, SearchError> {
        let enc = self.encoder()?;
        let format = image::guess_format(bytes).map_err(|_| SearchError::UnsupportedImage("the image is not PNG, JPEG or WebP".into()))?;
        if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP) {
            return Err(SearchError::UnsupportedImage(format!("{format:?} images are not accepted: send PNG, JPEG or WebP")));
        }
        let cfg = vlp_data::image_pipeline::ImageConfig { max_pixels: self.max_image_pixels, ..enc.config.image_config() };
        let side = cfg.size as usize;
        let mut buf = vec![0f32; 3 * side * side];
        process_into(bytes, &cfg, Augment::Eval, &mut buf).map_err(|f| {
            let message = format!("the image cannot be used: {}", f.detail);
            match f.reason {
                vlp_data::SkipReason::ImageTooLarge => SearchError::ImageTooLarge(message),
                _ => SearchError::BadImage(message),
            }
        })?;
        let x = burn::tensor::Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(buf, [1, 3, side, side]), &self.device);
        Ok(rows(enc.model.embed_image(x)))
    }

    fn checked_embedding(&self, v: &[f32]) -> Result<Vec<f32>, SearchError> {
        let dim = self.index.info.dim;
        if v.len() != dim {
            return Err(SearchError::BadEmbedding(format!("the embedding has {} values; this index's are {dim} long", v.len())));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(SearchError::BadEmbedding("the embedding holds a NaN or infinite value".into()));
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(SearchError::BadEmbedding("the embedding is all zeros".into()));
        }
        Ok(v.iter().map(|x| x / norm).collect())
    }

    /// Whether searches are answered: one item's own nearest image, searched as a client would
    /// (`Ok` for an empty index), and the kinds of query this searcher takes.
    pub fn health(&self) -> (Result<(), SearchError>, Vec<&'static str>) {
        let kinds = match self.encoder {
            Some(_) => vec!["text", "image", "embedding", "item"],
            None => vec!["text (bm25 only)", "embedding", "item"],
        };
        let probe = match (0..self.index.items.len()).find(|&r| self.index.is_live(r)) {
            Some(row) => {
                let mut r = SearchRequest::new(Query::Item(self.index.items[row].id.clone()));
                r.params.k = 1;
                self.search(&r).and_then(|hits| {
                    if hits.is_empty() {
                        Err(SearchError::Internal("an item's own search found nothing".into()))
                    } else {
                        Ok(())
                    }
                })
            }
            None => Ok(()),
        };
        (probe, kinds)
    }

    /// Index size, for health and metrics.
    pub fn sizes(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("items".into(), json!(self.index.items.len()));
        m.insert("texts".into(), json!(self.index.texts.len()));
        m.insert("dim".into(), json!(self.index.info.dim));
        m
    }
}

/// A text's token embeddings, `[real tokens, token_dim]` row-major (padding dropped): the query
/// side of token-level re-ranking.
pub fn text_tokens<B: Backend>(enc: &Encoder<B>, text: &str, device: &B::Device) -> vlp_data::Result<Vec<f32>> {
    let (ids, mask) = text_tensors::<B>(&enc.tokenizer, &[text], device)?;
    let mask_values: Vec<f32> = rows(mask.clone());
    let out = enc.model.encode_text(ids, mask);
    let [_, _, d] = out.tokens.dims();
    let values: Vec<f32> = rows(out.tokens);
    Ok(values.chunks(d).zip(&mask_values).filter(|(_, m)| **m > 0.5).flat_map(|(t, _)| t.iter().copied()).collect())
}
