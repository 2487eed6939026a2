//! The streaming filter: read pairs, drop the unreadable, too small and wrong-language ones,
//! score the rest with a dual encoder, drop those below the threshold and near-duplicate images,
//! write what is kept.
//!
//! Work is cut into parts: one part per input shard, or `part_rows` rows of a manifest or table.
//! A part's output is renamed into place first, then its statistics are written to
//! `OUT/.vlp-filter/part-NNNNNN.json`; a part counts as done only when both exist. `--resume`
//! skips the done parts (their rows are read past, not scored) and redoes the one that was cut
//! off, so no pair is scored twice into the output or lost.

use crate::output::{self, Format, NoSink, PartSink, RowSink, ShardSink};
use crate::report::{self, DropReason, Example, FilterReport, PartStats, ScoreSummary, TruthBins, TruthReport};
use crate::{write_atomic, CurateError, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vlp_data::image_pipeline::{crop_resize, decode, normalize_into, to_rgb_on_white, Augment, ImageConfig};
use vlp_data::source::{self, InputKind, ReadOptions, SourceItem};
use vlp_data::{Caption, Sample};
use vlp_embed::checkpoint::Encoder;
use vlp_embed::embed::{rows, text_tensors};
use vlp_index::ann::{HnswConfig, HnswGraph};

/// What to keep. The defaults keep every readable pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilterOptions {
    /// Captions whose cosine similarity with their image is below this are dropped; a pair with
    /// no caption left is dropped as `low_score`.
    pub min_score: f32,
    /// Images whose cosine similarity with an image kept earlier is at least this are dropped.
    pub dedup: Option<f32>,
    /// Images whose shorter side is below this many pixels are dropped.
    pub min_side: u32,
    /// Keep only captions in these languages (`en`, `zh`; `zh` also takes `zh-Hant`); empty = all.
    /// A caption without a language tag is taken as `zh` if it holds CJK characters, else `en`.
    pub langs: Vec<String>,
    /// Score and report, write no pairs.
    pub dry_run: bool,
    /// Rows per part for manifests and tables.
    pub part_rows: usize,
    /// A boolean metadata field that marks known-bad pairs: the report then measures the filter
    /// as a detector of them (precision and recall across thresholds).
    pub truth_field: Option<String>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions { min_score: -1.0, dedup: None, min_side: 0, langs: Vec::new(), dry_run: false, part_rows: 10_000, truth_field: None }
    }
}

/// Batch sizes and the de-duplication index's parameters: how, not what.
#[derive(Debug, Clone)]
pub struct Execution {
    pub batch: usize,
    pub read: ReadOptions,
    pub hnsw: HnswConfig,
    pub resume: bool,
}

impl Default for Execution {
    fn default() -> Self {
        Execution { batch: 64, read: ReadOptions::default(), hnsw: HnswConfig::default(), resume: false }
    }
}

/// What a run was started with; a resumed run must match it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RunRecord {
    input: String,
    format: String,
    model: String,
    options: FilterOptions,
}

const STATE_DIR: &str = ".vlp-filter";

