//! One modality's embeddings in one file, memory-mapped.
//!
//! ```text
//! "VLPVEC02"                 8 bytes
//! header length (u32 LE)     then the header, JSON: dim, rows, model identity, checksum
//! padding to 64 bytes
//! rows × dim f32 or f16 LE   the vectors (the header's `precision`)
//! ids                        UTF-8, one per line
//! ```
//! The checksum (xxh3-64 over vectors and ids, [`crate::checksum`]) is checked on open, so a corrupted file is
//! refused rather than searched.

use crate::checksum::checksum;
use crate::exact::Rows;
use crate::{IndexError, Result};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

/// 02: the checksum is xxh3-64 ([`crate::checksum`]); 01 held a word-wise FNV fold.
const MAGIC: &[u8; 8] = b"VLPVEC02";
const ALIGN: usize = 64;

/// How the values are stored: f32, or f16 at half the size. Per-image token embeddings are
/// always f16 (read only to re-rank a few candidates); the global vectors are f16 by option
/// (`vlp index build --precision f16`), searched as stored, never widened as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    /// `values` as this precision will store them, so that what is built from them (a graph)
    /// is built from what will be searched.
    pub fn round(self, mut values: Vec<f32>) -> Vec<f32> {
        if self == Precision::F16 {
            values.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
        values
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("precision {s:?}: expected f32 or f16")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreHeader {
    pub dim: usize,
    pub rows: usize,
    #[serde(default)]
    pub precision: Precision,
    /// What made the vectors: a hash of the model's weights and config. Queries must come from
    /// the same model.
    pub model: String,
    /// Byte offset of the ids.
    pub ids_offset: usize,
    pub ids_len: usize,
    /// [`checksum`] of the vector and id bytes.
    pub checksum: String,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt { path: path.display().to_string(), message: what.to_string() }
}

/// Writes `vectors` (`[ids.len(), dim]` row-major) at `precision` under a temporary name, then
/// renames.
pub fn write_store(path: &Path, ids: &[String], dim: usize, vectors: &[f32], model: &str, precision: Precision) -> Result<()> {
    if vectors.len() != ids.len() * dim {
        return Err(IndexError::Invalid(format!("{} floats for {} ids of width {dim}", vectors.len(), ids.len())));
    }
    if let Some(bad) = ids.iter().find(|i| i.contains('\n') || i.is_empty()) {
        return Err(IndexError::Invalid(format!("item id {bad:?}: ids must be non-empty and one line")));
    }
    let data: Vec<u8> = match precision {
        Precision::F32 => vectors.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Precision::F16 => vectors.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
    };
    let id_bytes = ids.join("\n").into_bytes();
    let checksum = checksum(&[&data, &id_bytes]);
    // the header's own length moves the data; settle it with a fixed-width offset field
    let mut header = StoreHeader { dim, rows: ids.len(), precision, model: model.into(), ids_offset: 0, ids_len: id_bytes.len(), checksum };
    let data_offset = |h: &StoreHeader| {
        let json_len = serde_json::to_vec(h).expect("serialises").len();
        (8 + 4 + json_len).div_ceil(ALIGN) * ALIGN
    };
    header.ids_offset = usize::MAX / 2; // widest the field will be
    let start = data_offset(&header);
    header.ids_offset = start + data.len();
    let json = serde_json::to_vec(&header).expect("serialises");
    vlp_atomic::write_with(path, |f| {
        f.write_all(MAGIC)?;
        // the padding is part of the header (JSON allows trailing spaces), so data starts at `start`
        f.write_all(&((start - 12) as u32).to_le_bytes())?;
        f.write_all(&json)?;
        f.write_all(&vec![b' '; start - 12 - json.len()])?;
        f.write_all(&data)?;
        f.write_all(&id_bytes)
    })
    .map_err(|e| IndexError::io(path, e))
}

/// An opened store, f32 or f16: the header, the ids, and the vectors in place.
pub struct VectorStore {
    pub header: StoreHeader,
    pub ids: Vec<String>,
    map: Mmap,
    data_offset: usize,
    pub path: PathBuf,
}

impl VectorStore {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| IndexError::io(path, e))?;
        // SAFETY: the file is only ever replaced by rename, never written in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| IndexError::io(path, e))?;
        if map.len() >= 8 && &map[..8] == b"VLPVEC01" {
            return Err(corrupt(path, "a vector store of an earlier vlp (format 01, another checksum); rebuild the index"));
        }
        if map.len() < 12 || &map[..8] != MAGIC {
            return Err(corrupt(path, "not a vlp vector store (bad magic; wrong file or another version)"));
        }
        let json_len = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes")) as usize;
        let json = map.get(12..12 + json_len).ok_or_else(|| corrupt(path, "header cut off"))?;
        let header: StoreHeader = serde_json::from_slice(json).map_err(|e| corrupt(path, format!("header: {e}")))?;
        let data_offset = (12 + json_len).div_ceil(ALIGN) * ALIGN;
        let data_len = header.rows.checked_mul(header.dim).and_then(|n| n.checked_mul(header.precision.bytes()));
        let expected = data_len.and_then(|d| data_offset.checked_add(d)).filter(|&e| e == header.ids_offset);
        let end = expected.and_then(|e| e.checked_add(header.ids_len));
        if end != Some(map.len()) {
            return Err(corrupt(
                path,
                format!(
                    "{} bytes, but its header describes {} rows of {} {:?} values and {} id bytes (truncated?)",
                    map.len(),
                    header.rows,
                    header.dim,
                    header.precision,
                    header.ids_len
                ),
            ));
        }
        let data = &map[data_offset..header.ids_offset];
        let id_bytes = &map[header.ids_offset..];
        if checksum(&[data, id_bytes]) != header.checksum {
            return Err(corrupt(path, "checksum mismatch: the vectors or ids were changed or damaged"));
        }
        let ids_text = std::str::from_utf8(id_bytes).map_err(|_| corrupt(path, "ids are not UTF-8"))?;
        let ids: Vec<String> = if header.rows == 0 { Vec::new() } else { ids_text.split('\n').map(String::from).collect() };
        if ids.len() != header.rows {
            return Err(corrupt(path, format!("{} ids for {} rows", ids.len(), header.rows)));
        }
        Ok(VectorStore { header, ids, map, data_offset, path: path.to_path_buf() })
    }

    pub fn dim(&self) -> usize {
        self.header.dim
    }
    pub fn len(&self) -> usize {
        self.header.rows
    }
    pub fn is_empty(&self) -> bool {
        self.header.rows == 0
    }

    pub fn precision(&self) -> Precision {
        self.header.precision
    }

    /// All vectors, `[rows, dim]`, as stored.
    pub fn rows(&self) -> Rows<'_> {
        let bytes = &self.map[self.data_offset..self.header.ids_offset];
        // the data starts 64-byte aligned in a page-aligned map, so the casts are aligned
        match self.header.precision {
            Precision::F32 => Rows::F32(cast_slice(bytes)),
            Precision::F16 => Rows::F16(cast_slice(bytes)),
        }
    }

    /// Row `i`, as f32, into `out`.
    pub fn row_into(&self, i: usize, out: &mut Vec<f32>) {
        out.clear();
        self.rows().extend_row(i, self.dim(), out);
    }

    /// Row `i`, as f32.
    pub fn row_vec(&self, i: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dim());
        self.row_into(i, &mut out);
        out
    }

    /// Every row as f32: borrowed in place when stored so, widened otherwise.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self.rows() {
            Rows::F32(v) => Cow::Borrowed(v),
            Rows::F16(v) => Cow::Owned(v.iter().map(|h| half::f16::from_bits(*h).to_f32()).collect()),
        }
    }

    /// Refuses a query vector made by another model or of another width.
    pub fn check_query(&self, model: &str, dim: usize) -> Result<()> {
        if model != self.header.model {
            return Err(IndexError::ModelMismatch {
                path: self.path.display().to_string(),
                index: self.header.model.clone(),
                query: model.to_string(),
            });
        }
        if dim != self.dim() {
            return Err(IndexError::Invalid(format!("query has {dim} dimensions, {} holds {}", self.path.display(), self.dim())));
        }
        Ok(())
    }
}

