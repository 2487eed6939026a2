//! The emoji data set: Twemoji and Noto renderings (npm `emoji-datasource-twitter` and
//! `emoji-datasource-google`, 64×64 PNGs) with CLDR names and keywords in English, Simplified and
//! Traditional Chinese (npm `cldr-annotations-full` and `cldr-annotations-derived-full`).
//!
//! Texts per emoji: en/zh/zh-Hant × name/keywords. Grade 2 = the same emoji, or a pixel-identical
//! rendering of another in the same style (territory flags); grade 1 = the same `subcategory`.
//! 20 % of the emoji (by a hash of the code points) are held out, half val and half test; both
//! styles of an emoji stay in one split.

use crate::dataset::{write_dataset, DatasetDir, DatasetInfo, ImageRecord, Judged};
use crate::image_pipeline::to_rgb_on_white;
use crate::sample::Caption;
use crate::skip::{SkipLog, SkipReason};
use crate::{stable_hash, DataError, Result};
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const STYLES: [&str; 2] = ["twitter", "google"];
pub const LANGS: [&str; 3] = ["en", "zh", "zh-Hant"];

/// Where the unpacked npm packages are (`npm pack` + `tar xzf`, see `datasets/emoji/fetch.sh`).
#[derive(Debug, Clone)]
pub struct EmojiSources {
    /// Directory holding `emoji-datasource-{twitter,google}/` and
    /// `cldr-annotations{,-derived}-full/` (each with its `package/`).
    pub root: PathBuf,
}

impl EmojiSources {
    fn datasource(&self, style: &str) -> PathBuf {
        self.root.join(format!("emoji-datasource-{style}/package"))
    }
    fn annotations(&self, lang: &str, derived: bool) -> PathBuf {
        if derived {
            self.root.join(format!("cldr-annotations-derived-full/package/annotationsDerived/{lang}/annotations.json"))
        } else {
            self.root.join(format!("cldr-annotations-full/package/annotations/{lang}/annotations.json"))
        }
    }
}

/// CLDR name and keywords of one emoji in one language.
#[derive(Debug, Clone, Default)]
struct Annotation {
    name: Option<String>,
    keywords: Vec<String>,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::input(path.display(), e.to_string()))
}

/// Both CLDR files of a language, merged: emoji → annotation.
fn load_annotations(src: &EmojiSources, lang: &str) -> Result<HashMap<String, Annotation>> {
    let mut out = HashMap::new();
    for (derived, top) in [(false, "annotations"), (true, "annotationsDerived")] {
        let path = src.annotations(lang, derived);
        let v = read_json(&path)?;
        let map =
            v[top]["annotations"].as_object().ok_or_else(|| DataError::input(path.display(), format!("no {top}.annotations object")))?;
        for (emoji, a) in map {
            let strings =
                |k: &str| -> Vec<String> { a[k].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect() };
            let name = strings("tts").into_iter().next();
            out.insert(emoji.clone(), Annotation { name, keywords: strings("default") });
        }
    }
    Ok(out)
}

/// `"1F1EA-1F1EC"` → the emoji string.
fn unified_to_string(unified: &str) -> Option<String> {
    unified.split('-').map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32)).collect()
}

fn split_of(unified: &str) -> &'static str {
    match stable_hash(unified.as_bytes()) % 10 {
        8 => "val",
        9 => "test",
        _ => "train",
    }
}