/// Filters `input` into `out` and writes `out/report.json` and `out/scores.png`.
/// `model` identifies the encoder's weights (a resumed run must use the same); `progress` is
/// called with the number of pairs read after each batch.
#[allow(clippy::too_many_arguments)]
pub fn filter<B: Backend>(
    enc: &Encoder<B>,
    model: &str,
    device: &B::Device,
    input: &str,
    split: Option<&str>,
    out: &Path,
    opts: &FilterOptions,
    exec: &Execution,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FilterReport> {
    if let Some(t) = opts.dedup {
        if !(-1.0..=1.0).contains(&t) {
            return Err(CurateError::Invalid(format!("--dedup {t}: a cosine similarity threshold lies in [-1, 1]")));
        }
    }
    let kind = InputKind::detect(input, split)?;
    let format = match &kind {
        InputKind::WebDataset(_) => Format::WebDataset,
        InputKind::Jsonl(_) => Format::Jsonl,
        InputKind::Csv(p) => Format::Csv { separator: source::csv_separator(p, &exec.read.csv) },
    };
    refuse_overwriting_input(&kind, out)?;
    let state = out.join(STATE_DIR);
    let record = RunRecord { input: input.to_string(), format: format.name().into(), model: model.to_string(), options: opts.clone() };
    let done = open_state(&state, &record, exec.resume)?;
    let mut run = Run::new(enc, device, opts, exec, progress);
    for stats in &done {
        run.total.merge(stats);
    }
    if let Some(t) = opts.dedup {
        run.dedup = Some(Dedup::restore(&state, &done, enc.config.model.embed_dim, t, exec.hnsw)?);
    }
    let mut outputs = Vec::new();
    let parts = match &kind {
        InputKind::WebDataset(shards) => {
            let names = shard_names(shards)?;
            for (i, (shard, name)) in shards.iter().zip(&names).enumerate() {
                let dest = out.join(name);
                if done.iter().any(|d| d.part == i) {
                    outputs.push(dest);
                    continue;
                }
                let sink: Box<dyn PartSink> = if opts.dry_run { Box::new(NoSink) } else { Box::new(ShardSink::new(&dest)?) };
                let items = source::open_kind(InputKind::WebDataset(vec![shard.clone()]), &exec.read)?;
                run.part(&state, i, name, items, sink)?;
                outputs.push(dest);
            }
            shards.len()
        }
        InputKind::Jsonl(path) | InputKind::Csv(path) => {
            let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let (columns, image_col, caption_col) = match format {
                Format::Csv { separator } => (csv_columns(path, separator)?, exec.read.csv.image.clone(), exec.read.csv.caption.clone()),
                _ => (Vec::new(), String::new(), String::new()),
            };
            let ext = if matches!(format, Format::Jsonl) { "jsonl" } else { "csv" };
            let mut items = source::open_kind(kind.clone(), &exec.read)?.peekable();
            let mut part_files = Vec::new();
            let mut i = 0;
            while items.peek().is_some() {
                let rows = (&mut items).take(opts.part_rows.max(1));
                let file = state.join(format!("part-{i:06}.{ext}"));
                if done.iter().any(|d| d.part == i) {
                    rows.for_each(drop);
                } else {
                    let name = format!("rows {}..{}", i * opts.part_rows, (i + 1) * opts.part_rows);
                    let sink: Box<dyn PartSink> = if opts.dry_run {
                        Box::new(NoSink)
                    } else {
                        Box::new(RowSink::new(format, &base, &columns, &image_col, &caption_col, &file)?)
                    };
                    run.part(&state, i, &name, rows, sink)?;
                }
                part_files.push(file);
                i += 1;
            }
            if !opts.dry_run {
                let file_name = match split.filter(|_| Path::new(input).is_dir()) {
                    Some(s) => format!("{s}.jsonl"),
                    None => path.file_name().and_then(|n| n.to_str()).unwrap_or("kept.jsonl").to_string(),
                };
                let dest = out.join(file_name);
                let header = match format {
                    Format::Csv { separator } => Some(output::csv_header(&columns, separator)),
                    _ => None,
                };
                output::concatenate(&part_files, header.as_deref(), &dest)?;
                outputs.push(dest);
            }
            i
        }
    };
    let report = run.report(&record, &enc.dir, parts, done.len(), outputs);
    write_report(out, &report, &run.total)?;
    Ok(report)
}

/// The state of one run in progress.
struct Run<'a, B: Backend> {
    enc: &'a Encoder<B>,
    device: &'a B::Device,
    opts: &'a FilterOptions,
    exec: &'a Execution,
    image_cfg: ImageConfig,
    progress: &'a (dyn Fn(u64) + Sync),
    dedup: Option<Dedup>,
    total: PartStats,
}

/// One sample ready to encode, or why it cannot be.
type Decoded = std::result::Result<Vec<f32>, (DropReason, String)>;

