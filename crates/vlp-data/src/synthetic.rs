//! The embedded default data set: rendered scenes of one or two shapes, captioned in English and
//! Chinese, generated with no download and deterministic by seed.
//!
//! A scene is one object ("a large green star" / "一个大的绿色星形") or two, the first to the left
//! of or above the second ("a small red circle to the left of a large blue square" /
//! "一个小的红色圆形在一个大的蓝色正方形左边"). Grade 2 = the same scene description; grade 1 = the
//! same main object (colour and kind).

use crate::dataset::{write_dataset, DatasetDir, DatasetInfo, ImageRecord, Judged};
use crate::sample::Caption;
use crate::{stable_hash, DataError, Result};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Circle,
    Square,
    Triangle,
    Star,
}

pub const KINDS: [Kind; 4] = [Kind::Circle, Kind::Square, Kind::Triangle, Kind::Star];

impl Kind {
    fn en(self) -> &'static str {
        match self {
            Kind::Circle => "circle",
            Kind::Square => "square",
            Kind::Triangle => "triangle",
            Kind::Star => "star",
        }
    }
    fn zh(self) -> &'static str {
        match self {
            Kind::Circle => "圆形",
            Kind::Square => "正方形",
            Kind::Triangle => "三角形",
            Kind::Star => "星形",
        }
    }
}

/// Colours: English name, Chinese name, RGB.
pub const COLOURS: [(&str, &str, [u8; 3]); 6] = [
    ("red", "红色", [215, 35, 35]),
    ("green", "绿色", [35, 155, 55]),
    ("blue", "蓝色", [35, 70, 215]),
    ("yellow", "黄色", [235, 200, 25]),
    ("purple", "紫色", [135, 50, 170]),
    ("orange", "橙色", [245, 130, 25]),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    pub kind: Kind,
    pub colour: usize,
    pub large: bool,
}

impl Object {
    fn en(&self) -> String {
        format!("a {} {} {}", if self.large { "large" } else { "small" }, COLOURS[self.colour].0, self.kind.en())
    }
    fn zh(&self) -> String {
        format!("一个{}的{}{}", if self.large { "大" } else { "小" }, COLOURS[self.colour].1, self.kind.zh())
    }
    /// The main-object key of grade 1: colour and kind.
    fn main_key(&self) -> String {
        format!("{} {}", COLOURS[self.colour].0, self.kind.en())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    Above,
}

/// One object, or two with the first left of / above the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scene {
    pub first: Object,
    pub second: Option<(Relation, Object)>,
}

impl Scene {
    pub fn caption_en(&self) -> String {
        match self.second {
            None => self.first.en(),
            Some((Relation::LeftOf, b)) => format!("{} to the left of {}", self.first.en(), b.en()),
            Some((Relation::Above, b)) => format!("{} above {}", self.first.en(), b.en()),
        }
    }
    pub fn caption_zh(&self) -> String {
        match self.second {
            None => self.first.zh(),
            Some((Relation::LeftOf, b)) => format!("{}在{}左边", self.first.zh(), b.zh()),
            Some((Relation::Above, b)) => format!("{}在{}上面", self.first.zh(), b.zh()),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub images: usize,
    /// Image side in pixels.
    pub size: u32,
    pub seed: u64,
    /// Share of scenes with two objects.
    pub two_objects: f64,
    /// Shares of train and val; the rest is test.
    pub train: f64,
    pub val: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig { images: 6000, size: 64, seed: 0, two_objects: 0.5, train: 0.8, val: 0.1 }
    }
}

fn random_object(rng: &mut ChaCha8Rng) -> Object {
    Object { kind: KINDS[rng.gen_range(0..KINDS.len())], colour: rng.gen_range(0..COLOURS.len()), large: rng.gen_bool(0.5) }
}

/// The scene of image `index`: a pure function of (seed, index), so any subset renders alike.
pub fn scene_for(cfg: &SyntheticConfig, index: usize) -> (Scene, ChaCha8Rng) {
    let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(&[cfg.seed.to_le_bytes(), (index as u64).to_le_bytes()].concat()));
    let first = random_object(&mut rng);
    let second = if rng.gen_bool(cfg.two_objects) {
        let rel = if rng.gen_bool(0.5) { Relation::LeftOf } else { Relation::Above };
        let mut b = random_object(&mut rng);
        while b == first {
            b = random_object(&mut rng);
        }
        Some((rel, b))
    } else {
        None
    };
    (Scene { first, second }, rng)
}

