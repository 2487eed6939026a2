//! Writes WebDataset tar shards: N samples per numbered shard, or every sample into one named
//! shard. Each shard is written under a temporary name and renamed when complete, so a reader
//! never sees half a shard.

use crate::{DataError, Result};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Writes `PREFIX-000000.tar`, `PREFIX-000001.tar`, ... into a directory, or one named shard.
pub struct WdsWriter {
    dir: PathBuf,
    naming: Naming,
    per_shard: usize,
    open: Option<OpenShard>,
    next_index: usize,
    finished: Vec<PathBuf>,
}

enum Naming {
    Numbered {
        prefix: String,
    },
    /// One shard of this file name, however many samples it holds.
    Fixed {
        name: String,
    },
}

struct OpenShard {
    builder: tar::Builder<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    samples: usize,
}

impl WdsWriter {
    pub fn new(dir: &Path, prefix: &str, per_shard: usize) -> Result<Self> {
        if per_shard == 0 {
            return Err(DataError::input(dir.display(), "samples per shard must be at least 1"));
        }
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        Ok(WdsWriter {
            dir: dir.to_path_buf(),
            naming: Naming::Numbered { prefix: prefix.to_string() },
            per_shard,
            open: None,
            next_index: 0,
            finished: Vec::new(),
        })
    }

    /// Writes every sample into the single shard `path` (created when the first sample comes).
    pub fn single(path: &Path) -> Result<Self> {
        let name = path.file_name().and_then(|n| n.to_str()).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| DataError::input(path.display(), "a shard path needs a file name"))?.to_string();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        Ok(WdsWriter {
            dir: dir.to_path_buf(),
            naming: Naming::Fixed { name },
            per_shard: usize::MAX,
            open: None,
            next_index: 0,
            finished: Vec::new(),
        })
    }

    /// Starts numbering at `index` (to continue an interrupted job next to shards already written).
    pub fn starting_at(mut self, index: usize) -> Self {
        self.next_index = index;
        self
    }

    /// Adds one sample: `KEY.EXT` (the image), `KEY.txt` and, when `meta` is not empty, `KEY.json`.
    pub fn write(&mut self, key: &str, image: &[u8], ext: &str, caption: &str, meta: &Map<String, Value>) -> Result<()> {
        // WebDataset's own rule: the key ends at the first dot of the member's file name, so a
        // key may hold dots in its folders (`dot.dir/s6`) but not after its last '/'.
        if key.is_empty() || key.ends_with('/') || crate::source::split_key(&format!("{key}.{ext}")).0 != key {
            return Err(DataError::input(key, "a WebDataset key must be non-empty, end in a file name and hold no '.' after its last '/'"));
        }
        if self.open.is_none() {
            self.open_next()?;
        }
        let shard = self.open.as_mut().expect("opened above");
        let tmp = shard.tmp.clone();
        let mut add = |name: String, data: &[u8]| -> Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            shard.builder.append_data(&mut header, name, data).map_err(|e| DataError::io(&tmp, e))
        };
        add(format!("{key}.{ext}"), image)?;
        add(format!("{key}.txt"), caption.as_bytes())?;
        if !meta.is_empty() {
            let json = serde_json::to_vec(meta).expect("a JSON map serialises");
            add(format!("{key}.json"), &json)?;
        }
        shard.samples += 1;
        if shard.samples >= self.per_shard {
            self.close_current()?;
        }
        Ok(())
    }

    /// Closes the last shard and returns every shard written, in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        // A shard of a fixed name is written even when no sample went into it (an empty tar, as
        // img2dataset writes for a shard with no success): the next tool is given every name.
        if matches!(self.naming, Naming::Fixed { .. }) && self.open.is_none() && self.finished.is_empty() {
            self.open_next()?;
        }
        self.close_current()?;
        Ok(std::mem::take(&mut self.finished))
    }

    fn open_next(&mut self) -> Result<()> {
        let name = match &self.naming {
            Naming::Numbered { prefix } => format!("{prefix}-{:06}.tar", self.next_index),
            Naming::Fixed { name } => name.clone(),
        };
        self.next_index += 1;
        let dest = self.dir.join(&name);
        let tmp = vlp_atomic::temp_path(&dest);
        let file = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        self.open = Some(OpenShard { builder: tar::Builder::new(BufWriter::new(file)), tmp, dest, samples: 0 });
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(shard) = self.open.take() else { return Ok(()) };
        let writer = shard.builder.into_inner().map_err(|e| DataError::io(&shard.tmp, e))?;
        writer.into_inner().map_err(|e| DataError::io(&shard.tmp, e.into_error()))?;
        vlp_atomic::commit(&shard.tmp, &shard.dest).map_err(|e| DataError::io(&shard.dest, e))?;
        self.finished.push(shard.dest);
        Ok(())
    }
}

impl Drop for WdsWriter {
    /// A writer dropped without `finish` (an error, a panic) removes its unfinished shard.
    fn drop(&mut self) {
        if let Some(shard) = self.open.take() {
            drop(shard.builder);
            let _ = std::fs::remove_file(&shard.tmp);
        }
    }
}
