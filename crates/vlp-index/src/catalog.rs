//! An index directory: a corpus of items (images with their captions and metadata) and texts,
//! both embedded, each with an HNSW graph, and a caption index.
//!
//! ```text
//! index/NAME/index.json      version, model identity, HNSW parameters, counts, file checksums
//!            items.jsonl     one item per image row: id, image, captions, metadata
//!            texts.jsonl     one text per text row: id, text, lang, field
//!            images.vec      image embeddings (rows = items)     + images.hnsw (graph)
//!            texts.vec       text embeddings (rows = texts)      + texts.hnsw (graph)
//!            captions/       tantivy, one document per item
//! ```
//! A build writes `.NAME.tmp/` and renames it into place (`vlp_atomic`), so an interrupted build leaves
//! the previous index untouched.

use crate::ann::{HnswConfig, HnswGraph, HnswIndex};
use crate::captions::CaptionIndex;
use crate::checksum::checksum;
use crate::exact::{top_k, Hit};
use crate::fusion::{reciprocal_rank_fusion, RRF_K};
use crate::store::{write_store, Precision, VectorStore};
use crate::{IndexError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// 2: vlp's own HNSW file (`*.hnsw`), identical vectors sharing a node; f16 token embeddings.
/// 3: checksums and model identities are xxh3-64 ([`crate::checksum`]), vector stores `VLPVEC02`.
pub const VERSION: u32 = 3;

/// One caption or keyword line of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemText {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A searchable image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    /// Where the image file is (absolute, or as the data named it).
    pub image: String,
    pub captions: Vec<ItemText>,
    #[serde(default)]
    pub meta: Map<String, Value>,
}

/// A text that image queries can find: a caption line with its own id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextEntry {
    pub id: String,
    #[serde(flatten)]
    pub body: ItemText,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub version: u32,
    pub model: String,
    pub dim: usize,
    pub hnsw: HnswConfig,
    pub items: usize,
    pub texts: usize,
    /// File name → [`checksum`] of the files that are not self-checking.
    pub checksums: BTreeMap<String, String>,
    /// Free-form provenance: checkpoint, data, split.
    #[serde(default)]
    pub source: Map<String, Value>,
    /// `[tokens, token_dim]` of the stored per-image token embeddings (`image_tokens.vec`),
    /// for token-level re-ranking; absent when they were not stored.
    #[serde(default)]
    pub image_tokens: Option<[usize; 2]>,
    /// How `images.vec` and `texts.vec` hold the vectors (and so how the graphs hold them).
    #[serde(default)]
    pub precision: Precision,
    /// Ids of items deleted since the build: kept in the files, never returned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Everything a build needs; vectors are `[rows, dim]` row-major and L2-normalised.
pub struct BuildInput {
    pub model: String,
    pub dim: usize,
    pub hnsw: HnswConfig,
    pub items: Vec<Item>,
    pub image_vectors: Vec<f32>,
    pub texts: Vec<TextEntry>,
    pub text_vectors: Vec<f32>,
    pub source: Map<String, Value>,
    /// Per-image token embeddings: `[tokens, token_dim]` and `[items, tokens, token_dim]` values.
    pub image_tokens: Option<([usize; 2], Vec<f32>)>,
    /// How the global vectors are stored and searched.
    pub precision: Precision,
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).expect("serialises"));
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| IndexError::io(path, e))
}

/// Parses JSON lines already read (and checksummed) from `path`.
fn parse_jsonl<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<Vec<T>> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| IndexError::Corrupt { path: path.display().to_string(), message: "not UTF-8".into() })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| IndexError::Corrupt { path: format!("{}:{}", path.display(), i + 1), message: e.to_string() })
        })
        .collect()
}

fn checksum_of(bytes: &[u8]) -> String {
    checksum(&[bytes])
}

fn file_checksum(path: &Path) -> Result<String> {
    Ok(checksum_of(&std::fs::read(path).map_err(|e| IndexError::io(path, e))?))
}

const CHECKED: [&str; 4] = ["items.jsonl", "texts.jsonl", "images.hnsw", "texts.hnsw"];

/// Builds the whole index in a temporary directory beside `dir`, then swaps it in.
pub fn build(dir: &Path, input: BuildInput) -> Result<IndexInfo> {
    write_index(dir, input, None, Vec::new())
}

