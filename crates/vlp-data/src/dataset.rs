//! The on-disk layout that every built data set shares, and its checks.
//!
//! ```text
//! DIR/dataset.json          name, splits and their counts
//! DIR/images/...            the image files
//! DIR/{split}.jsonl         manifest: {"id","image","captions":[{"text","lang","field"}], ...}
//! DIR/{split}.texts.jsonl   distinct texts: {"id","text","lang","field"}
//! DIR/{split}.t2i.qrels     TREC qrels, text query → image, graded 2 exact / 1 related
//! DIR/{split}.i2t.qrels     TREC qrels, image query → text
//! ```
//! A manifest is an ordinary JSONL manifest: `vlp train --train DIR/train.jsonl` reads it, and so
//! does `--train DIR` with a split.

use crate::sample::Caption;
use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

pub const DATASET_FILE: &str = "dataset.json";
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Retrieval direction of a qrels file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Text query, image documents.
    T2i,
    /// Image query, text documents.
    I2t,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::T2i => "t2i",
            Direction::I2t => "i2t",
        }
    }
}

/// Paths inside a built data set directory.
#[derive(Debug, Clone)]
pub struct DatasetDir {
    root: PathBuf,
}

impl DatasetDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DatasetDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn info_path(&self) -> PathBuf {
        self.root.join(DATASET_FILE)
    }
    pub fn manifest(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}.jsonl"))
    }
    pub fn texts(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}.texts.jsonl"))
    }
    pub fn qrels(&self, split: &str, dir: Direction) -> PathBuf {
        self.root.join(format!("{split}.{}.qrels", dir.as_str()))
    }
    pub fn info(&self) -> Result<DatasetInfo> {
        let path = self.info_path();
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| DataError::input(path.display(), e.to_string()))
    }
}

/// `dataset.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub name: String,
    /// Per split: number of images and of distinct texts.
    pub splits: BTreeMap<String, SplitCounts>,
    /// Free-form description of how it was built (seed, sources, licences).
    #[serde(default)]
    pub source: Value,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SplitCounts {
    pub images: usize,
    pub texts: usize,
    pub t2i_judgements: usize,
    pub i2t_judgements: usize,
}

/// What an item is judged by: items whose `exact` keys meet are grade 2; otherwise items whose
/// `related` keys meet are grade 1.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub exact: Vec<String>,
    pub related: Vec<String>,
}

/// An image of a split, as the builder collects it.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub id: String,
    /// Path relative to the data set root.
    pub image: String,
    pub captions: Vec<Caption>,
    pub meta: Map<String, Value>,
    /// Keys the image is judged by, as a document.
    pub judged: Judged,
    /// Keys its captions carry, as queries. Usually the same as `judged`; they differ where
    /// several items share one image (pixel-identical emoji) but each text names only its own.
    pub caption_judged: Judged,
}

/// A distinct text of a split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextRecord {
    pub id: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// Writes one split: manifest, distinct texts (each caption once, its judgement keys merged over
/// every image it describes) and both qrels files.
pub fn write_split(dir: &DatasetDir, split: &str, images: &[ImageRecord]) -> Result<SplitCounts> {
    // Distinct texts, keyed by (text, lang, field) so "猫" as a zh name and a zh keyword stay apart
    // only when the fields differ.
    let mut text_index: HashMap<(String, Option<String>, Option<String>), usize> = HashMap::new();
    let mut texts: Vec<(TextRecord, HashSet<String>, HashSet<String>)> = Vec::new();
    for img in images {
        for cap in &img.captions {
            let key = (cap.text.clone(), cap.lang.clone(), cap.field.clone());
            let i = *text_index.entry(key).or_insert_with(|| {
                let id = format!("{split}-t{:06}", texts.len());
                texts.push((
                    TextRecord { id, text: cap.text.clone(), lang: cap.lang.clone(), field: cap.field.clone() },
                    HashSet::new(),
                    HashSet::new(),
                ));
                texts.len() - 1
            });
            texts[i].1.extend(img.caption_judged.exact.iter().cloned());
            texts[i].2.extend(img.caption_judged.related.iter().cloned());
        }
    }
    let mut by_exact: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_related: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, img) in images.iter().enumerate() {
        for k in &img.judged.exact {
            by_exact.entry(k).or_default().push(i);
        }
        for k in &img.judged.related {
            by_related.entry(k).or_default().push(i);
        }
    }
    // grade[text][image], built sparsely.
    let mut t2i: Vec<BTreeMap<usize, u8>> = vec![BTreeMap::new(); texts.len()];
    for (t, (_, exact, related)) in texts.iter().enumerate() {
        for k in related {
            for &i in by_related.get(k.as_str()).into_iter().flatten() {
                t2i[t].entry(i).or_insert(1);
            }
        }
        for k in exact {
            for &i in by_exact.get(k.as_str()).into_iter().flatten() {
                t2i[t].insert(i, 2);
            }
        }
    }
    let mut i2t: Vec<BTreeMap<usize, u8>> = vec![BTreeMap::new(); images.len()];
    for (t, row) in t2i.iter().enumerate() {
        for (&i, &g) in row {
            i2t[i].insert(t, g);
        }
    }

    let mut counts = SplitCounts { images: images.len(), texts: texts.len(), ..Default::default() };
    write_lines(&dir.manifest(split), images.iter().map(|img| manifest_line(img, split)))?;
    write_lines(&dir.texts(split), texts.iter().map(|(t, _, _)| serde_json::to_string(t).expect("serialises")))?;
    let mut lines = Vec::new();
    for (t, row) in t2i.iter().enumerate() {
        for (&i, &g) in row {
            lines.push(format!("{} 0 {} {g}", texts[t].0.id, images[i].id));
        }
    }
    counts.t2i_judgements = lines.len();
    write_lines(&dir.qrels(split, Direction::T2i), lines.into_iter())?;
    let mut lines = Vec::new();
    for (i, row) in i2t.iter().enumerate() {
        for (&t, &g) in row {
            lines.push(format!("{} 0 {} {g}", images[i].id, texts[t].0.id));
        }
    }
    counts.i2t_judgements = lines.len();
    write_lines(&dir.qrels(split, Direction::I2t), lines.into_iter())?;
    Ok(counts)
}

