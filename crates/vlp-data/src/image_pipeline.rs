//! Decode → RGB on white → crop → normalise, for evaluation (center crop) and training (random
//! resized crop). Deterministic given a seed; decoding is bounded by [`image::Limits`].

use crate::skip::SkipReason;
use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, ImageReader, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// OpenAI CLIP's normalisation constants, the default of OpenCLIP.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// How images become tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Output side in pixels (square).
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Decoded images above this many pixels are skipped (decompression bombs).
    pub max_pixels: u64,
    /// Random resized crop: range of the crop's share of the image area.
    pub crop_scale: (f32, f32),
    /// Random resized crop: range of the crop's aspect ratio (width / height).
    pub crop_ratio: (f32, f32),
    /// Flip horizontally at random in training. Off by default: captions say left and right.
    pub hflip: bool,
    /// The filter that resizes the crop to `size`.
    pub resize: ResizeFilter,
}

/// How a crop is resized. Both filters widen with the scale factor when shrinking (antialiased),
/// as PIL's do, so they match what torchvision computes on PIL images up to 8-bit rounding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// The triangle filter (PIL's and torchvision's `BILINEAR`); vlp's default.
    #[default]
    Bilinear,
    /// Catmull-Rom, the cubic of PIL's `BICUBIC` (a = -0.5): OpenCLIP's evaluation transform,
    /// and so what a model imported from OpenCLIP saw.
    Bicubic,
}

impl ResizeFilter {
    fn filter(self) -> FilterType {
        match self {
            ResizeFilter::Bilinear => FilterType::Triangle,
            ResizeFilter::Bicubic => FilterType::CatmullRom,
        }
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            size: 224,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            max_pixels: 64 << 20,
            crop_scale: (0.9, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: false,
            resize: ResizeFilter::Bilinear,
        }
    }
}

/// Evaluation takes the center; training takes a random resized crop seeded per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Augment {
    Eval,
    Train { seed: u64 },
}

/// Why an image could not be turned into a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFailure {
    pub reason: SkipReason,
    pub detail: String,
}

/// Decodes with limits: the pixel count and the allocation are bounded before any pixel is
/// decoded, so a small file that claims a huge canvas is refused cheaply.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageFailure> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageFailure { reason: SkipReason::ImageUndecodable, detail: e.to_string() })?;
    let mut limits = image::Limits::default();
    let side = max_pixels.min(u32::MAX as u64) as u32;
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    let mut reader = reader;
    reader.limits(limits);
    let (w, h) = reader.into_dimensions().map_err(failure)?;
    if w as u64 * h as u64 > max_pixels {
        return Err(ImageFailure { reason: SkipReason::ImageTooLarge, detail: format!("{w}x{h} pixels > limit {max_pixels}") });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(failure_io)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let img = reader.decode().map_err(failure)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageFailure { reason: SkipReason::ImageUndecodable, detail: "zero-sized image".into() });
    }
    Ok(img)
}

fn failure(e: image::ImageError) -> ImageFailure {
    let reason = match e {
        image::ImageError::Limits(_) => SkipReason::ImageTooLarge,
        _ => SkipReason::ImageUndecodable,
    };
    ImageFailure { reason, detail: e.to_string() }
}

fn failure_io(e: std::io::Error) -> ImageFailure {
    ImageFailure { reason: SkipReason::ImageUndecodable, detail: e.to_string() }
}