/// Renders a scene on white, positions and colours jittered by `rng`.
pub fn render(scene: &Scene, size: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let s = size as f32;
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let half = |o: &Object| if o.large { 0.2 * s } else { 0.11 * s };
    let place = |o: &Object, along: (f32, f32), rng: &mut ChaCha8Rng, horizontal: bool| {
        let r = half(o);
        let main = rng.gen_range(along.0..along.1) * s;
        let cross = rng.gen_range(0.3..0.7) * s;
        let (cx, cy) = if horizontal { (main, cross) } else { (cross, main) };
        (cx.clamp(r, s - r), cy.clamp(r, s - r))
    };
    let objects: Vec<(Object, (f32, f32))> = match scene.second {
        None => vec![(scene.first, place(&scene.first, (0.3, 0.7), rng, true))],
        Some((rel, b)) => {
            let horizontal = rel == Relation::LeftOf;
            let pa = place(&scene.first, (0.2, 0.32), rng, horizontal);
            let pb = place(&b, (0.68, 0.8), rng, horizontal);
            vec![(scene.first, pa), (b, pb)]
        }
    };
    for (o, (cx, cy)) in objects {
        let base = COLOURS[o.colour].2;
        let colour: [u8; 3] = std::array::from_fn(|c| (base[c] as i32 + rng.gen_range(-18..=18)).clamp(0, 255) as u8);
        draw(&mut img, o.kind, cx, cy, half(&o), colour);
    }
    img
}

/// Fills a shape with 2×2 supersampled coverage, blended over what is there.
fn draw(img: &mut RgbImage, kind: Kind, cx: f32, cy: f32, r: f32, colour: [u8; 3]) {
    let poly: Vec<(f32, f32)> = match kind {
        Kind::Triangle => vec![(0.0, -r), (-r * 0.95, r * 0.75), (r * 0.95, r * 0.75)],
        Kind::Star => (0..10)
            .map(|i| {
                let a = std::f32::consts::PI * (i as f32 / 5.0) - std::f32::consts::FRAC_PI_2;
                let rr = if i % 2 == 0 { r } else { r * 0.45 };
                (rr * a.cos(), rr * a.sin())
            })
            .collect(),
        _ => vec![],
    };
    let inside = |dx: f32, dy: f32| match kind {
        Kind::Circle => dx * dx + dy * dy <= r * r,
        Kind::Square => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
        Kind::Triangle | Kind::Star => point_in_polygon(dx, dy, &poly),
    };
    let (w, h) = img.dimensions();
    let x0 = (cx - r - 1.0).max(0.0) as u32;
    let y0 = (cy - r - 1.0).max(0.0) as u32;
    let x1 = ((cx + r + 1.0) as u32).min(w - 1);
    let y1 = ((cy + r + 1.0) as u32).min(h - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let mut hits = 0u32;
            for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                if inside(x as f32 + sx - cx, y as f32 + sy - cy) {
                    hits += 1;
                }
            }
            if hits > 0 {
                let px = img.get_pixel_mut(x, y);
                for c in 0..3 {
                    px[c] = ((px[c] as u32 * (4 - hits) + colour[c] as u32 * hits) / 4) as u8;
                }
            }
        }
    }
}

fn point_in_polygon(x: f32, y: f32, poly: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn split_of(cfg: &SyntheticConfig, index: usize) -> &'static str {
    let u = (stable_hash(&[b"split".as_slice(), &cfg.seed.to_le_bytes(), &(index as u64).to_le_bytes()].concat()) >> 11) as f64
        / (1u64 << 53) as f64;
    if u < cfg.train {
        "train"
    } else if u < cfg.train + cfg.val {
        "val"
    } else {
        "test"
    }
}

