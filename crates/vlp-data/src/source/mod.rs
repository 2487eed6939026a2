//! Streaming readers for the input formats: WebDataset tar shards, JSONL manifests, CSV/TSV.
//!
//! Every reader runs on its own thread and pushes [`SourceItem`]s into a bounded channel, so I/O
//! overlaps with decoding and a corpus never has to fit in memory. A bad sample becomes a
//! [`Skip`]; only a problem with the input as a whole (it does not exist) is an error.

mod csv_table;
mod jsonl;
mod webdataset;

pub(crate) use webdataset::split_key;

use crate::sample::{Caption, Sample};
use crate::skip::{SkipLog, SkipReason};
use crate::{DataError, Result};
use image::ImageFormat;
use std::path::{Path, PathBuf};

pub use csv_table::{separator as csv_separator, CsvColumns, RelativeTo};

/// A sample, or why one was left out.
pub type SourceItem = std::result::Result<Sample, Skip>;

/// A skipped sample: its reason, location and detail.
#[derive(Debug, Clone)]
pub struct Skip {
    pub reason: SkipReason,
    pub location: String,
    pub detail: String,
}

impl Skip {
    pub fn new(reason: SkipReason, location: impl Into<String>, detail: impl Into<String>) -> Self {
        Skip { reason, location: location.into(), detail: detail.into() }
    }
    pub fn record_in(&self, log: &mut SkipLog) {
        log.record(self.reason, self.location.clone(), self.detail.clone());
    }
}

/// Limits and column names shared by all readers.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Encoded image files above this many bytes are skipped as too large.
    pub max_image_bytes: usize,
    /// Captions above this many characters are skipped as too long.
    pub max_caption_chars: usize,
    /// Column names for CSV/TSV input.
    pub csv: CsvColumns,
    /// Samples buffered ahead of the consumer.
    pub prefetch: usize,
    /// The part of the input to read (one machine's, in a data-parallel job); all of it by default.
    pub part: Part,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { max_image_bytes: 32 << 20, max_caption_chars: 2000, csv: CsvColumns::default(), prefetch: 256, part: Part::WHOLE }
    }
}

/// One of `count` disjoint parts of an input that together hold every sample once: the part a
/// machine of a data-parallel job reads, as WebDataset's `split_by_node` gives each node its
/// shards. How an input divides is [`InputKind::division`]'s choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    index: usize,
    count: usize,
}

impl Part {
    /// The whole input.
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    /// Part `index` of `count`.
    pub fn new(index: usize, count: usize) -> Result<Part> {
        if index >= count {
            return Err(DataError::input(format!("part {index} of {count}"), "a part's index must be below the number of parts"));
        }
        Ok(Part { index, count })
    }
    pub fn index(self) -> usize {
        self.index
    }
    pub fn count(self) -> usize {
        self.count
    }
    /// Whether the item at `ordinal` (a shard, a manifest line, a sample) is this part's:
    /// every `count`-th, from `index`.
    pub fn holds(self, ordinal: usize) -> bool {
        ordinal % self.count == self.index
    }
}

/// How an input is divided into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Division {
    /// One part: everything is read.
    Whole,
    /// Every `count`-th shard: a machine opens only its own shards. Chosen when the shards
    /// divide evenly among the parts (samples then divide as evenly as the shards' sizes do).
    Shards,
    /// Every `count`-th sample (manifest line, table row, or sample of the shards when they do
    /// not divide evenly): each part reads the index or the shards through, and opens or keeps
    /// only its own samples' images.
    Samples,
}

/// Which reader an input spec calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    WebDataset(Vec<PathBuf>),
    Jsonl(PathBuf),
    Csv(PathBuf),
}

impl InputKind {
    /// Picks the reader from the spec: `.jsonl` manifest, `.csv`/`.tsv` table, a built data set
    /// directory with a `split`, otherwise WebDataset shards (`dir/`, glob, brace range).
    pub fn detect(spec: &str, split: Option<&str>) -> Result<InputKind> {
        let path = Path::new(spec);
        if path.is_dir() && path.join(crate::dataset::DATASET_FILE).is_file() {
            let split = split.unwrap_or("train");
            let manifest = crate::dataset::DatasetDir::new(path).manifest(split);
            if !manifest.is_file() {
                return Err(DataError::input(spec, format!("data set has no split '{split}'")));
            }
            return Ok(InputKind::Jsonl(manifest));
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl") | Some("json") | Some("ndjson") => {
                if !path.is_file() {
                    return Err(DataError::input(spec, "manifest does not exist"));
                }
                Ok(InputKind::Jsonl(path.to_path_buf()))
            }
            Some("csv") | Some("tsv") => {
                if !path.is_file() {
                    return Err(DataError::input(spec, "table does not exist"));
                }
                Ok(InputKind::Csv(path.to_path_buf()))
            }
            _ => Ok(InputKind::WebDataset(crate::shards::expand_shards(spec)?)),
        }
    }

    /// How this input divides into `part.count()` parts: by shard when the shards divide evenly,
    /// by sample otherwise.
    pub fn division(&self, part: Part) -> Division {
        match self {
            InputKind::WebDataset(shards) => shard_division(shards.len(), part),
            _ if part.count == 1 => Division::Whole,
            _ => Division::Samples,
        }
    }
}