/// Writes an index into a temporary directory beside `dir`, then swaps it in. `graphs` are the
/// image and text HNSW graphs when they already hold every row (an addition); otherwise they are
/// built here.
pub(crate) fn write_index(
    dir: &Path,
    input: BuildInput,
    graphs: Option<(&mut HnswGraph, &mut HnswGraph)>,
    deleted: Vec<String>,
) -> Result<IndexInfo> {
    let BuildInput { model, dim, hnsw, items, image_vectors, texts, text_vectors, source, image_tokens, precision } = input;
    // the graphs are built from the values the stores will hold
    let image_vectors = precision.round(image_vectors);
    let text_vectors = precision.round(text_vectors);
    dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| IndexError::Invalid(format!("{}: not a directory name", dir.display())))?;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| IndexError::io(parent, e))?;
    let tmp = vlp_atomic::temp_dir(dir).map_err(|e| IndexError::io(dir, e))?;
    write_jsonl(&tmp.join("items.jsonl"), &items)?;
    write_jsonl(&tmp.join("texts.jsonl"), &texts)?;
    let item_ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let text_ids: Vec<String> = texts.iter().map(|t| t.id.clone()).collect();
    write_store(&tmp.join("images.vec"), &item_ids, dim, &image_vectors, &model, precision)?;
    write_store(&tmp.join("texts.vec"), &text_ids, dim, &text_vectors, &model, precision)?;
    let token_shape = match &image_tokens {
        Some((shape, values)) => {
            write_store(&tmp.join("image_tokens.vec"), &item_ids, shape[0] * shape[1], values, &model, Precision::F16)?;
            Some(*shape)
        }
        None => None,
    };
    match graphs {
        Some((images, texts)) => {
            images.save(&tmp.join("images.hnsw"))?;
            texts.save(&tmp.join("texts.hnsw"))?;
        }
        None => {
            HnswGraph::build(&image_vectors, dim, hnsw).save(&tmp.join("images.hnsw"))?;
            HnswGraph::build(&text_vectors, dim, hnsw).save(&tmp.join("texts.hnsw"))?;
        }
    }
    CaptionIndex::build(
        &tmp.join("captions"),
        items.iter().enumerate().map(|(r, it)| (r, it.captions.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(" | "))),
    )?;
    let mut checksums = BTreeMap::new();
    for f in CHECKED {
        checksums.insert(f.to_string(), file_checksum(&tmp.join(f))?);
    }
    let info = IndexInfo {
        version: VERSION,
        model,
        dim,
        hnsw,
        items: items.len(),
        texts: texts.len(),
        checksums,
        source,
        image_tokens: token_shape,
        precision,
        deleted,
    };
    std::fs::write(tmp.join("index.json"), serde_json::to_string_pretty(&info).expect("serialises"))
        .map_err(|e| IndexError::io(&tmp, e))?;
    // the old index moves aside, the new one in, then the old one goes
    vlp_atomic::commit(&tmp, dir).map_err(|e| IndexError::io(dir, e))?;
    Ok(info)
}

/// `FIELD=VALUE`: an item matches when its metadata field equals VALUE (or, for a list, holds
/// it), or, for `lang`, when one of its captions is in that language.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

impl std::str::FromStr for Filter {
    type Err = IndexError;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('=') {
            Some((f, v)) if !f.trim().is_empty() => Ok(Filter { field: f.trim().into(), value: v.trim().into() }),
            _ => Err(IndexError::Invalid(format!("filter {s:?}: expected FIELD=VALUE, e.g. lang=zh or style=google"))),
        }
    }
}

impl Filter {
    pub fn matches(&self, item: &Item) -> bool {
        let eq = |v: &Value| match v {
            Value::String(s) => s == &self.value,
            Value::Number(n) => n.to_string() == self.value,
            Value::Bool(b) => b.to_string() == self.value,
            _ => false,
        };
        match item.meta.get(&self.field) {
            Some(Value::Array(list)) => list.iter().any(eq),
            Some(v) => eq(v),
            None if self.field == "lang" => item.captions.iter().any(|c| c.lang.as_deref() == Some(self.value.as_str())),
            None => false,
        }
    }
}

/// How a text query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dense,
    Bm25,
    Hybrid,
}

