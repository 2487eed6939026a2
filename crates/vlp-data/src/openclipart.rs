//! The openclipart data set: Debian's `openclipart-png` (the images) and `openclipart-svg` (the
//! same relative paths, whose RDF metadata holds title, description and keywords).
//!
//! Captions come from the cleaned title. Titles that label a collection rather than the drawing
//! ("gramastar", "Various Cliparts", an author's name, any title shared by many files) fall back to
//! a caption made from the file name; a drawing with neither is dropped and counted. Images are
//! cropped to the drawn content and letterboxed onto a white square. Grade 2 = the same normalised
//! caption; grade 1 = the same category folder and a shared informative keyword. Split 70/10/20
//! by a hash of the normalised caption, so one caption never spans splits.

use crate::dataset::{write_dataset, DatasetDir, DatasetInfo, ImageRecord, Judged};
use crate::image_pipeline::{letterbox_on_white, to_rgb_on_white};
use crate::sample::Caption;
use crate::skip::{SkipLog, SkipReason};
use crate::{stable_hash, DataError, Result};
use image::RgbImage;
use rayon::prelude::*;
use serde_json::{json, Map};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Titles that name a collection, a tool or a licence, never the drawing.
const COLLECTION_LABELS: [&str; 12] = [
    "gramastar",
    "various cliparts",
    "part of the flat icon collection",
    "lemon svg theme",
    "svg gradient collection by alan horkan, 2004.",
    "simple arrows",
    "homes clipart",
    "r16 sibmission",
    "public domain",
    "untitled",
    "clipart",
    "drawing",
];

/// A title shared by this many files or more is a collection label.
const SHARED_TITLE_LIMIT: usize = 10;

/// Keywords that say nothing about the drawing.
const UNINFORMATIVE_KEYWORDS: [&str; 10] =
    ["", "clip art", "clipart", "image", "media", "public domain", "svg", "png", "externalsource", "unsorted"];

/// Metadata read from one SVG.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SvgMeta {
    pub title: Option<String>,
    pub description: Option<String>,
    pub keywords: Vec<String>,
    pub creator: Option<String>,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The text of the first `<tag>…</tag>` inside `hay`.
fn element<'a>(hay: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let start = hay.find(&open)?;
    let after = &hay[start + open.len()..];
    if after.starts_with(['/']) || !after.starts_with(['>', ' ', '\n', '\t']) {
        return None;
    }
    let body_start = after.find('>')? + 1;
    if after[..body_start].ends_with("/>") {
        return Some("");
    }
    let body = &after[body_start..];
    let end = body.find(&format!("</{tag}>"))?;
    Some(&body[..end])
}

/// Reads the RDF metadata (`cc:Work`) of an SVG file.
pub fn parse_svg_meta(svg: &str) -> SvgMeta {
    let Some(work) = element(svg, "cc:Work") else { return SvgMeta::default() };
    let clean = |s: &str| {
        let t = unescape(s.trim());
        let t = t.trim_start_matches("<![CDATA[").trim_end_matches("]]>").split_whitespace().collect::<Vec<_>>().join(" ");
        (!t.is_empty()).then_some(t)
    };
    // the Work's own title comes before nested agents' titles
    let title = element(work, "dc:title").and_then(clean);
    let description = element(work, "dc:description").and_then(clean);
    let creator = element(work, "dc:creator").and_then(|c| element(c, "dc:title")).and_then(clean);
    let mut keywords = Vec::new();
    if let Some(subject) = element(work, "dc:subject") {
        let mut rest = subject;
        while let Some(li) = element(rest, "rdf:li") {
            if let Some(k) = clean(li) {
                keywords.push(k.to_lowercase());
            }
            let Some(pos) = rest.find("</rdf:li>") else { break };
            rest = &rest[pos + 9..];
        }
    }
    SvgMeta { title, description, keywords, creator }
}

