//! What a filter run did: per-part statistics that merge exactly (counts, score bins, a uniform
//! sample of dropped pairs per reason), and the report assembled from them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vlp_data::SkipReason;

/// Why a pair was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The reader or decoder refused it (corrupt image, empty caption, cut-off shard, ...).
    Unreadable(SkipReason),
    /// The image's shorter side is below `--min-side`.
    TooSmall,
    /// No caption is in one of the `--lang` languages.
    Language,
    /// Every caption's cosine similarity with the image is below `--min-score`.
    LowScore,
    /// The image is a near-duplicate of one kept earlier.
    Duplicate,
}

impl DropReason {
    /// The stable name used as a key in the report.
    pub fn name(self) -> String {
        match self {
            DropReason::Unreadable(r) => r.to_string(),
            DropReason::TooSmall => "too_small".into(),
            DropReason::Language => "language".into(),
            DropReason::LowScore => "low_score".into(),
            DropReason::Duplicate => "duplicate".into(),
        }
    }
}

/// How many dropped pairs each reason keeps as examples.
pub const EXAMPLES_PER_REASON: usize = 20;

/// A dropped pair, for a person judging the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub key: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caption: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Example {
    pub fn new(key: &str, location: &str, caption: &str, score: Option<f32>, detail: impl Into<String>) -> Self {
        Example { key: key.to_string(), location: location.to_string(), caption: caption.to_string(), score, detail: detail.into() }
    }

    /// Sampling priority: the examples kept are those with the smallest hash of their key, a
    /// uniform sample that merges across parts and repeats across runs.
    fn rank(&self) -> u64 {
        vlp_data::stable_hash(self.key.as_bytes())
    }
}

/// Scores binned over [-1, 1] (cosine similarity) with the exact count, sum, min and max.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreBins {
    pub counts: Vec<u64>,
    pub n: u64,
    pub sum: f64,
    pub min: Option<f32>,
    pub max: Option<f32>,
}

/// 400 bins of width 0.005: quantiles and threshold sweeps are exact to that width.
pub const SCORE_BINS: usize = 400;
const LO: f64 = -1.0;
const HI: f64 = 1.0;

impl Default for ScoreBins {
    fn default() -> Self {
        ScoreBins { counts: vec![0; SCORE_BINS], n: 0, sum: 0.0, min: None, max: None }
    }
}

impl ScoreBins {
    pub fn add(&mut self, s: f32) {
        self.counts[vlp_plot::bin_of(s as f64, LO, HI, SCORE_BINS)] += 1;
        self.n += 1;
        self.sum += s as f64;
        self.min = Some(self.min.map_or(s, |m| m.min(s)));
        self.max = Some(self.max.map_or(s, |m| m.max(s)));
    }

    pub fn merge(&mut self, o: &ScoreBins) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = extreme(self.min, o.min, f32::min);
        self.max = extreme(self.max, o.max, f32::max);
    }

    pub fn bin_width() -> f64 {
        (HI - LO) / SCORE_BINS as f64
    }

    /// The lower edge of the bin that holds the q-quantile (to within one bin width).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let target = (q * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(LO + i as f64 * Self::bin_width());
            }
        }
        self.max.map(f64::from)
    }

    /// Scores strictly below the bin edge `i` (the threshold `LO + i·width`).
    fn below(&self, edge: usize) -> u64 {
        self.counts[..edge.min(SCORE_BINS)].iter().sum()
    }
}

/// Combines two optional extremes with `pick` (min or max).
fn extreme(a: Option<f32>, b: Option<f32>, pick: fn(f32, f32) -> f32) -> Option<f32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, y) => x.or(y),
    }
}

/// Scores of the pairs known to be bad (`positive`) and known to be good, for measuring the
/// filter as a detector of bad pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TruthBins {
    pub positive: ScoreBins,
    pub negative: ScoreBins,
}