impl<'a, B: Backend> Run<'a, B> {
    fn new(
        enc: &'a Encoder<B>,
        device: &'a B::Device,
        opts: &'a FilterOptions,
        exec: &'a Execution,
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> Self {
        let image_cfg = enc.config.image_config();
        Run { enc, device, opts, exec, image_cfg, progress, dedup: None, total: PartStats::default() }
    }

    fn part(
        &mut self,
        state: &Path,
        index: usize,
        name: &str,
        items: impl Iterator<Item = SourceItem>,
        mut sink: Box<dyn PartSink>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut stats = PartStats::new(index, name);
        if self.opts.truth_field.is_some() {
            stats.truth = Some(TruthBins::default());
        }
        let kept_before = self.dedup.as_ref().map_or(0, |d| d.keys.len());
        let mut batch = Vec::with_capacity(self.exec.batch);
        for item in items {
            stats.seen += 1;
            match item {
                Err(skip) => stats
                    .drop_pair(DropReason::Unreadable(skip.reason), Example::new(&skip.location, &skip.location, "", None, skip.detail)),
                Ok(s) => batch.push(s),
            }
            if batch.len() >= self.exec.batch {
                self.batch(&mut batch, &mut stats, sink.as_mut())?;
            }
        }
        self.batch(&mut batch, &mut stats, sink.as_mut())?;
        let t = Instant::now();
        sink.finish()?;
        stats.timing.write += t.elapsed().as_secs_f64();
        if let Some(d) = &self.dedup {
            stats.kept_keys = d.keys[kept_before..].to_vec();
            d.save_part(state, index, kept_before)?;
        }
        stats.timing.total = started.elapsed().as_secs_f64();
        let json = serde_json::to_vec(&stats).expect("stats serialise");
        write_atomic(&state.join(format!("part-{index:06}.json")), &json)?;
        self.total.merge(&stats);
        Ok(())
    }

    fn batch(&mut self, batch: &mut Vec<Sample>, stats: &mut PartStats, sink: &mut dyn PartSink) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let samples = std::mem::take(batch);
        (self.progress)(samples.len() as u64);
        // language first: it needs no decoding
        let mut todo: Vec<(Sample, Vec<usize>)> = Vec::with_capacity(samples.len());
        for s in samples {
            let wanted: Vec<usize> = (0..s.captions.len()).filter(|&i| lang_ok(&s.captions[i], &self.opts.langs)).collect();
            if wanted.is_empty() {
                let langs: Vec<String> = s.captions.iter().map(caption_lang).collect();
                stats.drop_pair(DropReason::Language, Example::new(&s.key, &s.location, &s.captions[0].text, None, langs.join(",")));
            } else {
                todo.push((s, wanted));
            }
        }
        let t = Instant::now();
        let px = (3 * self.image_cfg.size * self.image_cfg.size) as usize;
        let decoded: Vec<Decoded> = todo.par_iter().map(|(s, _)| prepare(&s.image, &self.image_cfg, self.opts.min_side, px)).collect();
        stats.timing.decode += t.elapsed().as_secs_f64();
        let mut ready: Vec<(Sample, Vec<usize>)> = Vec::new();
        let mut pixels = Vec::new();
        for ((s, wanted), d) in todo.into_iter().zip(decoded) {
            match d {
                Ok(buf) => {
                    pixels.extend_from_slice(&buf);
                    ready.push((s, wanted));
                }
                Err((reason, detail)) => stats.drop_pair(reason, Example::new(&s.key, &s.location, &s.captions[0].text, None, detail)),
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let (images, texts, dim) = self.encode(&ready, pixels)?;
        stats.timing.encode += t.elapsed().as_secs_f64();
        let mut t_write = 0.0;
        let mut text_row = 0;
        for (i, (s, wanted)) in ready.iter().enumerate() {
            let img = &images[i * dim..(i + 1) * dim];
            let scores: Vec<f32> = wanted
                .iter()
                .map(|_| {
                    let txt = &texts[text_row * dim..(text_row + 1) * dim];
                    text_row += 1;
                    vlp_index::exact::dot(img, txt)
                })
                .collect();
            let best = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let best_at = scores.iter().position(|&x| x == best).unwrap_or(0);
            stats.scores.add(best);
            if let (Some(field), Some(truth)) = (&self.opts.truth_field, stats.truth.as_mut()) {
                match s.meta.get(field) {
                    Some(Value::Bool(true)) => truth.positive.add(best),
                    _ => truth.negative.add(best),
                }
            }
            let kept: Vec<&Caption> =
                wanted.iter().zip(&scores).filter(|(_, &sc)| sc >= self.opts.min_score).map(|(&c, _)| &s.captions[c]).collect();
            if kept.is_empty() {
                let caption = &s.captions[wanted[best_at]].text;
                stats.drop_pair(DropReason::LowScore, Example::new(&s.key, &s.location, caption, Some(best), ""));
                continue;
            }
            if let Some(d) = self.dedup.as_mut() {
                if let Some((first, sim)) = d.check_and_insert(&s.key, img) {
                    let detail = format!("duplicate of {first} (image cosine {sim:.3})");
                    stats.drop_pair(DropReason::Duplicate, Example::new(&s.key, &s.location, &kept[0].text, Some(best), detail));
                    continue;
                }
            }
            let t = Instant::now();
            sink.write(s, &kept, best)?;
            t_write += t.elapsed().as_secs_f64();
            stats.kept += 1;
        }
        stats.timing.write += t_write;
        Ok(())
    }

    /// Image rows `[n, dim]` and the rows of the wanted captions, in order, `[m, dim]`.
    fn encode(&self, ready: &[(Sample, Vec<usize>)], pixels: Vec<f32>) -> Result<(Vec<f32>, Vec<f32>, usize)> {
        let side = self.image_cfg.size as usize;
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [ready.len(), 3, side, side]), self.device);
        let images = self.enc.model.embed_image(x);
        let [_, dim] = images.dims();
        let captions: Vec<&str> = ready.iter().flat_map(|(s, wanted)| wanted.iter().map(|&c| s.captions[c].text.as_str())).collect();
        let mut texts = Vec::with_capacity(captions.len() * dim);
        for chunk in captions.chunks(256) {
            let (ids, mask) = text_tensors::<B>(&self.enc.tokenizer, chunk, self.device)?;
            texts.extend(rows(self.enc.model.embed_text(ids, mask)));
        }
        Ok((rows(images), texts, dim))
    }

