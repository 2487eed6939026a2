//! Batches for training and encoding: samples are read on one thread, decoded and augmented in
//! parallel across cores (rayon), tokenized, and handed out through a bounded queue so the next
//! batches are ready while the current one is used.

use crate::image_pipeline::{process_into, Augment, ImageConfig};
use crate::sample::Sample;
use crate::skip::SkipLog;
use crate::source::{SampleStream, Skip};
use crate::text::TextTokenizer;
use crate::{stable_hash, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// One batch, as plain arrays.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[batch, 3, size, size]`, normalised.
    pub images: Vec<f32>,
    /// `[batch, context]` token ids.
    pub ids: Vec<u32>,
    /// `[batch, context]`, 1 for a real token.
    pub mask: Vec<u32>,
    /// Sample keys, `[batch]`.
    pub keys: Vec<String>,
    /// The caption chosen for each sample, `[batch]`.
    pub captions: Vec<String>,
    pub image_size: u32,
    pub context: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub image: ImageConfig,
    /// `Some(seed)`: random resized crops and a random caption per sample, seeded by
    /// (seed, epoch, key). `None`: center crop and the first caption.
    pub train_seed: Option<u64>,
    pub epoch: u64,
    /// Drop a last batch smaller than `batch_size` (training wants full batches for the loss).
    pub drop_last: bool,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// Samples held in the shuffle buffer (as WebDataset's `shuffle(n)`); 0 keeps input order.
    /// Seeded by (`train_seed`, `epoch`), so an epoch's order is reproducible.
    pub shuffle_buffer: usize,
}

/// An iterator of batches over a sample stream. Skipped samples are counted in [`Self::skips`].
pub struct BatchLoader {
    rx: crossbeam_channel::Receiver<Result<Batch>>,
    skips: Arc<Mutex<SkipLog>>,
    _worker: std::thread::JoinHandle<()>,
}