/// Lower case, words only, single spaces: the key of grade 2.
pub fn normalise_caption(s: &str) -> String {
    s.to_lowercase().split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Turns a title or a file name into a caption: separators to spaces, trailing numbering and
/// "Clipart by X - " prefixes removed.
pub fn clean_title(raw: &str) -> String {
    let mut t = raw.trim();
    if let Some((prefix, rest)) = t.split_once(" - ") {
        if prefix.to_lowercase().starts_with("clipart by") {
            t = rest;
        }
    }
    let words: Vec<&str> = t.split(['_', '-', ' ', '.']).filter(|w| !w.is_empty()).collect();
    let mut words: Vec<&str> = words.into_iter().collect();
    while words.last().is_some_and(|w| w.chars().all(|c| c.is_ascii_digit())) {
        words.pop();
    }
    words.join(" ")
}

fn has_letters(s: &str) -> bool {
    s.chars().filter(|c| c.is_alphabetic()).count() >= 3
}

/// Where `dpkg-deb -x` unpacked the two packages (see `datasets/openclipart/fetch.sh`).
#[derive(Debug, Clone)]
pub struct OpenclipartSources {
    pub root: PathBuf,
}

impl OpenclipartSources {
    fn png_root(&self) -> PathBuf {
        self.root.join("usr/share/openclipart/png")
    }
    fn svg_root(&self) -> PathBuf {
        self.root.join("usr/share/openclipart/svg")
    }
}

fn list_pngs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))? {
            let p = e.map_err(|e| DataError::io(&d, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "png") {
                out.push(p.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Crops to the pixels that are not (near) white, then letterboxes onto a white square.
pub fn crop_to_content(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0.iter().any(|&c| c < 245) {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x1 < x0 || y1 < y0 {
        return letterbox_on_white(img, side);
    }
    let cropped = image::imageops::crop_imm(img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    letterbox_on_white(&cropped, side)
}

/// Builds the openclipart data set into `out` with images of `side` pixels.
pub fn build(src: &OpenclipartSources, out: &Path, side: u32) -> Result<(DatasetInfo, SkipLog)> {
    let png_root = src.png_root();
    let files = list_pngs(&png_root)?;
    if files.is_empty() {
        return Err(DataError::input(png_root.display(), "no PNG files; run datasets/openclipart/fetch.sh"));
    }
    let metas: Vec<SvgMeta> = files
        .par_iter()
        .map(|rel| {
            let svg = src.svg_root().join(rel.with_extension("svg"));
            std::fs::read(&svg).map(|b| parse_svg_meta(&String::from_utf8_lossy(&b))).unwrap_or_default()
        })
        .collect();
    let mut title_count: HashMap<String, usize> = HashMap::new();
    for m in &metas {
        if let Some(t) = &m.title {
            *title_count.entry(t.to_lowercase()).or_default() += 1;
        }
    }
    let mut keyword_count: HashMap<&str, usize> = HashMap::new();
    for m in &metas {
        for k in m.keywords.iter().collect::<HashSet<_>>() {
            *keyword_count.entry(k).or_default() += 1;
        }
    }
    let common_limit = files.len() / 20;
    let informative = |k: &str| !UNINFORMATIVE_KEYWORDS.contains(&k) && keyword_count.get(k).copied().unwrap_or(0) <= common_limit;

    let mut log = SkipLog::new();
    let mut chosen: Vec<(usize, String, &'static str)> = Vec::new();
    for (i, (rel, m)) in files.iter().zip(&metas).enumerate() {
        let from_title = m.title.as_ref().and_then(|t| {
            let lower = t.to_lowercase();
            let is_label = COLLECTION_LABELS.contains(&lower.as_str())
                || title_count[&lower] >= SHARED_TITLE_LIMIT && !lower.starts_with("clipart by")
                || m.creator.as_ref().is_some_and(|c| c.to_lowercase() == lower);
            let cleaned = clean_title(t);
            (!is_label && has_letters(&cleaned)).then_some(cleaned)
        });
        let caption = match from_title {
            Some(c) => Some((c, "title")),
            None => {
                let stem = rel.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                let c = clean_title(stem);
                has_letters(&c).then_some((c, "file_name"))
            }
        };
        match caption {
            Some((c, from)) => chosen.push((i, c, from)),
            None => log.record(SkipReason::CaptionEmpty, rel.display().to_string(), "no usable title or file name"),
        }
    }

    let images_dir = out.join("images");
    let rendered: Vec<std::result::Result<(usize, String, &'static str), (String, SkipReason, String)>> = chosen
        .into_par_iter()
        .map(|(i, caption, from)| {
            let rel = &files[i];
            let from_path = png_root.join(rel);
            let bytes = std::fs::read(&from_path).map_err(|e| (rel.display().to_string(), SkipReason::ImageFileMissing, e.to_string()))?;
            let img = crate::image_pipeline::decode(&bytes, 1 << 26).map_err(|f| (rel.display().to_string(), f.reason, f.detail))?;
            let square = crop_to_content(&to_rgb_on_white(img), side);
            let to = images_dir.join(rel);
            std::fs::create_dir_all(to.parent().expect("has parent"))
                .map_err(|e| (rel.display().to_string(), SkipReason::ImageUndecodable, e.to_string()))?;
            square.save(&to).map_err(|e| (rel.display().to_string(), SkipReason::ImageUndecodable, e.to_string()))?;
            Ok((i, caption, from))
        })
        .collect();

    let mut by_split: BTreeMap<&str, Vec<ImageRecord>> = BTreeMap::new();
    for r in rendered {
        let (i, caption, from) = match r {
            Ok(x) => x,
            Err((loc, reason, detail)) => {
                log.record(reason, loc, detail);
                continue;
            }
        };
        let rel = &files[i];
        let m = &metas[i];
        let key = normalise_caption(&caption);
        let split = match stable_hash(key.as_bytes()) % 10 {
            0..=6 => "train",
            7 => "val",
            _ => "test",
        };
        let folder = rel.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let related: Vec<String> =
            m.keywords.iter().filter(|k| informative(k)).map(|k| format!("{folder}|{k}")).collect::<HashSet<_>>().into_iter().collect();
        let judged = Judged { exact: vec![key], related };
        let mut meta = Map::new();
        meta.insert("category".into(), json!(folder));
        meta.insert("keywords".into(), json!(m.keywords));
        meta.insert("caption_from".into(), json!(from));
        if let Some(t) = &m.title {
            meta.insert("title".into(), json!(t));
        }
        let id = format!("oc-{}", rel.with_extension("").display().to_string().replace('/', "-"));
        by_split.entry(split).or_default().push(ImageRecord {
            id,
            image: format!("images/{}", rel.display()),
            captions: vec![Caption { text: caption, lang: Some("en".into()), field: Some("title".into()) }],
            meta,
            judged: judged.clone(),
            caption_judged: judged,
        });
    }
    let dir = DatasetDir::new(out);
    let info = write_dataset(
        &dir,
        "openclipart",
        &by_split,
        json!({"packages": ["openclipart-png", "openclipart-svg"], "licence": "public domain", "side": side}),
    )?;
    Ok((info, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_work_title_keywords_and_creator() {
        let svg = r#"<svg><metadata><rdf:RDF><cc:Work rdf:about="">
            <dc:title>Red &amp; Blue Scale</dc:title><dc:description></dc:description>
            <dc:subject><rdf:Bag><rdf:li></rdf:li><rdf:li>Tool</rdf:li><rdf:li>mass</rdf:li></rdf:Bag></dc:subject>
            <dc:publisher><cc:Agent><dc:title>public domain</dc:title></cc:Agent></dc:publisher>
            <dc:creator><cc:Agent><dc:title>Feth AREZKI</dc:title></cc:Agent></dc:creator>
            </cc:Work></rdf:RDF></metadata></svg>"#;
        let m = parse_svg_meta(svg);
        assert_eq!(m.title.as_deref(), Some("Red & Blue Scale"));
        assert_eq!(m.keywords, ["tool", "mass"]);
        assert_eq!(m.creator.as_deref(), Some("Feth AREZKI"));
        assert_eq!(m.description, None);
    }

    #[test]
    fn titles_and_file_names_become_captions() {
        assert_eq!(clean_title("Clipart by Nicu Buculei - jigsaw_red_10"), "jigsaw red");
        assert_eq!(clean_title("chemistry_flask_matthew__02"), "chemistry flask matthew");
        assert_eq!(normalise_caption("Chemistry  Flask!"), "chemistry flask");
    }
}