/// Builds the emoji data set into `out`. Emoji without any CLDR text or without an image in
/// either style are left out and counted in the returned log.
pub fn build(src: &EmojiSources, out: &Path) -> Result<(DatasetInfo, SkipLog)> {
    let meta_path = src.datasource("twitter").join("emoji.json");
    let entries = read_json(&meta_path)?;
    let entries = entries.as_array().ok_or_else(|| DataError::input(meta_path.display(), "expected a JSON array"))?;
    let annotations: Vec<(&str, HashMap<String, Annotation>)> =
        LANGS.iter().map(|l| load_annotations(src, l).map(|a| (*l, a))).collect::<Result<_>>()?;
    let mut log = SkipLog::new();

    struct Emoji {
        unified: String,
        subcategory: String,
        category: String,
        captions: Vec<Caption>,
    }
    let mut emoji = Vec::new();
    for e in entries {
        let unified = e["unified"].as_str().unwrap_or_default().to_string();
        let Some(chars) = unified_to_string(&unified) else {
            log.record(SkipReason::ManifestBadLine, meta_path.display().to_string(), format!("bad code points '{unified}'"));
            continue;
        };
        let bare: String = chars.chars().filter(|&c| c != '\u{FE0F}').collect();
        let mut captions = Vec::new();
        for (lang, table) in &annotations {
            let Some(a) = table.get(&chars).or_else(|| table.get(&bare)) else { continue };
            if let Some(name) = &a.name {
                captions.push(Caption { text: name.clone(), lang: Some(lang.to_string()), field: Some("name".into()) });
            }
            if !a.keywords.is_empty() {
                captions.push(Caption { text: a.keywords.join(" | "), lang: Some(lang.to_string()), field: Some("keywords".into()) });
            }
        }
        if captions.is_empty() {
            log.record(SkipReason::CaptionMissing, format!("emoji {unified}"), "no CLDR name or keywords");
            continue;
        }
        emoji.push(Emoji {
            unified,
            subcategory: e["subcategory"].as_str().unwrap_or("").to_string(),
            category: e["category"].as_str().unwrap_or("").to_string(),
            captions,
        });
    }

    // Render every (emoji, style) on white, in parallel; keep the pixels' hash for grade 2.
    let images_dir = out.join("images");
    for style in STYLES {
        std::fs::create_dir_all(images_dir.join(style)).map_err(|e| DataError::io(&images_dir, e))?;
    }
    let jobs: Vec<(usize, &str)> = (0..emoji.len()).flat_map(|i| STYLES.iter().map(move |s| (i, *s))).collect();
    let rendered: Vec<(usize, &str, std::result::Result<u64, (SkipReason, String, String)>)> = jobs
        .par_iter()
        .map(|&(i, style)| {
            let file = format!("{}.png", emoji[i].unified.to_ascii_lowercase());
            let from = src.datasource(style).join(format!("img/{style}/64/{file}"));
            let location = from.display().to_string();
            let result = (|| {
                let bytes = std::fs::read(&from).map_err(|e| (SkipReason::ImageFileMissing, location.clone(), e.to_string()))?;
                let img = crate::image_pipeline::decode(&bytes, 1 << 24).map_err(|f| (f.reason, location.clone(), f.detail))?;
                let rgb = to_rgb_on_white(img);
                let to = images_dir.join(style).join(&file);
                rgb.save(&to).map_err(|e| (SkipReason::ImageUndecodable, to.display().to_string(), e.to_string()))?;
                Ok(stable_hash(rgb.as_raw()))
            })();
            (i, style, result)
        })
        .collect();
    let mut by_pixels: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    let mut present: Vec<(usize, &str, u64)> = Vec::new();
    for (i, style, r) in rendered {
        match r {
            Ok(h) => {
                by_pixels.entry((style, h)).or_default().push(i);
                present.push((i, style, h));
            }
            Err((reason, location, detail)) => log.record(reason, location, detail),
        }
    }

    let mut by_split: BTreeMap<&str, Vec<ImageRecord>> = BTreeMap::new();
    for (i, style, h) in present {
        let e = &emoji[i];
        let split = split_of(&e.unified);
        // Grade 2 reaches every emoji drawn with the same pixels in this style, in this split.
        let exact: Vec<String> =
            by_pixels[&(style, h)].iter().filter(|&&j| split_of(&emoji[j].unified) == split).map(|&j| emoji[j].unified.clone()).collect();
        let related = vec![format!("sub:{}", e.subcategory)];
        let mut meta = Map::new();
        meta.insert("style".into(), json!(style));
        meta.insert("emoji".into(), json!(e.unified));
        meta.insert("category".into(), json!(e.category));
        meta.insert("subcategory".into(), json!(e.subcategory));
        by_split.entry(split).or_default().push(ImageRecord {
            id: format!("{style}-{}", e.unified.to_ascii_lowercase()),
            image: format!("images/{style}/{}.png", e.unified.to_ascii_lowercase()),
            captions: e.captions.clone(),
            meta,
            judged: Judged { exact, related: related.clone() },
            // a text names its own emoji only, not every emoji drawn alike
            caption_judged: Judged { exact: vec![e.unified.clone()], related },
        });
    }
    let dir = DatasetDir::new(out);
    let info = write_dataset(
        &dir,
        "emoji",
        &by_split,
        json!({
            "packages": ["emoji-datasource-twitter@16.0.0", "emoji-datasource-google@16.0.0",
                         "cldr-annotations-full@48.2.0", "cldr-annotations-derived-full@48.2.0"],
            "licences": {"twemoji": "CC-BY-4.0", "noto-emoji": "Apache-2.0", "cldr": "Unicode-3.0"},
        }),
    )?;
    Ok((info, log))
}
