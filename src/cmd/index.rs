//! `vlp index build | add | delete | check | bench | export` and `vlp search`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use vlp_embed::checkpoint::{model_identity, Encoder};
use vlp_embed::corpus::{embed_corpus, Tokens};
use vlp_index::ann::{HnswConfig, HnswGraph};
use vlp_index::catalog::{self, BuildInput, Filter, Item, Mode, RetrievalIndex, SearchParams};
use vlp_index::exact::top_k;
use vlp_index::npy;
use vlp_index::store::Precision;
use vlp_serve::{OpenError, Query, SearchRequest, Searcher, Side};

type Cpu = burn::backend::Flex;

#[derive(Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(Args, Clone, Copy)]
pub struct HnswArgs {
    /// HNSW links per node (hnswlib's M).
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Candidates kept while searching (the default stored in the index).
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
}

impl From<HnswArgs> for HnswConfig {
    fn from(a: HnswArgs) -> Self {
        HnswConfig { m: a.m, ef_construction: a.ef_construction, ef_search: a.ef_search }
    }
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Embed a data split with a checkpoint and index images, texts and captions; or index
    /// vectors embedded elsewhere (`--vectors`).
    Build {
        #[arg(long, required_unless_present = "vectors", requires = "data")]
        checkpoint: Option<PathBuf>,
        /// A built data set directory, or any input (shards, manifest, CSV).
        #[arg(long, conflicts_with = "vectors")]
        data: Option<String>,
        /// Item vectors as a float32 .npy `[rows, dim]` (from FAISS, a vector database,
        /// `vlp index export`, `ann_bench.py`): indexed by inner product, rows normalised.
        #[arg(long)]
        vectors: Option<PathBuf>,
        /// One id per line for `--vectors` (default: the row numbers).
        #[arg(long, requires = "vectors")]
        ids: Option<PathBuf>,
        /// The name of the model that made `--vectors`; queries must name the same (default:
        /// `npy:` and a hash of the file).
        #[arg(long, requires = "vectors")]
        model: Option<String>,
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        hnsw: HnswArgs,
        /// How the global vectors are stored and searched: f16 halves the vector files and the
        /// graphs' memory, at f16's rounding (11 significant bits).
        #[arg(long, default_value = "f32")]
        precision: Precision,
        #[command(flatten)]
        on: super::EmbedOn,
    },
    /// Embed more items (any input) with the index's checkpoint and insert them into its graphs,
    /// without a rebuild. Ids already in the index are refused.
    Add {
        #[arg(long)]
        index: PathBuf,
        #[arg(long)]
        data: String,
        #[arg(long, default_value = "test")]
        split: String,
        /// The checkpoint (default: the one the index was built with; it must be the same model).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        on: super::EmbedOn,
    },
    /// Delete items by id: they stay in the files and are never returned again.
    Delete {
        #[arg(long)]
        index: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Recall@10 of HNSW against exact search on sampled queries, text→image and image→text.
    Check {
        #[arg(long)]
        index: PathBuf,
        #[arg(long, default_value_t = 500)]
        queries: usize,
        #[arg(long)]
        ef: Option<usize>,
    },
    /// Build HNSW over `--base` vectors (.npy, as `ann_bench.py` writes them) and print build
    /// time, or open a built `--index`; then recall@10 and single-thread queries/s per ef, on
    /// the same queries and ground truth as the peers.
    Bench {
        #[arg(long, required_unless_present = "index", conflicts_with = "index")]
        base: Option<PathBuf>,
        /// An index (e.g. `index build --vectors base.npy`) whose item rows are the base.
        #[arg(long)]
        index: Option<PathBuf>,
        #[arg(long)]
        queries: PathBuf,
        #[arg(long)]
        gt: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
        ef: Vec<usize>,
        /// Threads for the build (queries always run on one).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[command(flatten)]
        hnsw: HnswArgs,
    },
    /// Write an index's vectors as .npy with their ids (one per line), for FAISS or a vector database.
    Export {
        #[arg(long)]
        index: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: IndexArgs) -> Result<()> {
    match a.command {
        IndexCommand::Build { checkpoint, data, vectors, ids, model, split, out, hnsw, precision, on } => match (checkpoint, data, vectors)
        {
            (Some(checkpoint), Some(data), None) => {
                super::on_device!(on.device, |B, device| build::<B>(&checkpoint, &data, &split, &out, hnsw.into(), precision, on, &device))
            }
            (None, None, Some(vectors)) => build_from_vectors(&vectors, ids.as_deref(), model, &out, hnsw.into(), precision),
            _ => bail!("give --checkpoint RUN --data DATA, or --vectors X.npy"),
        },
        IndexCommand::Add { index, data, split, checkpoint, on } => {
            super::on_device!(on.device, |B, device| add::<B>(&index, checkpoint.as_deref(), &data, &split, on, &device))
        }
        IndexCommand::Delete { index, ids } => delete(&index, &ids),
        IndexCommand::Check { index, queries, ef } => check(&index, queries, ef),
        IndexCommand::Bench { base, index, queries, gt, ef, threads, hnsw } => {
            let base = match (base, index) {
                (Some(b), _) => BenchBase::Vectors(b, threads, hnsw.into()),
                (None, Some(i)) => BenchBase::Index(i),
                (None, None) => bail!("give --base X.npy or --index DIR"),
            };
            bench(base, &queries, &gt, &ef)
        }
        IndexCommand::Export { index, out } => export(&index, &out),
    }
}

#[allow(clippy::too_many_arguments)]
fn build<B: burn::tensor::backend::Backend>(
    checkpoint: &Path,
    data: &str,
    split: &str,
    out: &Path,
    hnsw: HnswConfig,
    precision: Precision,
    on: super::EmbedOn,
    device: &B::Device,
) -> Result<()> {
    let started = Instant::now();
    let enc = Encoder::<B>::load(checkpoint, device).with_context(|| format!("loading {}", checkpoint.display()))?;
    let (mut input, skipped) = embed_corpus(&enc, data, split, hnsw, on.images_per_batch(), Tokens::if_learnt(&enc), device)?;
    input.precision = precision;
    let embedded_at = started.elapsed().as_secs_f64();
    let info = catalog::build(out, input)?;
    eprint!("{}", skipped.summary());
    println!(
        "{}",
        json!({"index": out.display().to_string(), "items": info.items, "texts": info.texts, "skipped": skipped.total(),
               "dim": info.dim, "precision": info.precision, "model": info.model, "embed_s": embedded_at, "total_s": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Indexes vectors made elsewhere: items with ids and nothing else (no texts, no captions), so
/// they are searched by embedding (`vlp search --vector`, `POST /v1/search` with `embedding`).
fn build_from_vectors(
    vectors: &Path,
    ids: Option<&Path>,
    model: Option<String>,
    out: &Path,
    hnsw: HnswConfig,
    precision: Precision,
) -> Result<()> {
    let started = Instant::now();
    let bytes = std::fs::read(vectors).with_context(|| format!("reading {}", vectors.display()))?;
    let mut m = npy::read_f32(vectors)?;
    if m.rows == 0 || m.cols == 0 {
        bail!("{}: no vectors ({}×{})", vectors.display(), m.rows, m.cols);
    }
    let mut normalised = 0usize;
    for (r, row) in m.data.chunks_mut(m.cols).enumerate() {
        let norm = row.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            bail!("{}: row {r} has norm {norm}: zero, NaN or infinite vectors cannot be searched by inner product", vectors.display());
        }
        // every row, so that copies at different scales become the same vector
        row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        normalised += usize::from((norm - 1.0).abs() > 1e-3);
    }
    let ids: Vec<String> = match ids {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let ids: Vec<String> = text.lines().map(str::to_string).collect();
            if ids.len() != m.rows {
                bail!("{}: {} ids for {} rows of {}", p.display(), ids.len(), m.rows, vectors.display());
            }
            let mut seen = std::collections::HashSet::new();
            if let Some((i, dup)) = ids.iter().enumerate().find(|(_, id)| id.is_empty() || !seen.insert(id.as_str())) {
                bail!("{}:{}: id {dup:?} is empty or repeated; ids must be unique", p.display(), i + 1);
            }
            ids
        }
        None => (0..m.rows).map(|r| r.to_string()).collect(),
    };
    let model = model.unwrap_or_else(|| format!("npy:{}", vlp_index::checksum::identity(&[&bytes])));
    let items = ids.into_iter().map(|id| Item { id, image: String::new(), captions: Vec::new(), meta: Map::new() }).collect();
    let mut source = Map::new();
    source.insert("vectors".into(), json!(vectors.display().to_string()));
    let input = BuildInput {
        model,
        dim: m.cols,
        hnsw,
        items,
        image_vectors: m.data,
        texts: Vec::new(),
        text_vectors: Vec::new(),
        source,
        image_tokens: None,
        precision,
    };
    let info = catalog::build(out, input)?;
    println!(
        "{}",
        json!({"index": out.display().to_string(), "items": info.items, "dim": info.dim, "precision": info.precision, "model": info.model,
               "normalised_rows": normalised, "total_s": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

/// Embeds more items with the index's own checkpoint and inserts them without a rebuild.
fn add<B: burn::tensor::backend::Backend>(
    index: &Path,
    checkpoint: Option<&Path>,
    data: &str,
    split: &str,
    on: super::EmbedOn,
    device: &B::Device,
) -> Result<()> {
    let started = Instant::now();
    let idx = RetrievalIndex::open(index)?;
    let ck = checkpoint.map(Path::to_path_buf).or_else(|| idx.info.source.get("checkpoint").and_then(Value::as_str).map(PathBuf::from));
    let ck = ck.context("the index records no checkpoint: pass --checkpoint")?;
    let enc = Encoder::<B>::load(&ck, device).with_context(|| format!("loading {}", ck.display()))?;
    let tokens = if idx.info.image_tokens.is_some() { Tokens::Store } else { Tokens::Skip };
    let (input, skipped) = embed_corpus(&enc, data, split, idx.info.hnsw, on.images_per_batch(), tokens, device)?;
    let added = idx.add(input)?;
    eprint!("{}", skipped.summary());
    println!(
        "{}",
        json!({"index": index.display().to_string(), "added_items": added.items, "added_texts": added.texts,
               "texts_already_present": added.texts_already_present, "items": added.info.items, "texts": added.info.texts,
               "skipped": skipped.total(), "total_s": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

fn delete(index: &Path, ids: &[String]) -> Result<()> {
    let idx = RetrievalIndex::open(index)?;
    let unknown = idx.delete(ids)?;
    if !unknown.is_empty() {
        eprintln!("not in the index (nothing done): {}", unknown.join(", "));
    }
    println!("{}", json!({"index": index.display().to_string(), "deleted": ids.len() - unknown.len(), "unknown": unknown}));
    Ok(())
}

fn sample_rows(n: usize, want: usize) -> Vec<usize> {
    let step = (n as f64 / want.max(1) as f64).max(1.0);
    (0..want.min(n)).map(|i| (i as f64 * step) as usize).collect()
}

fn check(dir: &Path, queries: usize, ef: Option<usize>) -> Result<()> {
    let idx = RetrievalIndex::open(dir)?;
    let model = idx.info.model.clone();
    let params = SearchParams { k: 10, ef, ..Default::default() };
    let mut report = Map::new();
    for (name, q_store, docs) in [("text_to_image", &idx.text_vectors, true), ("image_to_text", &idx.image_vectors, false)] {
        let rows = sample_rows(q_store.len(), queries);
        let (mut hit, mut by_id, mut total) = (0usize, 0usize, 0usize);
        for &r in &rows {
            let q = &q_store.row_vec(r);
            let (exact, ann) = if docs {
                (idx.dense_images(q, &model, &params.with_exact(true))?, idx.dense_images(q, &model, &params)?)
            } else {
                (idx.dense_texts(q, &model, &params.with_exact(true))?, idx.dense_texts(q, &model, &params)?)
            };
            // A result that ties the exact 10th score is a true neighbour even when exact search
            // broke the tie for another row (ann-benchmarks counts by distance for this reason):
            // an index of duplicated images is all ties.
            let kth = exact.last().map_or(f32::INFINITY, |e| e.score);
            hit += ann.iter().filter(|h| h.score >= kth - 1e-5 || exact.iter().any(|e| e.row == h.row)).count();
            by_id += ann.iter().filter(|h| exact.iter().any(|e| e.row == h.row)).count();
            total += exact.len();
        }
        report.insert(
            name.into(),
            json!({"queries": rows.len(), "recall_at_10": hit as f64 / total.max(1) as f64, "recall_at_10_same_ids": by_id as f64 / total.max(1) as f64}),
        );
    }
    report.insert("ef_search".into(), json!(ef.unwrap_or(idx.info.hnsw.ef_search)));
    println!("{}", Value::Object(report));
    Ok(())
}

enum BenchBase {
    /// Build over these vectors with this many threads.
    Vectors(PathBuf, usize, HnswConfig),
    /// A built index's item rows.
    Index(PathBuf),
}

fn bench(base: BenchBase, queries: &Path, gt: &Path, efs: &[usize]) -> Result<()> {
    let q = npy::read_f32(queries)?;
    let g = npy::read_ints(gt)?;
    if g.rows != q.rows || g.cols < 10 {
        bail!("shapes: queries {}×{}, gt {}×{} (gt needs ≥ 10 columns, one row per query)", q.rows, q.cols, g.rows, g.cols);
    }
    // every search runs on this (one) thread
    let search: Box<dyn Fn(&[f32], usize) -> Result<Vec<usize>>> = match base {
        BenchBase::Vectors(path, threads, cfg) => {
            let b = npy::read_f32(&path)?;
            if q.cols != b.cols {
                bail!("shapes: base {}×{}, queries {}×{}", b.rows, b.cols, q.rows, q.cols);
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
            let t0 = Instant::now();
            let graph = pool.install(|| HnswGraph::build(&b.data, b.cols, cfg));
            let build_s = t0.elapsed().as_secs_f64();
            let nodes = graph.nodes();
            let t1 = Instant::now();
            let index = graph.freeze(Precision::F32);
            let freeze_s = t1.elapsed().as_secs_f64();
            let peak = super::bench::peak_rss_mib();
            println!(
                "{}",
                json!({"peer": "vlp", "rows": b.rows, "nodes": nodes, "dim": b.cols, "m": cfg.m, "ef_construction": cfg.ef_construction,
                       "threads": threads, "build_s": build_s, "freeze_s": freeze_s, "peak_rss_mb": peak})
            );
            // exact search on the same machine, as the floor
            let t = Instant::now();
            let shown = q.rows.min(200);
            for query in q.data.chunks(q.cols).take(shown) {
                let _ = pool.install(|| top_k(&b.data, b.cols, query, 10, &|_| true));
            }
            println!("{}", json!({"peer": "vlp-exact", "qps": shown as f64 / t.elapsed().as_secs_f64(), "threads": threads}));
            Box::new(move |query, ef| Ok(index.search(query, 10, Some(ef), None).iter().map(|h| h.row).collect()))
        }
        BenchBase::Index(dir) => {
            let t0 = Instant::now();
            let idx = RetrievalIndex::open(&dir)?;
            println!(
                "{}",
                json!({"peer": "vlp", "index": dir.display().to_string(), "rows": idx.items.len(), "dim": idx.info.dim, "precision": idx.info.precision,
                       "open_s": t0.elapsed().as_secs_f64(), "peak_rss_mb": super::bench::peak_rss_mib(), "rss_mb": super::bench::rss_mib()})
            );
            let model = idx.info.model.clone();
            Box::new(move |query, ef| {
                let params = SearchParams { k: 10, ef: Some(ef), ..Default::default() };
                Ok(idx.dense_images(query, &model, &params)?.iter().map(|h| h.row).collect())
            })
        }
    };
    // one untimed pass first, then each ef timed three times: the median (and best) pass, as
    // the peer script reports them
    for query in q.data.chunks(q.cols) {
        search(query, efs.first().copied().unwrap_or(64))?;
    }
    for &ef in efs {
        let mut passes = Vec::new();
        let mut hit = 0usize;
        for _ in 0..3 {
            let t = Instant::now();
            hit = 0;
            for (i, query) in q.data.chunks(q.cols).enumerate() {
                let found = search(query, ef)?;
                let truth = &g.data[i * g.cols..i * g.cols + 10];
                hit += found.iter().filter(|&&r| truth.contains(&(r as i64))).count();
            }
            passes.push(t.elapsed().as_secs_f64());
        }
        passes.sort_by(f64::total_cmp);
        println!(
            "{}",
            json!({"peer": "vlp", "ef": ef, "recall_at_10": hit as f64 / (10 * q.rows) as f64, "qps": q.rows as f64 / passes[1], "qps_best": q.rows as f64 / passes[0]})
        );
    }
    Ok(())
}

fn export(dir: &Path, out: &Path) -> Result<()> {
    let idx = RetrievalIndex::open(dir)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, store) in [("images", &idx.image_vectors), ("texts", &idx.text_vectors)] {
        npy::write_f32(&out.join(format!("{name}.npy")), store.len(), store.dim(), &store.to_f32())?;
        vlp_atomic::write(&out.join(format!("{name}.ids.txt")), (store.ids.join("\n") + "\n").as_bytes())?;
    }
    println!("{}", json!({"out": out.display().to_string(), "images": idx.items.len(), "texts": idx.texts.len(), "model": idx.info.model}));
    Ok(())
}

#[derive(Args)]
pub struct SearchArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// A text query (English or Chinese): finds images.
    #[arg(long, conflicts_with_all = ["image", "vector"])]
    pub text: Option<String>,
    /// A query vector embedded elsewhere: row `--row` of a float32 .npy; finds images (items).
    #[arg(long, conflicts_with = "image")]
    pub vector: Option<PathBuf>,
    #[arg(long, default_value_t = 0, requires = "vector")]
    pub row: usize,
    /// An image file: finds texts (captions), and with --images, images.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    #[arg(long, value_enum, default_value = "dense")]
    pub mode: SearchMode,
    /// Only items whose metadata FIELD equals VALUE (lang=zh, style=google); repeatable.
    #[arg(long)]
    pub filter: Vec<String>,
    /// HNSW candidates (default: the index's ef_search).
    #[arg(long)]
    pub ef: Option<usize>,
    /// Exact (brute-force) search instead of HNSW.
    #[arg(long)]
    pub exact: bool,
    /// Re-rank the top K candidates of a text query with the token-level (FILIP) similarity
    /// against the stored image tokens.
    #[arg(long)]
    pub rerank: Option<usize>,
    /// For an image query, search images instead of texts.
    #[arg(long)]
    pub images: bool,
    #[arg(long)]
    pub json: bool,
    /// The checkpoint that embeds the query (default: the one the index was built with).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SearchMode {
    Dense,
    Bm25,
    Hybrid,
}

pub fn search(a: SearchArgs) -> Result<()> {
    let started = Instant::now();
    let filters: Vec<Filter> = a.filter.iter().map(|f| f.parse()).collect::<std::result::Result<_, _>>()?;
    let mode = match a.mode {
        SearchMode::Dense => Mode::Dense,
        SearchMode::Bm25 => Mode::Bm25,
        SearchMode::Hybrid => Mode::Hybrid,
    };
    let (query, side) = match (&a.text, &a.image) {
        (Some(text), _) => (Query::Text(text.clone()), Side::Images),
        (None, None) if a.vector.is_some() => {
            let path = a.vector.as_ref().expect("checked");
            let m = npy::read_f32(path)?;
            if a.row >= m.rows {
                bail!("{}: row {} asked for, the file has {} rows", path.display(), a.row, m.rows);
            }
            (Query::Embedding(m.data[a.row * m.cols..(a.row + 1) * m.cols].to_vec()), Side::Images)
        }
        (None, Some(path)) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (Query::Image(bytes), if a.images { Side::Images } else { Side::Texts })
        }
        (None, None) => bail!("give --text \"...\", --image PATH or --vector Q.npy"),
    };
    // BM25 alone needs no model: the checkpoint is loaded only when the query must be embedded
    let needs_model =
        !(matches!(query, Query::Embedding(_)) || matches!(query, Query::Text(_)) && mode == Mode::Bm25 && a.rerank.is_none());
    let searcher = open_searcher(&a.index, a.checkpoint.as_deref(), needs_model)?;
    let loaded = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let request = SearchRequest { query, side, params: SearchParams { k: a.k, ef: a.ef, exact: a.exact, filters, mode, rerank: a.rerank } };
    let results = searcher
        .search(&request)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.image.as_ref().map_or(String::from("query"), |p| p.display().to_string())))?;
    let search_s = t.elapsed().as_secs_f64();
    if a.json {
        println!("{}", json!({"results": results, "load_s": loaded, "search_s": search_s}));
    } else {
        for (i, r) in results.iter().enumerate() {
            let label = r.get("caption").or_else(|| r.get("text")).and_then(Value::as_str).unwrap_or("");
            println!("{:>3}. {:<28} {:>8.4}  {label}", i + 1, r["id"].as_str().unwrap_or(""), r["score"].as_f64().unwrap_or(0.0));
        }
        eprintln!("({} results; index and model loaded in {loaded:.2}s, query answered in {:.1} ms)", results.len(), search_s * 1e3);
    }
    Ok(())
}

/// Opens an index with the checkpoint that embeds its queries (by default the one it was built
/// with); without `with_model`, only the index.
pub fn open_searcher(index: &Path, checkpoint: Option<&Path>, with_model: bool) -> Result<Searcher<Cpu>> {
    let device = Default::default();
    if !with_model {
        let idx = RetrievalIndex::open(index)?;
        let model = idx.info.model.clone();
        return Ok(Searcher::new(idx, None, model, device));
    }
    let identity = |dir: &Path| model_identity(dir).map_err(|e| std::io::Error::other(e.to_string()));
    Searcher::open(index, checkpoint, identity, device).map_err(|e| match e {
        OpenError::Checkpoint { .. } => anyhow::anyhow!("{e} (pass --checkpoint)"),
        e => e.into(),
    })
}