/// Precision and recall of "score below threshold" at finding the bad pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub threshold: f64,
    pub flagged: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl TruthBins {
    pub fn merge(&mut self, o: &TruthBins) {
        self.positive.merge(&o.positive);
        self.negative.merge(&o.negative);
    }

    /// Detection at the bin edge nearest `threshold`.
    pub fn at(&self, threshold: f64) -> Detection {
        let edge = ((threshold - LO) / ScoreBins::bin_width()).round().clamp(0.0, SCORE_BINS as f64) as usize;
        self.at_edge(edge)
    }

    fn at_edge(&self, edge: usize) -> Detection {
        let tp = self.positive.below(edge);
        let fp = self.negative.below(edge);
        let flagged = tp + fp;
        let precision = if flagged > 0 { tp as f64 / flagged as f64 } else { 1.0 };
        let recall = if self.positive.n > 0 { tp as f64 / self.positive.n as f64 } else { 0.0 };
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        let threshold = ((LO + edge as f64 * ScoreBins::bin_width()) * 1000.0).round() / 1000.0;
        Detection { threshold, flagged, precision, recall, f1 }
    }

    /// Detection at every `step`-th bin edge across the range where scores lie.
    pub fn sweep(&self, step: usize) -> Vec<Detection> {
        let (Some(lo), Some(hi)) =
            (extreme(self.positive.min, self.negative.min, f32::min), extreme(self.positive.max, self.negative.max, f32::max))
        else {
            return Vec::new();
        };
        let edge_of = |s: f32| ((s as f64 - LO) / ScoreBins::bin_width()).floor().clamp(0.0, SCORE_BINS as f64) as usize;
        let (first, last) = (edge_of(lo), (edge_of(hi) + 1).min(SCORE_BINS));
        (first..=last).step_by(step.max(1)).map(|e| self.at_edge(e)).collect()
    }
}

/// Seconds spent, summed over parts (a resumed run counts only the work it did).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub total: f64,
    pub decode: f64,
    pub encode: f64,
    pub write: f64,
}

/// Everything one part contributes to the report; written beside the part's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartStats {
    pub part: usize,
    /// The shard's file name, or the rows it covers.
    pub name: String,
    pub seen: u64,
    pub kept: u64,
    pub dropped: BTreeMap<String, u64>,
    pub examples: BTreeMap<String, Vec<Example>>,
    /// Best caption score of every pair that reached scoring.
    pub scores: ScoreBins,
    pub truth: Option<TruthBins>,
    /// Keys of the kept pairs, in order (only with de-duplication, to name what a duplicate
    /// duplicates after a resume).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_keys: Vec<String>,
    pub timing: Timing,
}

impl PartStats {
    pub fn new(part: usize, name: impl Into<String>) -> Self {
        PartStats { part, name: name.into(), ..Default::default() }
    }

    pub fn drop_pair(&mut self, reason: DropReason, example: Example) {
        let name = reason.name();
        *self.dropped.entry(name.clone()).or_default() += 1;
        add_example(self.examples.entry(name).or_default(), example);
    }