    fn report(&self, record: &RunRecord, checkpoint: &Path, parts: usize, resumed: usize, outputs: Vec<PathBuf>) -> FilterReport {
        let t = &self.total;
        let seconds = t.timing.total;
        let share = |x: f64| if seconds > 0.0 { (x / seconds * 1000.0).round() / 1000.0 } else { 0.0 };
        let truth = match (&self.opts.truth_field, &t.truth) {
            (Some(f), Some(bins)) => Some(TruthReport::of(f, bins, self.opts.min_score)),
            _ => None,
        };
        FilterReport {
            input: record.input.clone(),
            format: record.format.clone(),
            checkpoint: checkpoint.display().to_string(),
            model: record.model.clone(),
            dry_run: self.opts.dry_run,
            min_score: self.opts.min_score,
            dedup: self.opts.dedup,
            min_side: self.opts.min_side,
            langs: self.opts.langs.clone(),
            parts,
            parts_resumed: resumed,
            seen: t.seen,
            kept: t.kept,
            dropped: t.dropped.clone(),
            score: ScoreSummary::of(&t.scores),
            examples: t.examples.clone(),
            truth,
            seconds,
            pairs_per_s: if seconds > 0.0 { t.seen as f64 / seconds } else { 0.0 },
            time_share: [("decode", t.timing.decode), ("encode", t.timing.encode), ("write", t.timing.write)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), share(v)))
                .collect(),
            outputs: outputs.iter().filter(|p| p.exists()).map(|p| p.display().to_string()).collect(),
        }
    }
}

/// Decodes, checks the size, crops and normalises one image.
fn prepare(bytes: &[u8], cfg: &ImageConfig, min_side: u32, px: usize) -> Decoded {
    let img = decode(bytes, cfg.max_pixels).map_err(|f| (DropReason::Unreadable(f.reason), f.detail))?;
    let (w, h) = (img.width(), img.height());
    if w.min(h) < min_side {
        return Err((DropReason::TooSmall, format!("{w}x{h} < --min-side {min_side}")));
    }
    let mut buf = vec![0f32; px];
    normalize_into(&crop_resize(&to_rgb_on_white(img), cfg, Augment::Eval), cfg, &mut buf);
    Ok(buf)
}