/// How a search runs, whatever it searches for: built once, from the command line or an HTTP
/// body, and passed whole to every search of the index.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// How many results.
    pub k: usize,
    /// HNSW's candidate list while searching (`None`: the graph's default, at least `k`).
    pub ef: Option<usize>,
    /// Brute force over every vector instead of the HNSW graph.
    pub exact: bool,
    /// Item filters, all of which must hold (the image side; texts are not filtered).
    pub filters: Vec<Filter>,
    /// How a text query is answered on the image side.
    pub mode: Mode,
    /// Re-rank this many dense candidates by token-level similarity (text queries, image side).
    pub rerank: Option<usize>,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams { k: 10, ef: None, exact: false, filters: Vec::new(), mode: Mode::Dense, rerank: None }
    }
}

impl SearchParams {
    /// The same search, `k` deep.
    pub fn with_k(&self, k: usize) -> Self {
        SearchParams { k, ..self.clone() }
    }

    /// The same search with the HNSW graph (or brute force when `exact`).
    pub fn with_exact(&self, exact: bool) -> Self {
        SearchParams { exact, ..self.clone() }
    }
}

/// A ranked item with its score (inner product, BM25 or fused, by mode).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub row: usize,
    pub score: f32,
}

/// Why an index without token vectors cannot re-rank.
pub const NO_TOKEN_EMBEDDINGS: &str = "the index stores no token embeddings: its model did not learn them (trained without FILIP's loss, loss.token_weight = 0, or imported) or it was built from given vectors, so re-ranking needs an index built from a model trained with that loss";

/// An opened index.
pub struct RetrievalIndex {
    pub dir: PathBuf,
    pub info: IndexInfo,
    pub items: Vec<Item>,
    pub texts: Vec<TextEntry>,
    pub image_vectors: VectorStore,
    pub text_vectors: VectorStore,
    pub(crate) image_graph: HnswIndex,
    pub(crate) text_graph: HnswIndex,
    pub captions: CaptionIndex,
    /// Per-image token embeddings, when the index stores them (f16).
    pub image_tokens: Option<VectorStore>,
    /// `live[row]` is false for a deleted item.
    pub(crate) live: Vec<bool>,
}

