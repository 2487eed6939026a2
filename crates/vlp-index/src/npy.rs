//! NumPy `.npy` files (format 1.0/2.0, C order): float32 matrices and integer id matrices, so
//! vectors can go to and come from FAISS, a vector database or `ann_bench.py`.

use crate::{IndexError, Result};
use std::io::Write;
use std::path::Path;

fn bad(path: &Path, m: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt { path: path.display().to_string(), message: format!("not a usable .npy: {m}") }
}

/// A 2-D array, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyMatrix<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(String, Vec<usize>, usize)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "no \\x93NUMPY magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().expect("4")) as usize, 12),
        v => return Err(bad(path, format!("format version {v}"))),
    };
    let header = std::str::from_utf8(bytes.get(start..start + len).ok_or_else(|| bad(path, "header cut off"))?)
        .map_err(|_| bad(path, "header not text"))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))? + name.len() + 2;
        Some(header[at..].trim_start_matches([':', ' ']))
    };
    let descr =
        field("descr").and_then(|s| s.strip_prefix('\'')).and_then(|s| s.split('\'').next()).ok_or_else(|| bad(path, "no descr"))?;
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad(path, "Fortran order; save with np.ascontiguousarray"));
    }
    let shape_text =
        field("shape").and_then(|s| s.strip_prefix('(')).and_then(|s| s.split(')').next()).ok_or_else(|| bad(path, "no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad(path, format!("shape {shape_text}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((descr.to_string(), shape, start + len))
}

fn matrix_of<T>(path: &Path, shape: &[usize], data: Vec<T>) -> Result<NpyMatrix<T>> {
    let (rows, cols) = match shape {
        [r, c] => (*r, *c),
        [r] => (*r, 1),
        s => return Err(bad(path, format!("shape {s:?}; expected 2-D"))),
    };
    if data.len() != rows * cols {
        return Err(bad(path, format!("{} values for shape {rows}×{cols} (truncated?)", data.len())));
    }
    Ok(NpyMatrix { rows, cols, data })
}

pub fn read_f32(path: &Path) -> Result<NpyMatrix<f32>> {
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    let (descr, shape, off) = parse_header(path, &bytes)?;
    let body = &bytes[off..];
    let data: Vec<f32> = match descr.as_str() {
        "<f4" => body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
        "<f8" => body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32).collect(),
        d => return Err(bad(path, format!("dtype {d}; expected float32 (<f4)"))),
    };
    matrix_of(path, &shape, data)
}

pub fn read_ints(path: &Path) -> Result<NpyMatrix<i64>> {
    let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
    let (descr, shape, off) = parse_header(path, &bytes)?;
    let body = &bytes[off..];
    let data: Vec<i64> = match descr.as_str() {
        "<i8" => body.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect(),
        "<i4" => body.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64).collect(),
        "<u4" => body.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4")) as i64).collect(),
        d => return Err(bad(path, format!("dtype {d}; expected integers"))),
    };
    matrix_of(path, &shape, data)
}

/// Writes a float32 `[rows, cols]` matrix (format 1.0), all or nothing (`vlp_atomic`).
pub fn write_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    vlp_atomic::write_with(path, |f| {
        f.write_all(b"\x93NUMPY\x01\x00")?;
        f.write_all(&(header.len() as u16).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        for v in data {
            f.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    })
    .map_err(|e| IndexError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_f32(&p, 2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        let m = read_f32(&p).unwrap();
        assert_eq!((m.rows, m.cols, m.data[5]), (2, 3, 6.5));
        assert_eq!(std::fs::read(&p).unwrap().len() % 64, (2 * 3 * 4));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        assert!(read_f32(&p).unwrap_err().to_string().contains("truncated"));
        assert!(read_ints(&dir.path().join("none.npy")).is_err());
    }
}
