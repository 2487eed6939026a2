//! WebDataset tar shards as img2dataset writes them: `KEY.jpg|jpeg|png|webp`, `KEY.txt`,
//! `KEY.json`, members of one sample next to each other.

use super::{check_caption, check_image, keep_good_captions, Division, ReadOptions, Skip, SourceItem};
use crate::sample::{Caption, Sample};
use crate::skip::SkipReason;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::PathBuf;

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Members of one sample gathered so far.
#[derive(Default)]
struct Pending {
    /// Whether a member has been seen (a key may be empty: `.jpg` at the top of the tar).
    started: bool,
    key: String,
    image: Option<(String, Vec<u8>)>,
    caption: Option<Vec<u8>>,
    meta: Option<Vec<u8>>,
}

/// Splits a member path into the WebDataset key and extension: the key is everything before the
/// first dot of the file name (directories included), as `webdataset` does.
pub fn split_key(path: &str) -> (String, String) {
    let name_start = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    match path[name_start..].find('.') {
        Some(dot) => (path[..name_start + dot].to_string(), path[name_start + dot + 1..].to_ascii_lowercase()),
        None => (path.to_string(), String::new()),
    }
}

pub(super) fn read(shards: &[PathBuf], opts: &ReadOptions, emit: &mut dyn FnMut(SourceItem) -> bool) {
    let part = opts.part;
    let (shards_read, mut keep): (Vec<&PathBuf>, Box<dyn FnMut(SourceItem) -> bool>) = match super::shard_division(shards.len(), part) {
        Division::Shards => (shards.iter().enumerate().filter(|(i, _)| part.holds(*i)).map(|(_, s)| s).collect(), Box::new(emit)),
        Division::Whole => (shards.iter().collect(), Box::new(emit)),
        Division::Samples => {
            // every item counts, skips too: the same ordinals on every part
            let mut ordinal = 0usize;
            let own = move |item: SourceItem| {
                ordinal += 1;
                !part.holds(ordinal - 1) || emit(item)
            };
            (shards.iter().collect(), Box::new(own))
        }
    };
    for shard in shards_read {
        if !read_shard(shard, opts, &mut keep) {
            return;
        }
    }
}

/// Returns false when the consumer has gone away.
fn read_shard(shard: &PathBuf, opts: &ReadOptions, emit: &mut dyn FnMut(SourceItem) -> bool) -> bool {
    let name = shard.display().to_string();
    let file = match std::fs::File::open(shard) {
        Ok(f) => f,
        Err(e) => return emit(Err(Skip::new(SkipReason::ShardTruncated, &name, format!("cannot open: {e}")))),
    };
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return emit(Err(Skip::new(SkipReason::ShardTruncated, &name, format!("not a tar: {e}")))),
    };
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                return emit(Err(cut_off(&name, &pending, e)));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => continue,
        };
        let (key, ext) = split_key(&path);
        if key != pending.key && pending.started {
            let done = std::mem::take(&mut pending);
            if !emit(finish(done, &name, opts)) {
                return false;
            }
        }
        pending.started = true;
        pending.key = key;
        let wanted = IMAGE_EXTS.contains(&ext.as_str()) || ext == "txt" || ext == "json";
        let mut data = Vec::with_capacity(entry.size().min(opts.max_image_bytes as u64 + 1) as usize);
        let read = if wanted {
            // Read one byte past the limit: enough to know a member is too large without holding it.
            (&mut entry).take(opts.max_image_bytes as u64 + 1).read_to_end(&mut data)
        } else {
            std::io::copy(&mut entry, &mut std::io::sink()).map(|n| n as usize)
        };
        if let Err(e) = read {
            return emit(Err(cut_off(&name, &pending, e)));
        }
        if wanted && (data.len() as u64) < entry.size().min(opts.max_image_bytes as u64 + 1) {
            return emit(Err(cut_off(&name, &pending, "member ends early")));
        }
        match ext.as_str() {
            "txt" => pending.caption = Some(data),
            "json" => pending.meta = Some(data),
            e if IMAGE_EXTS.contains(&e) => pending.image = Some((ext, data)),
            _ => {}
        }
    }
    if !pending.started {
        return true;
    }
    emit(finish(pending, &name, opts))
}

fn cut_off(shard: &str, pending: &Pending, e: impl std::fmt::Display) -> Skip {
    let at = if pending.key.is_empty() { shard.to_string() } else { format!("{shard}:{}", pending.key) };
    Skip::new(SkipReason::ShardTruncated, at, format!("shard cut off: {e}"))
}

fn finish(p: Pending, shard: &str, opts: &ReadOptions) -> SourceItem {
    let location = format!("{shard}:{}", p.key);
    // `webdataset` itself drops such members (its key pattern needs a character before the dot);
    // here the sample is skipped and counted, so it never reaches a writer that would refuse it
    if p.key.is_empty() || p.key.ends_with('/') {
        return Err(Skip::new(SkipReason::KeyMissing, location, "the member's file name starts with a dot, so it has no key"));
    }
    let Some((ext, image)) = p.image else {
        return Err(Skip::new(SkipReason::ImageMissing, location, "no image member"));
    };
    check_image(&image, &ext, &location, opts)?;
    let meta: Map<String, Value> = match p.meta.as_deref().map(serde_json::from_slice::<Value>) {
        Some(Ok(Value::Object(m))) => m,
        // A broken side-car JSON loses only the metadata, not the pair.
        _ => Map::new(),
    };
    let caption = match p.caption {
        Some(bytes) => vec![check_caption(&bytes, &location, opts).map(|text| Caption {
            text,
            lang: meta.get("lang").and_then(Value::as_str).map(str::to_string),
            field: None,
        })],
        None => vec![],
    };
    let captions = keep_good_captions(caption, &location)?;
    Ok(Sample { key: p.key, location, image, image_ext: ext, captions, meta })
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn key_is_path_up_to_first_dot_of_file_name() {
        assert_eq!(split_key("a/b.c/000123.jpg"), ("a/b.c/000123".into(), "jpg".into()));
        assert_eq!(split_key("000123.seg.json"), ("000123".into(), "seg.json".into()));
        assert_eq!(split_key("noext"), ("noext".into(), "".into()));
    }
}
