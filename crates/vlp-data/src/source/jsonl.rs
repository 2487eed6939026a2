//! JSONL manifests: one JSON object per line,
//! `{"id", "image", "captions": [...] | "caption": "...", "lang", ...}`, image paths relative to
//! the manifest. A caption may be a string or `{"text", "lang", "field"}`; every other field is
//! kept as metadata.

use super::{check_caption_text, check_image, ext_of, keep_good_captions, read_image_file, ReadOptions, Skip, SourceItem};
use crate::sample::{Caption, Sample};
use crate::skip::SkipReason;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;

pub(super) fn read(path: &Path, opts: &ReadOptions, emit: &mut dyn FnMut(SourceItem) -> bool) {
    let name = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new("."));
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            emit(Err(Skip::new(SkipReason::ManifestBadLine, &name, format!("cannot open: {e}"))));
            return;
        }
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut lineno = 0usize;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                emit(Err(Skip::new(SkipReason::ManifestBadLine, format!("{name}:{}", lineno + 1), e.to_string())));
                return;
            }
        }
        lineno += 1;
        if line.iter().all(u8::is_ascii_whitespace) || !opts.part.holds(lineno - 1) {
            continue;
        }
        let location = format!("{name}:{lineno}");
        if !emit(parse_line(&line, base, &location, opts)) {
            return;
        }
    }
}

fn parse_line(line: &[u8], base: &Path, location: &str, opts: &ReadOptions) -> SourceItem {
    let text = std::str::from_utf8(line).map_err(|_| Skip::new(SkipReason::CaptionNotUtf8, location, "manifest line is not UTF-8"))?;
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Skip::new(SkipReason::ManifestBadLine, location, "line is JSON but not an object")),
        Err(e) => return Err(Skip::new(SkipReason::ManifestBadLine, location, format!("not JSON: {e}"))),
    };
    let image_rel = match obj.remove("image").or_else(|| obj.remove("filepath")) {
        Some(Value::String(s)) => s,
        _ => return Err(Skip::new(SkipReason::ManifestBadLine, location, "no \"image\" path")),
    };
    let lang = obj.get("lang").and_then(Value::as_str).map(str::to_string);
    let captions = captions_of(&mut obj, lang.as_deref(), location, opts)?;
    let ext = ext_of(&image_rel);
    let image_path = base.join(&image_rel);
    let image = read_image_file(&image_path, location)?;
    check_image(&image, &ext, location, opts)?;
    let key = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Number(_)) => v.to_string(),
        _ => image_rel.clone(),
    };
    obj.insert("image".into(), Value::String(image_rel));
    Ok(Sample { key, location: location.to_string(), image, image_ext: ext, captions, meta: obj })
}

fn captions_of(
    obj: &mut Map<String, Value>,
    lang: Option<&str>,
    location: &str,
    opts: &ReadOptions,
) -> std::result::Result<Vec<Caption>, Skip> {
    let raw: Vec<Value> = match obj.remove("captions") {
        Some(Value::Array(a)) => a,
        Some(v) => vec![v],
        None => obj.remove("caption").or_else(|| obj.remove("text")).into_iter().collect(),
    };
    let mut candidates = Vec::with_capacity(raw.len());
    for v in raw {
        let (text, c_lang, field) = match v {
            Value::String(s) => (s, lang.map(str::to_string), None),
            Value::Object(mut m) => {
                let Some(Value::String(s)) = m.remove("text") else {
                    candidates.push(Err(Skip::new(SkipReason::ManifestBadLine, location, "caption object has no text")));
                    continue;
                };
                let l = m.get("lang").and_then(Value::as_str).map(str::to_string).or(lang.map(str::to_string));
                let f = m.get("field").and_then(Value::as_str).map(str::to_string);
                (s, l, f)
            }
            _ => {
                candidates.push(Err(Skip::new(SkipReason::ManifestBadLine, location, "caption is not a string")));
                continue;
            }
        };
        candidates.push(check_caption_text(&text, location, opts).map(|text| Caption { text, lang: c_lang, field }));
    }
    keep_good_captions(candidates, location)
}
