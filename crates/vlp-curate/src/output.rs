//! Kept pairs written back in the input's own format, with the score added: WebDataset shards
//! (the score in each sample's JSON), JSONL manifests and CSV/TSV tables (a `similarity` field or
//! column). Image paths of manifests and tables are written absolute, so the output can live
//! anywhere; images themselves are not copied.

use crate::{CurateError, Result};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use vlp_data::{Caption, Sample, WdsWriter};

/// The name of the score in the output, as LAION's metadata calls it.
pub const SCORE_FIELD: &str = "similarity";

/// The input formats, which are also the output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    WebDataset,
    Jsonl,
    Csv { separator: u8 },
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::WebDataset => "webdataset",
            Format::Jsonl => "jsonl",
            Format::Csv { .. } => "csv",
        }
    }
}

/// Where one part's kept pairs go.
pub trait PartSink {
    /// Writes a kept pair with its kept captions (at least one) and its best score.
    fn write(&mut self, sample: &Sample, captions: &[&Caption], score: f32) -> Result<()>;
    /// Makes the part's output visible (renames it into place).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A dry run: nothing written.
pub struct NoSink;

impl PartSink for NoSink {
    fn write(&mut self, _: &Sample, _: &[&Caption], _: f32) -> Result<()> {
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// One output shard for one input shard, of the same file name.
pub struct ShardSink {
    writer: WdsWriter,
}

impl ShardSink {
    pub fn new(dest: &Path) -> Result<Self> {
        Ok(ShardSink { writer: WdsWriter::single(dest)? })
    }
}

impl PartSink for ShardSink {
    fn write(&mut self, s: &Sample, captions: &[&Caption], score: f32) -> Result<()> {
        let mut meta = s.meta.clone();
        meta.insert(SCORE_FIELD.into(), score_value(score));
        // a shard sample has one caption; anything else joins its kept captions by line
        let text: Vec<&str> = captions.iter().map(|c| c.text.as_str()).collect();
        Ok(self.writer.write(&s.key, &s.image, &s.image_ext, &text.join("\n"), &meta)?)
    }
    fn finish(self: Box<Self>) -> Result<()> {
        self.writer.finish()?;
        Ok(())
    }
}

/// Lines (JSONL records or CSV rows) of one part, in a temporary file renamed when complete;
/// [`concatenate`] joins the parts into the final file.
pub struct RowSink {
    format: Format,
    /// The directory relative image paths are resolved against.
    base: PathBuf,
    /// CSV: the input's header, in order, and which columns hold the image and the caption.
    columns: Vec<String>,
    image_column: String,
    caption_column: String,
    out: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl RowSink {
    pub fn new(format: Format, base: &Path, columns: &[String], image_column: &str, caption_column: &str, dest: &Path) -> Result<Self> {
        let tmp = vlp_atomic::temp_path(dest);
        let file = std::fs::File::create(&tmp).map_err(|e| CurateError::io(&tmp, e))?;
        Ok(RowSink {
            format,
            base: base.to_path_buf(),
            columns: columns.to_vec(),
            image_column: image_column.to_string(),
            caption_column: caption_column.to_string(),
            out: std::io::BufWriter::new(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    fn absolute_image(&self, meta: &Map<String, Value>) -> Option<String> {
        let rel = meta.get("image").and_then(Value::as_str)?;
        let p = self.base.join(rel);
        Some(std::fs::canonicalize(&p).unwrap_or(p).display().to_string())
    }
}

impl PartSink for RowSink {
    fn write(&mut self, s: &Sample, captions: &[&Caption], score: f32) -> Result<()> {
        let image = self.absolute_image(&s.meta).unwrap_or_else(|| s.key.clone());
        let line = match self.format {
            Format::Csv { separator } => {
                let mut w = csv::WriterBuilder::new().delimiter(separator).has_headers(false).from_writer(Vec::new());
                let mut row: Vec<String> = self
                    .columns
                    .iter()
                    .map(|c| {
                        if *c == self.image_column {
                            image.clone()
                        } else if *c == self.caption_column {
                            captions[0].text.clone()
                        } else {
                            s.meta.get(c).and_then(Value::as_str).unwrap_or("").to_string()
                        }
                    })
                    .collect();
                row.push(format!("{score:.6}"));
                w.write_record(&row).map_err(|e| CurateError::Invalid(format!("{}: {e}", self.tmp.display())))?;
                w.into_inner().map_err(|e| CurateError::Invalid(e.to_string()))?
            }
            _ => {
                let mut obj = s.meta.clone();
                obj.insert("image".into(), Value::String(image));
                if !obj.contains_key("id") {
                    obj.insert("id".into(), Value::String(s.key.clone()));
                }
                obj.insert("captions".into(), Value::Array(captions.iter().map(|c| caption_value(c)).collect()));
                obj.insert(SCORE_FIELD.into(), score_value(score));
                let mut line = serde_json::to_vec(&Value::Object(obj)).expect("a JSON map serialises");
                line.push(b'\n');
                line
            }
        };
        self.out.write_all(&line).map_err(|e| CurateError::io(&self.tmp, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let RowSink { out, tmp, dest, .. } = *self;
        out.into_inner().map_err(|e| CurateError::io(&tmp, e.into_error()))?;
        vlp_atomic::commit(&tmp, &dest).map_err(|e| CurateError::io(&dest, e))
    }
}

fn score_value(score: f32) -> Value {
    // six decimals: enough for any threshold, and the JSON stays readable
    serde_json::Number::from_f64((score as f64 * 1e6).round() / 1e6).map(Value::Number).unwrap_or(Value::Null)
}

fn caption_value(c: &Caption) -> Value {
    if c.lang.is_none() && c.field.is_none() {
        return Value::String(c.text.clone());
    }
    c.to_json()
}

/// Joins part files, in order, under an optional header line, into `dest` (atomically).
pub fn concatenate(parts: &[PathBuf], header: Option<&[u8]>, dest: &Path) -> Result<()> {
    let mut failed_part = None;
    vlp_atomic::write_with(dest, |out| {
        if let Some(h) = header {
            out.write_all(h)?;
        }
        for p in parts {
            let mut f = std::fs::File::open(p).inspect_err(|_| failed_part = Some(p.clone()))?;
            std::io::copy(&mut f, out)?;
        }
        Ok(())
    })
    .map_err(|e| CurateError::io(failed_part.as_deref().unwrap_or(dest), e))
}

/// A CSV header line: the input's columns and the score.
pub fn csv_header(columns: &[String], separator: u8) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().delimiter(separator).has_headers(false).from_writer(Vec::new());
    let mut row = columns.to_vec();
    row.push(SCORE_FIELD.into());
    w.write_record(&row).expect("writing to memory");
    w.into_inner().expect("writing to memory")
}