    /// Adds another part's figures (not its kept keys, which the caller orders).
    pub fn merge(&mut self, o: &PartStats) {
        self.seen += o.seen;
        self.kept += o.kept;
        for (k, v) in &o.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
        for (k, list) in &o.examples {
            let mine = self.examples.entry(k.clone()).or_default();
            for e in list {
                add_example(mine, e.clone());
            }
        }
        self.scores.merge(&o.scores);
        match (&mut self.truth, &o.truth) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.truth = Some(b.clone()),
            _ => {}
        }
        self.timing.total += o.timing.total;
        self.timing.decode += o.timing.decode;
        self.timing.encode += o.timing.encode;
        self.timing.write += o.timing.write;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// Keeps the `EXAMPLES_PER_REASON` examples of smallest rank.
fn add_example(list: &mut Vec<Example>, e: Example) {
    if list.iter().any(|x| x.key == e.key && x.location == e.location) {
        return;
    }
    let rank = e.rank();
    let at = list.partition_point(|x| x.rank() <= rank);
    if at < EXAMPLES_PER_REASON {
        list.insert(at, e);
        list.truncate(EXAMPLES_PER_REASON);
    }
}

/// The report of a whole run, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FilterReport {
    pub input: String,
    pub format: String,
    pub checkpoint: String,
    pub model: String,
    pub dry_run: bool,
    pub min_score: f32,
    pub dedup: Option<f32>,
    pub min_side: u32,
    pub langs: Vec<String>,
    pub parts: usize,
    pub parts_resumed: usize,
    pub seen: u64,
    pub kept: u64,
    pub dropped: BTreeMap<String, u64>,
    pub score: ScoreSummary,
    pub examples: BTreeMap<String, Vec<Example>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<TruthReport>,
    pub seconds: f64,
    pub pairs_per_s: f64,
    /// Shares of the time in decoding, encoding and writing; the rest is reading and bookkeeping.
    pub time_share: BTreeMap<String, f64>,
    pub outputs: Vec<String>,
}