/// The caption's language: its tag, or `zh` for text with CJK characters and `en` otherwise.
fn caption_lang(c: &Caption) -> String {
    if let Some(l) = &c.lang {
        return l.clone();
    }
    let cjk = c.text.chars().any(|ch| matches!(ch as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF));
    if cjk { "zh" } else { "en" }.into()
}

fn lang_ok(c: &Caption, langs: &[String]) -> bool {
    if langs.is_empty() {
        return true;
    }
    let l = caption_lang(c);
    langs.iter().any(|want| l == *want || l.strip_prefix(want.as_str()).is_some_and(|rest| rest.starts_with('-')))
}

/// Near-duplicate detection over the images kept so far, through HNSW so it scales.
struct Dedup {
    index: HnswGraph,
    dim: usize,
    threshold: f32,
    keys: Vec<String>,
    vectors: Vec<f32>,
}

impl Dedup {
    fn new(dim: usize, threshold: f32, hnsw: HnswConfig) -> Self {
        Dedup { index: HnswGraph::new(dim, hnsw), dim, threshold, keys: Vec::new(), vectors: Vec::new() }
    }

    /// Rebuilds the index from the kept images of the done parts, in their order.
    fn restore(state: &Path, done: &[PartStats], dim: usize, threshold: f32, hnsw: HnswConfig) -> Result<Self> {
        let mut d = Dedup::new(dim, threshold, hnsw);
        for part in done {
            let path = state.join(format!("part-{:06}.kept.npy", part.part));
            let m = vlp_index::npy::read_f32(&path)?;
            if m.rows != part.kept_keys.len() || (m.rows > 0 && m.cols != dim) {
                return Err(CurateError::Invalid(format!(
                    "{}: {} rows of width {} for {} kept images of width {dim}; remove {} to start over",
                    path.display(),
                    m.rows,
                    m.cols,
                    part.kept_keys.len(),
                    state.display()
                )));
            }
            for (key, v) in part.kept_keys.iter().zip(m.data.chunks(dim.max(1))) {
                d.insert(key, v);
            }
        }
        Ok(d)
    }

    fn insert(&mut self, key: &str, v: &[f32]) {
        self.index.insert(v, self.dim);
        self.keys.push(key.to_string());
        self.vectors.extend_from_slice(v);
    }

    /// The first-kept image this one duplicates, or `None` after adding it as kept.
    fn check_and_insert(&mut self, key: &str, v: &[f32]) -> Option<(String, f32)> {
        if !self.keys.is_empty() {
            if let Some(hit) = self.index.search(v, 1, None).first() {
                if hit.score >= self.threshold {
                    return Some((self.keys[hit.row].clone(), hit.score));
                }
            }
        }
        self.insert(key, v);
        None
    }

    /// Writes the embeddings of the images kept since `from` (this part's).
    fn save_part(&self, state: &Path, part: usize, from: usize) -> Result<()> {
        let path = state.join(format!("part-{part:06}.kept.npy"));
        let rows = self.keys.len() - from;
        // all or nothing (vlp_index::npy writes through vlp_atomic)
        Ok(vlp_index::npy::write_f32(&path, rows, self.dim, &self.vectors[from * self.dim..])?)
    }
}