impl RetrievalIndex {
    /// Opens and checks every part; a missing, truncated, altered or foreign file is named.
    pub fn open(dir: &Path) -> Result<Self> {
        let info_path = dir.join("index.json");
        let text = std::fs::read_to_string(&info_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                IndexError::Corrupt {
                    path: info_path.display().to_string(),
                    message: "missing: not a vlp index, or its build did not finish".into(),
                }
            } else {
                IndexError::io(&info_path, e)
            }
        })?;
        let corrupt = |message: String| IndexError::Corrupt { path: info_path.display().to_string(), message };
        // the version first: another version's fields would give a parse error, not this message
        let value: Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        match value.get("version").and_then(Value::as_u64) {
            Some(v) if v == VERSION as u64 => {}
            Some(v) => return Err(corrupt(format!("index format version {v}, this vlp reads version {VERSION}; rebuild the index"))),
            None => return Err(corrupt("no format version: not a vlp index".into())),
        }
        let info: IndexInfo = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        // each checked file is read once: what is parsed is the bytes checksummed
        let mut verified = std::collections::HashMap::new();
        for f in CHECKED {
            let p = dir.join(f);
            let want = info
                .checksums
                .get(f)
                .ok_or_else(|| IndexError::Corrupt { path: info_path.display().to_string(), message: format!("no checksum for {f}") })?;
            if !p.is_file() {
                return Err(IndexError::Corrupt { path: p.display().to_string(), message: "missing".into() });
            }
            let bytes = std::fs::read(&p).map_err(|e| IndexError::io(&p, e))?;
            if &checksum_of(&bytes) != want {
                return Err(IndexError::Corrupt {
                    path: p.display().to_string(),
                    message: "checksum mismatch: changed or damaged since the build".into(),
                });
            }
            verified.insert(f, bytes);
        }
        let items: Vec<Item> = parse_jsonl(&dir.join("items.jsonl"), &verified["items.jsonl"])?;
        let texts: Vec<TextEntry> = parse_jsonl(&dir.join("texts.jsonl"), &verified["texts.jsonl"])?;
        let image_vectors = VectorStore::open(&dir.join("images.vec"))?;
        let text_vectors = VectorStore::open(&dir.join("texts.vec"))?;
        for (store, n) in [(&image_vectors, items.len()), (&text_vectors, texts.len())] {
            if store.len() != n || store.header.model != info.model || store.dim() != info.dim || store.precision() != info.precision {
                return Err(IndexError::Corrupt {
                    path: store.path.display().to_string(),
                    message: "does not belong with index.json (rows, model, width or precision differ)".into(),
                });
            }
        }
        let image_graph =
            HnswGraph::from_bytes(&verified["images.hnsw"], &dir.join("images.hnsw"), image_vectors.rows(), info.dim, info.hnsw)?
                .freeze(info.precision);
        let text_graph = HnswGraph::from_bytes(&verified["texts.hnsw"], &dir.join("texts.hnsw"), text_vectors.rows(), info.dim, info.hnsw)?
            .freeze(info.precision);
        drop(verified);
        let captions = CaptionIndex::open(&dir.join("captions"))?;
        let image_tokens = match info.image_tokens {
            Some([n, d]) => {
                let store = VectorStore::open(&dir.join("image_tokens.vec"))?;
                if store.len() != items.len() || store.dim() != n * d || store.header.model != info.model {
                    return Err(IndexError::Corrupt {
                        path: store.path.display().to_string(),
                        message: "does not belong with index.json".into(),
                    });
                }
                Some(store)
            }
            None => None,
        };
        let deleted: std::collections::HashSet<&str> = info.deleted.iter().map(String::as_str).collect();
        let live = items.iter().map(|it| !deleted.contains(it.id.as_str())).collect();
        Ok(RetrievalIndex {
            dir: dir.to_path_buf(),
            info,
            items,
            texts,
            image_vectors,
            text_vectors,
            image_graph,
            text_graph,
            captions,
            image_tokens,
            live,
        })
    }

    /// Whether item `row` is searched (not deleted).
    pub fn is_live(&self, row: usize) -> bool {
        self.live.get(row).copied().unwrap_or(false)
    }

    fn keep_items<'a>(&'a self, filters: &'a [Filter]) -> impl Fn(usize) -> bool + Sync + 'a {
        move |r| self.live[r] && filters.iter().all(|f| f.matches(&self.items[r]))
    }

    /// Images for a query embedding (text→image, or image→image), HNSW or exact, `p.k` deep,
    /// filtered by `p.filters`.
    pub fn dense_images(&self, query: &[f32], model: &str, p: &SearchParams) -> Result<Vec<Hit>> {
        self.image_vectors.check_query(model, query.len())?;
        let keep = self.keep_items(&p.filters);
        Ok(if p.exact {
            top_k(self.image_vectors.rows(), self.info.dim, query, p.k, &keep)
        } else if p.filters.is_empty() && self.info.deleted.is_empty() {
            self.image_graph.search(query, p.k, p.ef, None)
        } else {
            self.image_graph.search(query, p.k, p.ef, Some(&keep))
        })
    }

    /// Texts for a query embedding (image→text), HNSW or exact, `p.k` deep.
    pub fn dense_texts(&self, query: &[f32], model: &str, p: &SearchParams) -> Result<Vec<Hit>> {
        self.text_vectors.check_query(model, query.len())?;
        Ok(if p.exact {
            top_k(self.text_vectors.rows(), self.info.dim, query, p.k, &|_| true)
        } else {
            self.text_graph.search(query, p.k, p.ef, None)
        })
    }

    /// Re-scores candidate rows with FILIP's text→image similarity: the mean over the query's
    /// tokens (`[l, d]`, real tokens only, L2-normalised) of the best-matching image token.
    pub fn rerank_images(&self, rows: &[usize], query_tokens: &[f32], model: &str) -> Result<Vec<Ranked>> {
        let (store, [n, d]) = match (&self.image_tokens, self.info.image_tokens) {
            (Some(s), Some(shape)) => (s, shape),
            _ => return Err(IndexError::Invalid(format!("{}: {NO_TOKEN_EMBEDDINGS}", self.dir.display()))),
        };
        store.check_query(model, n * d)?;
        if query_tokens.is_empty() || !query_tokens.len().is_multiple_of(d) {
            return Err(IndexError::Invalid(format!("query tokens: {} values, not a multiple of the token width {d}", query_tokens.len())));
        }
        let mut tokens = Vec::new();
        let mut out: Vec<Ranked> = rows
            .iter()
            .map(|&row| {
                store.row_into(row, &mut tokens);
                Ranked { row, score: token_similarity(query_tokens, &tokens, d) }
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        Ok(out)
    }

    /// Images for a text query by `p.mode`: dense (needs `embedding`, the query's vector and
    /// the model that made it), BM25 over captions, or both fused. (`p.rerank` is the caller's.)
    pub fn text_to_images(&self, text: &str, embedding: Option<(&[f32], &str)>, p: &SearchParams) -> Result<Vec<Ranked>> {
        let k = p.k;
        let dense = |depth: usize| -> Result<Vec<Hit>> {
            let (q, model) = embedding.ok_or_else(|| IndexError::Invalid("dense search needs the query's embedding".into()))?;
            self.dense_images(q, model, &p.with_k(depth))
        };
        let keep = self.keep_items(&p.filters);
        match p.mode {
            Mode::Dense => Ok(dense(k)?.into_iter().map(|h| Ranked { row: h.row, score: h.score }).collect()),
            Mode::Bm25 => Ok(self.captions.search(text, k, &keep)?.into_iter().map(|(row, score)| Ranked { row, score }).collect()),
            Mode::Hybrid => {
                // fuse deeper lists than asked for, so an item ranked well by one list and
                // just below k by the other still counts
                let depth = (k * 4).max(50);
                let d: Vec<String> = dense(depth)?.iter().map(|h| h.row.to_string()).collect();
                let b: Vec<String> = self.captions.search(text, depth, &keep)?.iter().map(|h| h.0.to_string()).collect();
                Ok(reciprocal_rank_fusion(&[d, b], RRF_K)
                    .into_iter()
                    .take(k)
                    .map(|(row, s)| Ranked { row: row.parse().expect("row numbers"), score: s as f32 })
                    .collect())
            }
        }
    }
}

/// Mean over the rows of `query` (`[l, d]`) of the best inner product with a row of `doc`.
pub fn token_similarity(query: &[f32], doc: &[f32], d: usize) -> f32 {
    let l = query.len() / d;
    let best: f32 = query.chunks(d).map(|q| doc.chunks(d).map(|p| crate::exact::dot(q, p)).fold(f32::NEG_INFINITY, f32::max)).sum();
    best / l as f32
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn token_similarity_by_hand() {
        // query tokens (1,0) and (0,1); doc tokens (0.6,0.8), (1,0), (0,-1)
        let q = [1.0, 0.0, 0.0, 1.0];
        let doc = [0.6, 0.8, 1.0, 0.0, 0.0, -1.0];
        // best for (1,0) is 1.0, best for (0,1) is 0.8
        assert!((token_similarity(&q, &doc, 2) - 0.9).abs() < 1e-6);
    }

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    pub(crate) fn input(n: usize) -> BuildInput {
        let dim = 4;
        let mut items = Vec::new();
        let mut iv = Vec::new();
        let mut texts = Vec::new();
        let mut tv = Vec::new();
        for i in 0..n {
            let colour = ["red", "blue"][i % 2];
            let zh = ["红色", "蓝色"][i % 2];
            let v = unit(&[1.0 + (i % 2) as f32 * 3.0, (i as f32 * 0.7).sin(), (i as f32 * 1.3).cos(), 0.2]);
            let mut meta = Map::new();
            meta.insert("style".into(), Value::String(["google", "twitter"][i % 2].into()));
            items.push(Item {
                id: format!("img{i}"),
                image: format!("images/{i}.png"),
                captions: vec![
                    ItemText { text: format!("a {colour} thing {i}"), lang: Some("en".into()), field: None },
                    ItemText { text: format!("{zh}的东西"), lang: Some("zh".into()), field: None },
                ],
                meta,
            });
            iv.extend(&v);
            texts.push(TextEntry {
                id: format!("t{i}"),
                body: ItemText { text: format!("a {colour} thing {i}"), lang: Some("en".into()), field: None },
            });
            tv.extend(&v);
        }
        // two "tokens" per image: its own vector and its negation
        let tokens: Vec<f32> =
            iv.chunks(dim).flat_map(|v: &[f32]| v.iter().copied().chain(v.iter().map(|x: &f32| -*x)).collect::<Vec<f32>>()).collect();
        BuildInput {
            model: "m1".into(),
            dim,
            hnsw: HnswConfig::default(),
            items,
            image_vectors: iv,
            texts,
            text_vectors: tv,
            source: Map::new(),
            image_tokens: Some(([2, dim], tokens)),
            precision: Precision::F32,
        }
    }

    #[test]
    fn builds_opens_searches_every_way_and_refuses_damage() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("idx");
        build(&dir, input(200)).unwrap();
        let idx = RetrievalIndex::open(&dir).unwrap();
        let q = unit(&[1.0, 0.0, 1.0, 0.2]);
        let exact = idx.dense_images(&q, "m1", &SearchParams { k: 10, exact: true, ..Default::default() }).unwrap();
        let ann = idx.dense_images(&q, "m1", &SearchParams { k: 10, ef: Some(64), ..Default::default() }).unwrap();
        assert_eq!(exact.iter().map(|h| h.row).collect::<Vec<_>>(), ann.iter().map(|h| h.row).collect::<Vec<_>>());
        assert!(idx
            .dense_images(&q, "other-model", &SearchParams { k: 10, ..Default::default() })
            .unwrap_err()
            .to_string()
            .contains("other-model"));
        let twitter: Filter = "style=twitter".parse().unwrap();
        let f = idx.dense_images(&q, "m1", &SearchParams { k: 10, filters: vec![twitter], ..Default::default() }).unwrap();
        assert!(f.len() == 10 && f.iter().all(|h| h.row % 2 == 1));
        let bm25 = idx.text_to_images("蓝色", None, &SearchParams { k: 5, mode: Mode::Bm25, ..Default::default() }).unwrap();
        assert!(bm25.len() == 5 && bm25.iter().all(|r| r.row % 2 == 1));
        // hybrid = RRF of the two lists at depth 50, recomputed here by hand
        let hybrid = idx
            .text_to_images("thing 7", Some((&q, "m1")), &SearchParams { k: 5, exact: true, mode: Mode::Hybrid, ..Default::default() })
            .unwrap();
        let d = idx.text_to_images("", Some((&q, "m1")), &SearchParams { k: 50, exact: true, ..Default::default() }).unwrap();
        let b = idx.text_to_images("thing 7", None, &SearchParams { k: 50, mode: Mode::Bm25, ..Default::default() }).unwrap();
        assert_eq!(b[0].row, 7);
        let rrf = |row: usize| -> f32 {
            [&d, &b].iter().filter_map(|l| l.iter().position(|r| r.row == row)).map(|p| 1.0 / (61.0 + p as f32)).sum()
        };
        for r in &hybrid {
            assert!((r.score - rrf(r.row)).abs() < 1e-6, "{hybrid:?}");
        }
        assert!(hybrid.windows(2).all(|w| w[0].score >= w[1].score));
        assert!("nonsense".parse::<Filter>().is_err());
        // re-ranking a candidate list by token similarity: with the query itself as the only
        // token, each image's best token is its own vector, so the order is the exact order
        let rows: Vec<usize> = exact.iter().rev().map(|h| h.row).collect();
        let reranked = idx.rerank_images(&rows, &q, "m1").unwrap();
        assert_eq!(reranked.iter().map(|r| r.row).collect::<Vec<_>>(), exact.iter().map(|h| h.row).collect::<Vec<_>>());
        assert!("lang=zh".parse::<Filter>().unwrap().matches(&idx.items[0]));

        // damage, one file at a time: each is named
        for f in ["images.hnsw", "items.jsonl", "images.vec", "index.json", "image_tokens.vec"] {
            let p = dir.join(f);
            let good = std::fs::read(&p).unwrap();
            std::fs::write(&p, &good[..good.len() / 2]).unwrap();
            let e = RetrievalIndex::open(&dir).err().unwrap_or_else(|| panic!("{f} accepted")).to_string();
            assert!(e.contains(f), "{f}: {e}");
            std::fs::write(&p, &good).unwrap();
        }
        // an index or vector store of an earlier format is refused with a message to rebuild
        let info_path = dir.join("index.json");
        let good = std::fs::read(&info_path).unwrap();
        let mut old: Value = serde_json::from_slice(&good).unwrap();
        old["version"] = 2.into();
        old["checksums"] = "another shape".into();
        std::fs::write(&info_path, serde_json::to_vec(&old).unwrap()).unwrap();
        let e = RetrievalIndex::open(&dir).err().unwrap().to_string();
        assert!(e.contains("index format version 2") && e.contains("rebuild"), "{e}");
        std::fs::write(&info_path, &good).unwrap();
        let vec_path = dir.join("images.vec");
        let good = std::fs::read(&vec_path).unwrap();
        std::fs::write(&vec_path, [b"VLPVEC01".as_slice(), &good[8..]].concat()).unwrap();
        let e = VectorStore::open(&vec_path).err().unwrap().to_string();
        assert!(e.contains("images.vec") && e.contains("earlier vlp"), "{e}");
        std::fs::write(&vec_path, &good).unwrap();
        RetrievalIndex::open(&dir).unwrap();

        std::fs::remove_file(dir.join("texts.hnsw")).unwrap();
        assert!(RetrievalIndex::open(&dir).err().unwrap().to_string().contains("texts.hnsw"));
    }

    #[test]
    fn a_failed_rebuild_keeps_the_old_index() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("idx");
        build(&dir, input(20)).unwrap();
        let mut bad = input(20);
        bad.image_vectors.pop(); // wrong length: the build fails part way
        assert!(build(&dir, bad).is_err());
        assert_eq!(RetrievalIndex::open(&dir).unwrap().items.len(), 20);
    }

    #[test]
    fn half_precision_vectors_are_searched_as_stored() {
        let (n, dim) = (1500, 32);
        let mut all = input(n);
        let mut v: Vec<f32> = (0..n * dim).map(|i| ((i * 7919 % 10007) as f32 * 0.61).sin()).collect();
        for row in v.chunks_mut(dim) {
            let u = unit(row);
            row.copy_from_slice(&u);
        }
        all.dim = dim;
        all.image_vectors = v.clone();
        all.text_vectors = v.clone();
        all.image_tokens = None;
        let root = tempfile::tempdir().unwrap();
        let (full, half) = (root.path().join("f32"), root.path().join("f16"));
        build(&full, crate::update::tests::head(&all, n)).unwrap();
        all.precision = Precision::F16;
        let (first, rest) = (1200, n - 1200);
        build(&half, crate::update::tests::head(&all, first)).unwrap();
        // an addition keeps the index's precision
        let added = RetrievalIndex::open(&half).unwrap().add(crate::update::tests::tail(&all, first)).unwrap();
        assert_eq!((added.items, added.info.precision), (rest, Precision::F16));
        let size = |d: &Path| std::fs::metadata(d.join("images.vec")).unwrap().len() as usize;
        assert!(size(&full) - size(&half) >= n * dim * 2, "{} {}", size(&full), size(&half));

        let idx = RetrievalIndex::open(&half).unwrap();
        assert_eq!(idx.info.precision, Precision::F16);
        // the stored values are the f16 roundings of the vectors
        let rounded: Vec<f64> = v.iter().map(|x| half::f16::from_f32(*x).to_f32() as f64).collect();
        assert_eq!(idx.image_vectors.row_vec(1234), rounded[1234 * dim..1235 * dim].iter().map(|x| *x as f32).collect::<Vec<_>>());
        let (mut found, mut own_first) = (0, 0);
        let queries = 100;
        for qi in 0..queries {
            let q: Vec<f32> = v[qi * 13 * dim..(qi * 13 + 1) * dim].to_vec();
            // ground truth: plain f64 loops over the rounded rows
            let mut truth: Vec<(f64, usize)> =
                (0..n).map(|r| (-(0..dim).map(|k| q[k] as f64 * rounded[r * dim + k]).sum::<f64>(), r)).collect();
            truth.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want: Vec<usize> = truth[..10].iter().map(|t| t.1).collect();
            let exact = idx.dense_images(&q, "m1", &SearchParams { k: 10, exact: true, ..Default::default() }).unwrap();
            assert_eq!(exact.iter().map(|h| h.row).collect::<Vec<_>>(), want, "query {qi}");
            for (h, t) in exact.iter().zip(&truth) {
                assert!((h.score as f64 + t.0).abs() < 1e-5);
            }
            let ann = idx.dense_images(&q, "m1", &SearchParams { k: 10, ..Default::default() }).unwrap();
            found += ann.iter().filter(|h| want.contains(&h.row)).count();
            let texts = idx.dense_texts(&q, "m1", &SearchParams { k: 10, ..Default::default() }).unwrap();
            own_first += (texts[0].row == qi * 13) as usize;
        }
        let recall = found as f64 / (10 * queries) as f64;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // the graph is built in parallel, so which near-ties an approximate search misses varies
        // from build to build (one query in 100 missed its own row now and then when this asked
        // for all of them)
        assert!(own_first >= queries * 95 / 100, "{own_first} of {queries} texts found their own row first");
    }
}