impl FilterReport {
    /// Pairs the reader could read, whatever the filter then decided about them. A run where
    /// this is 0 found nothing to judge: `vlp filter` then fails, with the report written.
    pub fn readable(&self) -> u64 {
        let judged = [DropReason::TooSmall, DropReason::Language, DropReason::LowScore, DropReason::Duplicate].map(DropReason::name);
        let unreadable: u64 = self.dropped.iter().filter(|(k, _)| !judged.contains(k)).map(|(_, n)| n).sum();
        self.seen.saturating_sub(unreadable)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub scored: u64,
    pub mean: Option<f64>,
    pub min: Option<f32>,
    pub max: Option<f32>,
    /// Lower bin edges (bin width 0.005) of the 1st, 5th, 25th, 50th, 75th, 95th and 99th percentiles.
    pub quantiles: BTreeMap<String, f64>,
    pub histogram: HistogramData,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistogramData {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TruthReport {
    /// The boolean metadata field that marks bad pairs.
    pub field: String,
    pub bad_pairs: u64,
    pub good_pairs: u64,
    pub at_min_score: Detection,
    pub best_f1: Option<Detection>,
    pub sweep: Vec<Detection>,
}

impl ScoreSummary {
    pub fn of(bins: &ScoreBins) -> Self {
        let mut quantiles = BTreeMap::new();
        for (name, q) in [("p01", 0.01), ("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99)] {
            if let Some(v) = bins.quantile(q) {
                quantiles.insert(name.to_string(), (v * 1000.0).round() / 1000.0);
            }
        }
        ScoreSummary {
            scored: bins.n,
            mean: (bins.n > 0).then(|| bins.sum / bins.n as f64),
            min: bins.min,
            max: bins.max,
            quantiles,
            histogram: HistogramData { lo: LO, hi: HI, counts: bins.counts.clone() },
        }
    }
}

impl TruthReport {
    pub fn of(field: &str, t: &TruthBins, min_score: f32) -> Self {
        let sweep = t.sweep(4);
        let best_f1 = sweep.iter().copied().max_by(|a, b| a.f1.total_cmp(&b.f1));
        TruthReport {
            field: field.to_string(),
            bad_pairs: t.positive.n,
            good_pairs: t.negative.n,
            at_min_score: t.at(min_score as f64),
            best_f1,
            sweep,
        }
    }
}

/// The histogram of scores, cut to the range where they lie, with the threshold marked.
pub fn histogram(bins: &ScoreBins, min_score: f32, title: &str) -> vlp_plot::Histogram {
    let w = ScoreBins::bin_width();
    let nonzero: Vec<usize> = bins.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, _)| i).collect();
    let threshold_bin = vlp_plot::bin_of(min_score as f64, LO, HI, SCORE_BINS);
    let first = nonzero.first().copied().unwrap_or(threshold_bin).min(threshold_bin).saturating_sub(2);
    let last = (nonzero.last().copied().unwrap_or(threshold_bin).max(threshold_bin) + 3).min(SCORE_BINS);
    // Merge bins pairwise until at most 80 remain, so a bar is wide enough to see.
    let mut counts = bins.counts[first..last].to_vec();
    let mut width = w;
    while counts.len() > 80 {
        counts = counts.chunks(2).map(|c| c.iter().sum()).collect();
        width *= 2.0;
    }
    let lo = LO + first as f64 * w;
    vlp_plot::Histogram {
        title: title.to_string(),
        x_label: "cosine similarity of image and caption".into(),
        lo,
        hi: lo + counts.len() as f64 * width,
        counts,
        marker: Some((min_score as f64, format!("--min-score {min_score}"))),
    }
}

/// Precision and recall of the bad-pair detector against the threshold.
pub fn detection_panel(t: &TruthReport) -> vlp_plot::Panel {
    let line = |name: &str, f: fn(&Detection) -> f64| vlp_plot::Series::new(name, t.sweep.iter().map(|d| (d.threshold, f(d))).collect());
    vlp_plot::Panel::new(
        format!("finding the {} pairs marked '{}'", t.bad_pairs, t.field),
        "threshold (pairs scoring below are flagged)",
        "",
    )
    .with(line("precision", |d| d.precision))
    .with(line("recall", |d| d.recall))
    .with(line("F1", |d| d.f1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_sweep_follow_the_bins() {
        let mut t = TruthBins::default();
        // bad pairs score low, good pairs high, one good pair low
        for s in [-0.2, -0.1, 0.0, 0.05] {
            t.positive.add(s);
        }
        for s in [0.5, 0.6, 0.7, 0.02] {
            t.negative.add(s);
        }
        let d = t.at(0.1);
        assert_eq!((d.flagged, d.recall), (5, 1.0));
        assert!((d.precision - 0.8).abs() < 1e-12);
        let d = t.at(0.0);
        // strictly below 0.0: -0.2 and -0.1
        assert_eq!((d.flagged, d.recall, d.precision), (2, 0.5, 1.0));
        // the median bad score is -0.1: its bin's lower edge is within one bin width below it
        let median = t.positive.quantile(0.5).unwrap();
        assert!(median <= -0.1 + 1e-6 && median > -0.1 - ScoreBins::bin_width() - 1e-6, "{median}");
        let sweep = t.sweep(1);
        assert!(sweep.windows(2).all(|w| w[0].recall <= w[1].recall && w[0].flagged <= w[1].flagged));
        assert_eq!(sweep.last().unwrap().recall, 1.0);
    }

    #[test]
    fn merged_examples_are_the_same_sample_whatever_the_order() {
        let mk = |i: usize| Example::new(&format!("k{i}"), "x", "", None, "");
        let (mut a, mut b, mut all) = (PartStats::new(0, "a"), PartStats::new(1, "b"), PartStats::new(0, "all"));
        for i in 0..100 {
            let part = if i % 3 == 0 { &mut a } else { &mut b };
            part.drop_pair(DropReason::LowScore, mk(i));
            all.drop_pair(DropReason::LowScore, mk(i));
        }
        let mut ab = PartStats::default();
        ab.merge(&b);
        ab.merge(&a);
        assert_eq!(ab.dropped["low_score"], 100);
        assert_eq!(ab.examples["low_score"], all.examples["low_score"]);
        assert_eq!(ab.examples["low_score"].len(), EXAMPLES_PER_REASON);
    }

    #[test]
    fn stats_survive_a_json_round_trip() {
        let mut p = PartStats::new(3, "shard-3.tar");
        p.scores.add(0.25);
        p.drop_pair(DropReason::Duplicate, Example::new("k", "s:k", "a cat", Some(0.9), "of j"));
        let back: PartStats = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
