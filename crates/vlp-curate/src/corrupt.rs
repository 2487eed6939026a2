//! A copy of a data set with a known share of captions swapped between images, each sample's
//! JSON marking whether its pair is corrupted: the ground truth for measuring a filter.
//!
//! Two passes over the input, so only the captions are held in memory: the first picks one
//! caption per image and decides the swaps, the second writes WebDataset shards.

use crate::{CurateError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::path::Path;
use vlp_data::source::{self, ReadOptions};
use vlp_data::{Caption, Sample, SkipLog, WdsWriter};

/// The metadata field that marks a swapped caption.
pub const CORRUPTED_FIELD: &str = "corrupted";

#[derive(Debug, Clone)]
pub struct CorruptOptions {
    /// Share of the pairs whose captions are swapped, in [0, 1].
    pub fraction: f64,
    pub seed: u64,
    /// Which caption of a multi-caption sample to use: the first of this language ...
    pub lang: Option<String>,
    /// ... and of this field (`name`, `keywords`); samples without one are left out.
    pub field: Option<String>,
    pub per_shard: usize,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct CorruptSummary {
    pub pairs: usize,
    pub corrupted: usize,
    /// Samples without a caption of the wanted language and field.
    pub no_caption: usize,
    pub skipped: SkipLog,
    pub shards: Vec<std::path::PathBuf>,
}

fn pick<'a>(s: &'a Sample, o: &CorruptOptions) -> Option<&'a Caption> {
    s.captions.iter().find(|c| {
        o.lang.as_ref().is_none_or(|l| c.lang.as_deref() == Some(l.as_str()))
            && o.field.as_ref().is_none_or(|f| c.field.as_deref() == Some(f.as_str()))
    })
}

/// A WebDataset key: no dots (WebDataset splits a member name at its first dot).
fn wds_key(key: &str) -> String {
    key.replace(['.', '/'], "_")
}

pub fn corrupt(input: &str, split: Option<&str>, read: &ReadOptions, out: &Path, o: &CorruptOptions) -> Result<CorruptSummary> {
    if !(0.0..=1.0).contains(&o.fraction) {
        return Err(CurateError::Invalid(format!("--fraction {}: a share lies in [0, 1]", o.fraction)));
    }
    let mut summary = CorruptSummary::default();
    // pass 1: one caption per usable sample, in input order
    let mut captions: Vec<Caption> = Vec::new();
    for item in source::open(input, split, read)? {
        match item {
            Ok(s) => match pick(&s, o) {
                Some(c) => captions.push(c.clone()),
                None => summary.no_caption += 1,
            },
            Err(skip) => skip.record_in(&mut summary.skipped),
        }
    }
    let n = captions.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(o.seed));
    let chosen = &order[..((o.fraction * n as f64).round() as usize).min(n)];
    // rotate the chosen captions by one place: each chosen image gets another chosen image's
    let mut assigned: Vec<Option<usize>> = vec![None; n];
    if chosen.len() >= 2 {
        for (j, &i) in chosen.iter().enumerate() {
            assigned[i] = Some(chosen[(j + 1) % chosen.len()]);
        }
    }
    // pass 2: write
    let mut writer = WdsWriter::new(out, "corrupt", o.per_shard.max(1))?;
    let mut row = 0;
    for item in source::open(input, split, read)? {
        let Ok(s) = item else { continue };
        let Some(own) = pick(&s, o) else { continue };
        let (caption, from) = match assigned[row] {
            Some(other) => (&captions[other], Some(other)),
            None => (own, None),
        };
        row += 1;
        // a swap between two identical captions corrupts nothing
        let corrupted = from.is_some() && caption.text != own.text;
        let mut meta = s.meta.clone();
        meta.insert(CORRUPTED_FIELD.into(), Value::Bool(corrupted));
        if corrupted {
            meta.insert("original_caption".into(), Value::String(own.text.clone()));
        }
        if let Some(l) = &caption.lang {
            meta.insert("lang".into(), Value::String(l.clone()));
        }
        meta.remove("image");
        writer.write(&wds_key(&s.key), &s.image, &s.image_ext, &caption.text, &meta)?;
        summary.pairs += 1;
        summary.corrupted += corrupted as usize;
    }
    if row != n {
        return Err(CurateError::Invalid(format!("{input} changed while it was read ({n} then {row} pairs)")));
    }
    summary.shards = writer.finish()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_lose_their_dots() {
        assert_eq!(wds_key("a.b/c"), "a_b_c");
    }
}