/// `bytes` as `T`s, which every bit pattern makes (f32, u16).
fn cast_slice<T: Copy>(bytes: &[u8]) -> &[T] {
    let size = std::mem::size_of::<T>();
    assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) && bytes.len().is_multiple_of(size), "aligned store data");
    // SAFETY: aligned (checked), length a multiple of the size, and T is f32 or u16, for which
    // every bit pattern is valid; the bytes are little-endian, as is every target vlp builds for.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let p = dir.join("v.vec");
        let ids: Vec<String> = (0..5).map(|i| format!("item{i}")).collect();
        let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        write_store(&p, &ids, 3, &v, "model-a", Precision::F32).unwrap();
        p
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = VectorStore::open(&sample(dir.path())).unwrap();
        assert_eq!((s.len(), s.dim()), (5, 3));
        assert_eq!(s.row_vec(4), [6.0, 6.5, 7.0]);
        assert_eq!(s.precision(), Precision::F32);
        assert_eq!(s.ids[2], "item2");
        assert!(s.check_query("model-a", 3).is_ok());
        let e = s.check_query("model-b", 3).unwrap_err().to_string();
        assert!(e.contains("model-a") && e.contains("model-b"), "{e}");
    }

    #[test]
    fn half_precision_round_trips_within_f16_rounding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.vec");
        let ids: Vec<String> = (0..4).map(|i| format!("item{i}")).collect();
        let v: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        write_store(&p, &ids, 3, &v, "m", Precision::F16).unwrap();
        let f32_path = dir.path().join("f.vec");
        write_store(&f32_path, &ids, 3, &v, "m", Precision::F32).unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len() as usize;
        assert_eq!(size(&f32_path) - size(&p), 12 * 2, "two bytes a value fewer");
        let h = VectorStore::open(&p).unwrap();
        assert_eq!((h.len(), h.dim(), h.precision()), (4, 3, Precision::F16));
        let all = h.to_f32();
        assert_eq!(h.row_vec(2), all[6..9]);
        assert_eq!(*all, *Precision::F16.round(v.clone()), "stored as rounded");
        // f16 keeps 11 significant bits: relative error below 2^-11
        assert!(v.iter().zip(all.iter()).all(|(a, b)| (a - b).abs() <= a.abs() / 2048.0 + 1e-7), "{v:?} {all:?}");
        let q = [0.5, -1.0, 2.0];
        let want: f32 = q.iter().zip(&all[3..6]).map(|(a, b)| a * b).sum();
        assert!((h.rows().score(&q, 1) - want).abs() < 1e-6);
    }

    #[test]
    fn truncation_flipped_bytes_and_foreign_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        let good = std::fs::read(&p).unwrap();
        for (what, bytes) in [
            ("truncated", good[..good.len() - 3].to_vec()),
            ("flipped", {
                let mut b = good.clone();
                let n = b.len() - 40;
                b[n] ^= 0x10;
                b
            }),
            ("foreign", b"PK\x03\x04 not a store at all".to_vec()),
            ("empty", Vec::new()),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            let e = VectorStore::open(&p).err().unwrap_or_else(|| panic!("{what} accepted")).to_string();
            assert!(e.contains("v.vec"), "{what}: {e}");
        }
    }
}