/// Builds the data set into `out` (images rendered in parallel), returning its `dataset.json`.
pub fn build(cfg: &SyntheticConfig, out: &std::path::Path) -> Result<DatasetInfo> {
    if cfg.images == 0 || cfg.size < 16 {
        return Err(DataError::input("synthetic", "need at least 1 image of at least 16 px"));
    }
    if !(0.0..=1.0).contains(&cfg.two_objects) || cfg.train < 0.0 || cfg.val < 0.0 || cfg.train + cfg.val > 1.0 {
        return Err(DataError::input("synthetic", "shares must lie in [0, 1] and train + val ≤ 1"));
    }
    let dir = DatasetDir::new(out);
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|e| DataError::io(&images_dir, e))?;
    let records: Vec<(usize, ImageRecord)> = (0..cfg.images)
        .into_par_iter()
        .map(|i| {
            let (scene, mut rng) = scene_for(cfg, i);
            let img = render(&scene, cfg.size, &mut rng);
            let id = format!("syn{i:06}");
            let rel = format!("images/{id}.png");
            let path = out.join(&rel);
            img.save(&path).map_err(|e| DataError::input(path.display(), e.to_string()))?;
            let (en, zh) = (scene.caption_en(), scene.caption_zh());
            let judged = Judged { exact: vec![en.clone()], related: vec![scene.first.main_key()] };
            let mut meta = Map::new();
            meta.insert("objects".into(), json!(1 + scene.second.is_some() as u8));
            meta.insert("main".into(), Value::String(scene.first.main_key()));
            Ok((
                i,
                ImageRecord {
                    id,
                    image: rel,
                    captions: vec![
                        Caption { text: en.clone(), lang: Some("en".into()), field: Some("caption".into()) },
                        Caption { text: zh, lang: Some("zh".into()), field: Some("caption".into()) },
                    ],
                    meta,
                    judged: judged.clone(),
                    caption_judged: judged,
                },
            ))
        })
        .collect::<Result<_>>()?;
    let mut by_split: BTreeMap<&str, Vec<ImageRecord>> = BTreeMap::new();
    for (i, rec) in records {
        by_split.entry(split_of(cfg, i)).or_default().push(rec);
    }
    let info = write_dataset(&dir, "synthetic", &by_split, serde_json::to_value(cfg).expect("serialises"))?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_match_the_issue_examples() {
        let scene = Scene {
            first: Object { kind: Kind::Circle, colour: 0, large: false },
            second: Some((Relation::LeftOf, Object { kind: Kind::Square, colour: 2, large: true })),
        };
        assert_eq!(scene.caption_en(), "a small red circle to the left of a large blue square");
        assert_eq!(scene.caption_zh(), "一个小的红色圆形在一个大的蓝色正方形左边");
    }

    #[test]
    fn scenes_and_pixels_are_deterministic() {
        let cfg = SyntheticConfig::default();
        for i in [0, 7, 99] {
            let (a, mut ra) = scene_for(&cfg, i);
            let (b, mut rb) = scene_for(&cfg, i);
            assert_eq!(a, b);
            assert_eq!(render(&a, 32, &mut ra), render(&b, 32, &mut rb));
        }
    }

    #[test]
    fn left_object_is_drawn_left() {
        let cfg = SyntheticConfig { two_objects: 1.0, ..Default::default() };
        for i in 0..50 {
            let (scene, mut rng) = scene_for(&cfg, i);
            let img = render(&scene, 64, &mut rng);
            let Some((rel, b)) = scene.second else { panic!("two objects asked for") };
            // centroid of pixels near each object's colour, along the relation's axis
            let centroid = |o: &Object| {
                let c = COLOURS[o.colour].2;
                let (mut sum, mut n) = (0f32, 0f32);
                for (x, y, p) in img.enumerate_pixels() {
                    if (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() < 25) {
                        sum += if rel == Relation::LeftOf { x as f32 } else { y as f32 };
                        n += 1.0;
                    }
                }
                sum / n.max(1.0)
            };
            if scene.first.colour != b.colour {
                assert!(centroid(&scene.first) < centroid(&b), "scene {i}: {}", scene.caption_en());
            }
        }
    }
}