/// Converts to 8-bit RGB; transparent pixels are composited on white, as a viewer shows them.
pub fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (src, dst) in rgba.pixels().zip(out.pixels_mut()) {
        let a = src[3] as u32;
        for c in 0..3 {
            // Rounded integer blend: c·a + 255·(255 − a), over 255.
            dst[c] = ((src[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// The crop box `(x, y, w, h)` in source pixels for an augmentation.
pub fn crop_box(w: u32, h: u32, cfg: &ImageConfig, aug: Augment) -> (u32, u32, u32, u32) {
    let center = || {
        let side = w.min(h);
        ((w - side) / 2, (h - side) / 2, side, side)
    };
    let Augment::Train { seed } = aug else { return center() };
    // torchvision's RandomResizedCrop: ten tries at a random area and aspect, then the center.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let area = (w as f32) * (h as f32);
    let (lr0, lr1) = (cfg.crop_ratio.0.ln(), cfg.crop_ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(cfg.crop_scale.0..=cfg.crop_scale.1);
        let aspect = rng.gen_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.gen_range(0..=w - cw);
            let y = rng.gen_range(0..=h - ch);
            return (x, y, cw, ch);
        }
    }
    center()
}

/// Crops and resizes to `size × size`. Cropping first and resizing the crop once gives the same
/// geometry as "resize the shorter side, then crop" at a fraction of the work.
pub fn crop_resize(img: &RgbImage, cfg: &ImageConfig, aug: Augment) -> RgbImage {
    let (w, h) = img.dimensions();
    let (x, y, cw, ch) = crop_box(w, h, cfg, aug);
    let view = img.view(x, y, cw, ch);
    let mut out = if cw == cfg.size && ch == cfg.size {
        view.to_image()
    } else {
        image::imageops::resize(&*view, cfg.size, cfg.size, cfg.resize.filter())
    };
    if cfg.hflip {
        if let Augment::Train { seed } = aug {
            if ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9).gen_bool(0.5) {
                image::imageops::flip_horizontal_in_place(&mut out);
            }
        }
    }
    out
}

/// Writes `[3, size, size]` (channels first) normalised pixels into `out`.
pub fn normalize_into(img: &RgbImage, cfg: &ImageConfig, out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "output slice must hold [3, h, w]");
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * cfg.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| cfg.mean[c] / cfg.std[c]);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 * scale[c] - shift[c];
        }
    }
}

/// The whole pipeline for one encoded image: `[3, size, size]` floats into `out`.
pub fn process_into(bytes: &[u8], cfg: &ImageConfig, aug: Augment, out: &mut [f32]) -> Result<(), ImageFailure> {
    let rgb = to_rgb_on_white(decode(bytes, cfg.max_pixels)?);
    normalize_into(&crop_resize(&rgb, cfg, aug), cfg, out);
    Ok(())
}

/// Letterboxes an image onto a white square (no crop), for data sets of icons whose edges matter.
pub fn letterbox_on_white(img: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = side as f32 / w.max(h) as f32;
    let (nw, nh) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
    let resized = image::imageops::resize(img, nw, nh, FilterType::Triangle);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, &resized, ((side - nw) / 2) as i64, ((side - nh) / 2) as i64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_pixels_become_white() {
        let mut img = image::RgbaImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        img.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        let rgb = to_rgb_on_white(DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);
    }

    #[test]
    fn center_crop_box_is_the_centered_square() {
        let cfg = ImageConfig::default();
        assert_eq!(crop_box(300, 200, &cfg, Augment::Eval), (50, 0, 200, 200));
        assert_eq!(crop_box(200, 300, &cfg, Augment::Eval), (0, 50, 200, 200));
    }

    #[test]
    fn random_crop_is_deterministic_and_inside() {
        let cfg = ImageConfig { crop_scale: (0.3, 1.0), ..Default::default() };
        for seed in 0..200 {
            let a = crop_box(123, 77, &cfg, Augment::Train { seed });
            assert_eq!(a, crop_box(123, 77, &cfg, Augment::Train { seed }));
            assert!(a.0 + a.2 <= 123 && a.1 + a.3 <= 77 && a.2 > 0 && a.3 > 0);
        }
    }

    #[test]
    fn normalisation_matches_the_formula() {
        let cfg = ImageConfig { size: 1, ..Default::default() };
        let img = RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 128]));
        let mut out = [0.0f32; 3];
        normalize_into(&img, &cfg, &mut out);
        let want = [(1.0 - CLIP_MEAN[0]) / CLIP_STD[0], -CLIP_MEAN[1] / CLIP_STD[1], (128.0 / 255.0 - CLIP_MEAN[2]) / CLIP_STD[2]];
        for c in 0..3 {
            assert!((out[c] - want[c]).abs() < 1e-5, "{c}: {} vs {}", out[c], want[c]);
        }
    }
}