fn manifest_line(img: &ImageRecord, split: &str) -> String {
    let mut obj = Map::new();
    obj.insert("id".into(), Value::String(img.id.clone()));
    obj.insert("image".into(), Value::String(img.image.clone()));
    let caps: Vec<Value> = img.captions.iter().map(Caption::to_json).collect();
    obj.insert("captions".into(), Value::Array(caps));
    obj.insert("split".into(), Value::String(split.to_string()));
    for (k, v) in &img.meta {
        obj.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(obj).to_string()
}

/// Writes lines to `path`, all or nothing (`vlp_atomic`).
pub fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> Result<()> {
    vlp_atomic::write_with(path, |w| {
        for line in lines {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| DataError::io(path, e))
}

/// Writes every split, then `dataset.json`: the shared tail of every builder.
pub fn write_dataset(dir: &DatasetDir, name: &str, by_split: &BTreeMap<&str, Vec<ImageRecord>>, source: Value) -> Result<DatasetInfo> {
    let mut splits = BTreeMap::new();
    for (split, recs) in by_split {
        splits.insert(split.to_string(), write_split(dir, split, recs)?);
    }
    let info = DatasetInfo { name: name.to_string(), splits, source };
    write_info(dir, &info)?;
    Ok(info)
}

/// Writes `dataset.json` (last, so a directory with it is a finished build).
pub fn write_info(dir: &DatasetDir, info: &DatasetInfo) -> Result<()> {
    let json = serde_json::to_string_pretty(info).expect("serialises");
    write_lines(&dir.info_path(), std::iter::once(json))
}

/// Reads the ids (first field) of each JSON line's `id`.
fn read_ids(path: &Path) -> Result<Vec<(String, Map<String, Value>)>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| DataError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let obj: Map<String, Value> =
            serde_json::from_str(&line).map_err(|e| DataError::input(format!("{}:{}", path.display(), n + 1), e.to_string()))?;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DataError::input(format!("{}:{}", path.display(), n + 1), "record has no string \"id\""))?;
        out.push((id, obj));
    }
    Ok(out)
}

/// Reads a qrels file as `(query, doc, grade)` triples.
pub fn read_qrels(path: &Path) -> Result<Vec<(String, String, i32)>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let grade = f
            .get(3)
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| DataError::input(format!("{}:{}", path.display(), n + 1), "expected 'qid 0 docid grade'"))?;
        out.push((f[0].to_string(), f[2].to_string(), grade));
    }
    Ok(out)
}

/// Per-split findings of [`check`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct SplitCheck {
    pub split: String,
    pub images: usize,
    pub texts: usize,
    pub missing_image_files: Vec<String>,
    /// Qrels lines whose query or document id is not in the split.
    pub unresolved_ids: Vec<String>,
    /// Queries (per direction) that have no grade-2 item.
    pub queries_without_exact: Vec<String>,
    /// Texts or images that are never a query.
    pub unjudged: Vec<String>,
}

impl SplitCheck {
    pub fn is_ok(&self) -> bool {
        self.missing_image_files.is_empty()
            && self.unresolved_ids.is_empty()
            && self.queries_without_exact.is_empty()
            && self.unjudged.is_empty()
    }
}

/// Checks a built data set: every image file exists, every qrels id resolves, every text and
/// every image is a query with at least one grade-2 item in each direction.
pub fn check(dir: &DatasetDir) -> Result<Vec<SplitCheck>> {
    let info = dir.info()?;
    let mut out = Vec::new();
    for split in info.splits.keys() {
        let images = read_ids(&dir.manifest(split))?;
        let texts = read_ids(&dir.texts(split))?;
        let mut c = SplitCheck { split: split.clone(), images: images.len(), texts: texts.len(), ..Default::default() };
        for (id, obj) in &images {
            let rel = obj.get("image").and_then(Value::as_str).unwrap_or("");
            if !dir.root().join(rel).is_file() {
                c.missing_image_files.push(format!("{id}: {rel}"));
            }
        }
        let image_ids: HashSet<&str> = images.iter().map(|(id, _)| id.as_str()).collect();
        let text_ids: HashSet<&str> = texts.iter().map(|(id, _)| id.as_str()).collect();
        for (direction, queries, docs) in [(Direction::T2i, &text_ids, &image_ids), (Direction::I2t, &image_ids, &text_ids)] {
            let qrels = read_qrels(&dir.qrels(split, direction))?;
            let mut exact: HashSet<&str> = HashSet::new();
            let mut judged: HashSet<&str> = HashSet::new();
            for (q, d, g) in &qrels {
                if !queries.contains(q.as_str()) || !docs.contains(d.as_str()) {
                    c.unresolved_ids.push(format!("{}: {q} {d}", direction.as_str()));
                }
                judged.insert(q);
                if *g >= 2 {
                    exact.insert(q);
                }
            }
            for q in queries.iter() {
                if !judged.contains(q) {
                    c.unjudged.push(format!("{}: {q}", direction.as_str()));
                } else if !exact.contains(q) {
                    c.queries_without_exact.push(format!("{}: {q}", direction.as_str()));
                }
            }
        }
        c.unjudged.sort();
        c.queries_without_exact.sort();
        out.push(c);
    }
    Ok(out)
}
