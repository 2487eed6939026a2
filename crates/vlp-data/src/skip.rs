//! Counted reasons for skipping a sample, and where each happened.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Why a sample was left out. Each is counted; none stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The image file has zero bytes.
    ImageEmpty,
    /// The image is larger than the configured byte or pixel limits (decompression bombs included).
    ImageTooLarge,
    /// The image bytes are not a decodable image, or the file ends early.
    ImageUndecodable,
    /// The bytes are a known image format other than the one the file name claims.
    ImageWrongExtension,
    /// The file name's extension is not an image format vlp reads.
    ImageUnsupportedFormat,
    /// A sample has captions but no image.
    ImageMissing,
    /// The image that a manifest or CSV row names does not exist or cannot be read.
    ImageFileMissing,
    /// A sample has an image but no caption.
    CaptionMissing,
    /// Every caption is empty or whitespace.
    CaptionEmpty,
    /// The caption bytes are not UTF-8.
    CaptionNotUtf8,
    /// The caption is longer than the configured limit.
    CaptionTooLong,
    /// A tar shard ends in the middle of a member or is not a tar at all.
    ShardTruncated,
    /// A manifest line is not a JSON object of the expected shape.
    ManifestBadLine,
    /// A CSV/TSV row lacks a column or cannot be parsed.
    CsvBadRow,
    /// The sample lacks the metadata field a task needs (zero-shot's label field).
    FieldMissing,
    /// A tar member's file name starts with a dot (`dir/.jpg`): WebDataset gives it no key.
    KeyMissing,
}

impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::ImageEmpty => "image file is empty",
            SkipReason::ImageTooLarge => "image exceeds the size limits",
            SkipReason::ImageUndecodable => "image is corrupt, truncated or undecodable",
            SkipReason::ImageWrongExtension => "image content does not match its extension",
            SkipReason::ImageUnsupportedFormat => "image format is not supported",
            SkipReason::ImageMissing => "sample has no image",
            SkipReason::ImageFileMissing => "image file is missing or unreadable",
            SkipReason::CaptionMissing => "sample has no caption",
            SkipReason::CaptionEmpty => "caption is empty",
            SkipReason::CaptionNotUtf8 => "caption is not UTF-8",
            SkipReason::CaptionTooLong => "caption is too long",
            SkipReason::ShardTruncated => "tar shard is cut off",
            SkipReason::ManifestBadLine => "manifest line is not a valid JSON record",
            SkipReason::CsvBadRow => "CSV/TSV row is malformed",
            SkipReason::FieldMissing => "sample lacks the field asked for",
            SkipReason::KeyMissing => "tar member has no WebDataset key (its file name starts with a dot)",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(name.as_deref().unwrap_or("?"))
    }
}

/// How many examples of each reason a log keeps (the counts are always exact).
const EXAMPLES_PER_REASON: usize = 20;

/// One skipped sample: where it was and what was wrong.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub location: String,
    pub detail: String,
}

/// Exact counts of skipped samples per reason, with the first few locations of each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SkipLog {
    counts: BTreeMap<SkipReason, u64>,
    examples: BTreeMap<SkipReason, Vec<Skipped>>,
}

impl SkipLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, reason: SkipReason, location: impl Into<String>, detail: impl Into<String>) {
        *self.counts.entry(reason).or_default() += 1;
        let ex = self.examples.entry(reason).or_default();
        if ex.len() < EXAMPLES_PER_REASON {
            ex.push(Skipped { location: location.into(), detail: detail.into() });
        }
    }

    pub fn merge(&mut self, other: SkipLog) {
        for (reason, n) in other.counts {
            *self.counts.entry(reason).or_default() += n;
        }
        for (reason, list) in other.examples {
            let ex = self.examples.entry(reason).or_default();
            let room = EXAMPLES_PER_REASON.saturating_sub(ex.len());
            ex.extend(list.into_iter().take(room));
        }
    }

    pub fn count(&self, reason: SkipReason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn counts(&self) -> &BTreeMap<SkipReason, u64> {
        &self.counts
    }

    pub fn examples(&self, reason: SkipReason) -> &[Skipped] {
        self.examples.get(&reason).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A human-readable summary: one line per reason with its count and first locations.
    pub fn summary(&self) -> String {
        if self.counts.is_empty() {
            return "skipped: none\n".to_string();
        }
        let mut s = format!("skipped: {} sample(s)\n", self.total());
        for (reason, n) in &self.counts {
            s.push_str(&format!("  {:<26} {:>8}  ({})\n", reason.to_string(), n, reason.describe()));
            for ex in self.examples(*reason).iter().take(3) {
                s.push_str(&format!("      at {}: {}\n", ex.location, ex.detail));
            }
        }
        s
    }
}