/// Reads (or starts) the state of a run: the parts already done.
fn open_state(state: &Path, record: &RunRecord, resume: bool) -> Result<Vec<PartStats>> {
    let run_file = state.join("run.json");
    if run_file.exists() {
        if !resume {
            return Err(CurateError::Invalid(format!(
                "{} already holds a filter run; pass --resume to continue it, or another --out",
                state.parent().unwrap_or(state).display()
            )));
        }
        let bytes = std::fs::read(&run_file).map_err(|e| CurateError::io(&run_file, e))?;
        let before: RunRecord = serde_json::from_slice(&bytes).map_err(|e| CurateError::Invalid(format!("{}: {e}", run_file.display())))?;
        if before != *record {
            return Err(CurateError::Invalid(format!(
                "{}: the run there was started with other settings ({}); resume with the same input, checkpoint and options, or use another --out",
                run_file.display(),
                serde_json::to_string(&before).unwrap_or_default()
            )));
        }
    } else {
        std::fs::create_dir_all(state).map_err(|e| CurateError::io(state, e))?;
        write_atomic(&run_file, &serde_json::to_vec_pretty(record).expect("serialises"))?;
    }
    let mut done = Vec::new();
    for entry in std::fs::read_dir(state).map_err(|e| CurateError::io(state, e))? {
        let path = entry.map_err(|e| CurateError::io(state, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("part-") && name.ends_with(".json") {
            let bytes = std::fs::read(&path).map_err(|e| CurateError::io(&path, e))?;
            let stats: PartStats = serde_json::from_slice(&bytes).map_err(|e| CurateError::Invalid(format!("{}: {e}", path.display())))?;
            done.push(stats);
        }
    }
    done.sort_by_key(|s| s.part);
    Ok(done)
}

/// Output shard names are the input's; two inputs of one name would overwrite each other.
fn shard_names(shards: &[PathBuf]) -> Result<Vec<String>> {
    let mut names = Vec::with_capacity(shards.len());
    let mut seen = std::collections::HashSet::new();
    for s in shards {
        let name = s.file_name().and_then(|n| n.to_str()).unwrap_or("shard.tar").to_string();
        if !seen.insert(name.clone()) {
            return Err(CurateError::Invalid(format!("two input shards are named {name}; the output keeps shard names")));
        }
        names.push(name);
    }
    Ok(names)
}

/// The output directory may not be where the input files are: the input is never modified.
fn refuse_overwriting_input(kind: &InputKind, out: &Path) -> Result<()> {
    let files: Vec<&PathBuf> = match kind {
        InputKind::WebDataset(s) => s.iter().collect(),
        InputKind::Jsonl(p) | InputKind::Csv(p) => vec![p],
    };
    let Ok(out) = std::fs::canonicalize(out) else { return Ok(()) };
    for f in files {
        let dir = f.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if std::fs::canonicalize(dir).is_ok_and(|d| d == out) {
            return Err(CurateError::Invalid(format!(
                "--out {} is the input's own directory; the filter never writes over its input",
                out.display()
            )));
        }
    }
    Ok(())
}

fn csv_columns(path: &Path, separator: u8) -> Result<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(separator)
        .from_path(path)
        .map_err(|e| CurateError::Invalid(format!("{}: {e}", path.display())))?;
    let headers = r.headers().map_err(|e| CurateError::Invalid(format!("{}: no header row: {e}", path.display())))?;
    Ok(headers.iter().map(str::to_string).collect())
}

fn write_report(out: &Path, report: &FilterReport, total: &PartStats) -> Result<()> {
    write_atomic(&out.join("report.json"), &serde_json::to_vec_pretty(report).expect("report serialises"))?;
    let title = format!("{} pairs scored, {} kept", total.scores.n, total.kept);
    let h = report::histogram(&total.scores, report.min_score, &title);
    vlp_plot::histogram_png(&out.join("scores.png"), &h, (800, 450))?;
    if let Some(t) = &report.truth {
        vlp_plot::panels_png(&out.join("detection.png"), "vlp filter", &[report::detection_panel(t)], 1, (800, 450))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_match_by_tag_prefix_or_script() {
        let c = |t: &str, l: Option<&str>| Caption { text: t.into(), lang: l.map(Into::into), field: None };
        let want = vec!["zh".to_string()];
        assert!(lang_ok(&c("免費", Some("zh-Hant")), &want));
        assert!(lang_ok(&c("一只猫", None), &want));
        assert!(!lang_ok(&c("a cat", None), &want));
        assert!(!lang_ok(&c("x", Some("zhx")), &want));
        assert!(lang_ok(&c("a cat", None), &[]));
    }
}