impl BatchLoader {
    pub fn new(stream: SampleStream, tokenizer: TextTokenizer, cfg: LoaderConfig) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(cfg.prefetch.max(1));
        let skips = Arc::new(Mutex::new(SkipLog::new()));
        let log = Arc::clone(&skips);
        let worker = std::thread::Builder::new()
            .name("vlp-data-batcher".into())
            .spawn(move || {
                let shuffle_seed = stable_hash(&[cfg.train_seed.unwrap_or(0).to_le_bytes(), cfg.epoch.to_le_bytes()].concat());
                let mut samples_in = Shuffled::new(stream, cfg.shuffle_buffer, shuffle_seed);
                loop {
                    let mut samples = Vec::with_capacity(cfg.batch_size);
                    for item in samples_in.by_ref() {
                        match item {
                            Ok(s) => samples.push(s),
                            Err(skip) => skip.record_in(&mut log.lock().expect("skip log")),
                        }
                        if samples.len() == cfg.batch_size {
                            break;
                        }
                    }
                    if samples.is_empty() || (cfg.drop_last && samples.len() < cfg.batch_size) {
                        return;
                    }
                    let (batch, failed) = assemble(samples, &tokenizer, &cfg);
                    {
                        let mut log = log.lock().expect("skip log");
                        for skip in failed {
                            skip.record_in(&mut log);
                        }
                    }
                    // A batch that lost samples to decoding is still handed out: at scale a batch
                    // of 255 is better than a stall.
                    let batch = match batch {
                        Ok(b) if b.is_empty() => continue,
                        other => other,
                    };
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn batcher thread");
        BatchLoader { rx, skips, _worker: worker }
    }

    /// Everything skipped so far (complete once the iterator is exhausted).
    pub fn skips(&self) -> SkipLog {
        self.skips.lock().expect("skip log").clone()
    }
}

impl Iterator for BatchLoader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

/// A shuffle buffer over a stream: holds up to `size` items and hands out a random one as each
/// new one arrives, then drains in random order. Skips pass straight through.
struct Shuffled<I: Iterator<Item = crate::source::SourceItem>> {
    inner: I,
    buffer: Vec<Sample>,
    size: usize,
    rng: ChaCha8Rng,
}

impl<I: Iterator<Item = crate::source::SourceItem>> Shuffled<I> {
    fn new(inner: I, size: usize, seed: u64) -> Self {
        Shuffled { inner, buffer: Vec::with_capacity(size), size, rng: ChaCha8Rng::seed_from_u64(seed) }
    }
}

impl<I: Iterator<Item = crate::source::SourceItem>> Iterator for Shuffled<I> {
    type Item = crate::source::SourceItem;
    fn next(&mut self) -> Option<Self::Item> {
        if self.size == 0 {
            return self.inner.next();
        }
        while self.buffer.len() < self.size {
            match self.inner.next() {
                Some(Ok(s)) => self.buffer.push(s),
                Some(skip) => return Some(skip),
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.buffer.len());
        Some(Ok(self.buffer.swap_remove(i)))
    }
}

/// Decodes a group of samples in parallel; returns the batch of those that decoded and the skips.
pub fn assemble(samples: Vec<Sample>, tokenizer: &TextTokenizer, cfg: &LoaderConfig) -> (Result<Batch>, Vec<Skip>) {
    let px = (3 * cfg.image.size * cfg.image.size) as usize;
    let decoded: Vec<std::result::Result<(Vec<f32>, Sample), Skip>> = samples
        .into_par_iter()
        .map(|s| {
            let per_sample = cfg
                .train_seed
                .map(|seed| stable_hash(&[seed.to_le_bytes().as_slice(), &cfg.epoch.to_le_bytes(), s.key.as_bytes()].concat()));
            let aug = per_sample.map_or(Augment::Eval, |seed| Augment::Train { seed });
            let mut buf = vec![0f32; px];
            match process_into(&s.image, &cfg.image, aug, &mut buf) {
                Ok(()) => Ok((buf, s)),
                Err(f) => Err(Skip::new(f.reason, s.location.clone(), f.detail)),
            }
        })
        .collect();
    let mut failed = Vec::new();
    let mut images = Vec::with_capacity(decoded.len() * px);
    let mut keys = Vec::with_capacity(decoded.len());
    let mut captions = Vec::with_capacity(decoded.len());
    for d in decoded {
        match d {
            Ok((buf, s)) => {
                images.extend_from_slice(&buf);
                let pick = match cfg.train_seed {
                    Some(seed) if s.captions.len() > 1 => {
                        let h =
                            stable_hash(&[b"caption".as_slice(), &seed.to_le_bytes(), &cfg.epoch.to_le_bytes(), s.key.as_bytes()].concat());
                        ChaCha8Rng::seed_from_u64(h).gen_range(0..s.captions.len())
                    }
                    _ => 0,
                };
                captions.push(s.captions[pick].text.clone());
                keys.push(s.key);
            }
            Err(skip) => failed.push(skip),
        }
    }
    let batch = tokenizer.encode_batch(&captions).map(|enc| Batch {
        images,
        ids: enc.ids,
        mask: enc.mask,
        keys,
        captions,
        image_size: cfg.image.size,
        context: enc.context,
    });
    (batch, failed)
}

/// What [`scan`] found: the keys that decoded, and why the others were skipped.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub good_keys: Vec<String>,
    pub skips: SkipLog,
}

/// Reads a stream to its end and decodes every image (in parallel chunks), as training would,
/// without keeping the pixels: what `vlp data validate` reports.
pub fn scan(stream: SampleStream, image: &ImageConfig) -> ScanReport {
    const CHUNK: usize = 256;
    let mut report = ScanReport::default();
    let mut chunk: Vec<Sample> = Vec::with_capacity(CHUNK);
    let px = (3 * image.size * image.size) as usize;
    let flush = |chunk: &mut Vec<Sample>, report: &mut ScanReport| {
        let results: Vec<std::result::Result<String, Skip>> = chunk
            .par_drain(..)
            .map_init(
                || vec![0f32; px],
                |buf, s| match process_into(&s.image, image, Augment::Eval, buf) {
                    Ok(()) => Ok(s.key),
                    Err(f) => Err(Skip::new(f.reason, s.location, f.detail)),
                },
            )
            .collect();
        for r in results {
            match r {
                Ok(key) => report.good_keys.push(key),
                Err(skip) => skip.record_in(&mut report.skips),
            }
        }
    };
    for item in stream {
        match item {
            Ok(s) => {
                chunk.push(s);
                if chunk.len() == CHUNK {
                    flush(&mut chunk, &mut report);
                }
            }
            Err(skip) => skip.record_in(&mut report.skips),
        }
    }
    flush(&mut chunk, &mut report);
    report
}