fn shard_division(shards: usize, part: Part) -> Division {
    match part.count {
        1 => Division::Whole,
        n if shards.is_multiple_of(n) => Division::Shards,
        _ => Division::Samples,
    }
}

/// An iterator over the samples of one input, read on a background thread.
pub struct SampleStream {
    rx: crossbeam_channel::Receiver<SourceItem>,
    _reader: std::thread::JoinHandle<()>,
}

impl Iterator for SampleStream {
    type Item = SourceItem;
    fn next(&mut self) -> Option<SourceItem> {
        self.rx.recv().ok()
    }
}

/// Opens any supported input (see [`InputKind::detect`]) as a stream of samples.
pub fn open(spec: &str, split: Option<&str>, opts: &ReadOptions) -> Result<SampleStream> {
    open_kind(InputKind::detect(spec, split)?, opts)
}

pub fn open_kind(kind: InputKind, opts: &ReadOptions) -> Result<SampleStream> {
    // Open the input once on the caller's thread so a missing or unreadable file is an error here,
    // not a silent empty stream.
    match &kind {
        InputKind::Jsonl(p) | InputKind::Csv(p) => {
            std::fs::File::open(p).map_err(|e| DataError::io(p, e))?;
        }
        InputKind::WebDataset(_) => {}
    }
    let (tx, rx) = crossbeam_channel::bounded(opts.prefetch.max(1));
    let opts = opts.clone();
    let reader = std::thread::Builder::new()
        .name("vlp-data-reader".into())
        .spawn(move || {
            let mut emit = |item: SourceItem| tx.send(item).is_ok();
            match kind {
                InputKind::WebDataset(shards) => webdataset::read(&shards, &opts, &mut emit),
                InputKind::Jsonl(path) => jsonl::read(&path, &opts, &mut emit),
                InputKind::Csv(path) => csv_table::read(&path, &opts, &mut emit),
            }
        })
        .map_err(|e| DataError::io("reader thread", e))?;
    Ok(SampleStream { rx, _reader: reader })
}

/// Checks the cheap things about an image file before it is queued for decoding.
fn check_image(bytes: &[u8], ext: &str, location: &str, opts: &ReadOptions) -> std::result::Result<(), Skip> {
    if bytes.is_empty() {
        return Err(Skip::new(SkipReason::ImageEmpty, location, "0 bytes"));
    }
    if bytes.len() > opts.max_image_bytes {
        return Err(Skip::new(SkipReason::ImageTooLarge, location, format!("{} bytes > limit {}", bytes.len(), opts.max_image_bytes)));
    }
    let Some(named) = image_format_of_ext(ext) else {
        return Err(Skip::new(SkipReason::ImageUnsupportedFormat, location, format!("extension '.{ext}'")));
    };
    if let Ok(actual) = image::guess_format(bytes) {
        if actual != named {
            return Err(Skip::new(SkipReason::ImageWrongExtension, location, format!("named .{ext} but the bytes are {actual:?}")));
        }
    }
    Ok(())
}

/// The image formats vlp reads, by extension.
pub fn image_format_of_ext(ext: &str) -> Option<ImageFormat> {
    match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Turns caption bytes into a caption, or the reason it cannot be one.
fn check_caption(bytes: &[u8], location: &str, opts: &ReadOptions) -> std::result::Result<String, Skip> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Skip::new(SkipReason::CaptionNotUtf8, location, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    check_caption_text(text, location, opts)
}

fn check_caption_text(text: &str, location: &str, opts: &ReadOptions) -> std::result::Result<String, Skip> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Skip::new(SkipReason::CaptionEmpty, location, "empty caption"));
    }
    let chars = text.chars().count();
    if chars > opts.max_caption_chars {
        return Err(Skip::new(SkipReason::CaptionTooLong, location, format!("{chars} characters > limit {}", opts.max_caption_chars)));
    }
    Ok(text.to_string())
}

/// Keeps the good captions of a sample; if none is left, the first problem is the skip reason.
fn keep_good_captions(candidates: Vec<std::result::Result<Caption, Skip>>, location: &str) -> std::result::Result<Vec<Caption>, Skip> {
    let mut first_bad = None;
    let mut good = Vec::new();
    for c in candidates {
        match c {
            Ok(c) => good.push(c),
            Err(skip) => {
                first_bad.get_or_insert(skip);
            }
        }
    }
    if good.is_empty() {
        return Err(first_bad.unwrap_or_else(|| Skip::new(SkipReason::CaptionMissing, location, "no caption")));
    }
    Ok(good)
}

/// Reads an image file named by a manifest or table row.
fn read_image_file(path: &Path, location: &str) -> std::result::Result<Vec<u8>, Skip> {
    std::fs::read(path).map_err(|e| Skip::new(SkipReason::ImageFileMissing, location, format!("{}: {e}", path.display())))
}

fn ext_of(path: &str) -> String {
    Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}
