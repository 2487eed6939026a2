//! Zero-shot classification: each class named through prompt templates ("a photo of a {}."),
//! each image given the class whose prompts it matches best.
//!
//! Two ways to put several templates together, as the two lineages do:
//! - CLIP: embed every prompt of a class, average the normalised global embeddings, normalise
//!   again, and score images against that one class vector;
//! - FILIP: score each image against each prompt with the token-level similarity (mean over
//!   image tokens of the best prompt token), then average the scores over the templates. A mean
//!   embedding means nothing token by token, so a token-level model ensembles similarities.

use crate::embed::{for_each_image_batch, random_embeddings, rows, text_tensors, Embeddings};
use crate::{EmbedError, Result};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Serialize;
use vlp_data::image_pipeline::ImageConfig;
use vlp_data::text::TextTokenizer;
use vlp_data::{Sample, SkipLog};
use vlp_model::dual::l2_normalize;
use vlp_model::loss::TokenwiseLoss;
use vlp_model::DualEncoder;

/// CLIP's ImageNet prompts, trimmed to those that suit icons, drawings and photos alike.
pub const TEMPLATES_EN: [&str; 8] = [
    "a photo of a {}.",
    "a picture of {}.",
    "an icon of {}.",
    "an emoji of {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "a cartoon {}.",
    "{}.",
];

/// Chinese-CLIP's style of prompts.
pub const TEMPLATES_ZH: [&str; 7] =
    ["一张{}的照片。", "{}的图片。", "一个{}的图标。", "{}的表情符号。", "一幅{}的画。", "一个卡通{}。", "{}。"];

/// `en`, `zh`, or a file with one template per line, each with one `{}`.
pub fn templates(spec: &str) -> Result<Vec<String>> {
    let list: Vec<String> = match spec {
        "en" => TEMPLATES_EN.iter().map(|s| s.to_string()).collect(),
        "zh" => TEMPLATES_ZH.iter().map(|s| s.to_string()).collect(),
        path => std::fs::read_to_string(path)
            .map_err(|e| EmbedError::Invalid(format!("--templates {path}: {e} (give en, zh or a file)")))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    };
    if list.is_empty() {
        return Err(EmbedError::Invalid(format!("--templates {spec}: no templates")));
    }
    if let Some(bad) = list.iter().find(|t| t.matches("{}").count() != 1) {
        return Err(EmbedError::Invalid(format!("--templates {spec}: {bad:?} must hold exactly one {{}}")));
    }
    Ok(list)
}

/// Images with their class, and the class names.
#[derive(Debug, Clone, Default)]
pub struct LabelledImages {
    pub images: Vec<Sample>,
    /// Index into `classes`, per image.
    pub labels: Vec<usize>,
    /// Each class as the data names it (the value of the label field), sorted.
    pub classes: Vec<String>,
    pub skipped: SkipLog,
}

impl LabelledImages {
    /// Classes are the distinct values of `field` in the images' metadata; an image without
    /// the field is skipped and counted.
    pub fn from_samples(samples: Vec<Sample>, field: &str) -> Result<Self> {
        let mut out = LabelledImages::default();
        let mut named = Vec::new();
        for s in samples {
            let label = match s.meta.get(field) {
                Some(serde_json::Value::String(v)) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => {
                    return Err(EmbedError::Invalid(format!(
                        "--label-field {field}: {} holds {v}, not one label; zero-shot needs one class per image",
                        s.location
                    )))
                }
                _ => None,
            };
            match label {
                Some(l) => named.push((s, l)),
                None => vlp_data::source::Skip::new(
                    vlp_data::SkipReason::FieldMissing,
                    s.location.clone(),
                    format!("no {field:?} to classify by"),
                )
                .record_in(&mut out.skipped),
            }
        }
        out.classes = named.iter().map(|(_, v)| v.clone()).collect();
        out.classes.sort();
        out.classes.dedup();
        if out.classes.len() < 2 {
            return Err(EmbedError::Invalid(format!(
                "--label-field {field}: {} distinct value(s) among {} images; zero-shot needs at least two classes",
                out.classes.len(),
                named.len()
            )));
        }
        for (s, v) in named {
            out.labels.push(out.classes.binary_search(&v).expect("class listed"));
            out.images.push(s);
        }
        Ok(out)
    }
}

/// Accuracy of one way of scoring.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ZeroShotScore {
    /// `global, mean embedding` or `token-level, mean similarity`.
    pub method: String,
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
    pub classes: usize,
}

/// Top-1 and top-5 accuracy of `scores` (`[images, classes]` row-major) against `labels`.
/// A tie counts against the true class, so constant scores earn no credit.
pub fn accuracy(scores: &[f32], classes: usize, labels: &[usize]) -> (f64, f64) {
    let (mut top1, mut top5) = (0usize, 0usize);
    for (row, &label) in scores.chunks(classes).zip(labels) {
        let truth = row[label];
        let better = row.iter().enumerate().filter(|&(c, &s)| c != label && s >= truth).count();
        top1 += (better == 0) as usize;
        top5 += (better < 5) as usize;
    }
    let n = labels.len().max(1) as f64;
    (top1 as f64 / n, top5 as f64 / n)
}

/// Prompts for every class: `[classes × templates]`, class-major.
pub fn prompts(class_names: &[String], templates: &[String]) -> Vec<String> {
    class_names.iter().flat_map(|c| templates.iter().map(move |t| t.replace("{}", c))).collect()
}

/// Scores `set` with the model: always the CLIP way; also the FILIP way when `token_level`.
#[allow(clippy::too_many_arguments)]
pub fn classify<B: Backend>(
    model: &DualEncoder<B>,
    tokenizer: &TextTokenizer,
    image_cfg: &ImageConfig,
    set: &LabelledImages,
    class_names: &[String],
    templates: &[String],
    token_level: bool,
    device: &B::Device,
) -> Result<(Vec<ZeroShotScore>, SkipLog)> {
    let (c, t) = (class_names.len(), templates.len());
    let texts = prompts(class_names, templates);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (ids, mask) = text_tensors::<B>(tokenizer, &refs, device)?;
    let prompt = model.encode_text(ids, mask.clone());
    let [_, d] = prompt.global.dims();
    // CLIP: one vector per class, [d, c]
    let class_vectors = l2_normalize(prompt.global.reshape([c, t, d]).mean_dim(1).reshape([c, d])).transpose();
    let mut global_scores = Vec::with_capacity(set.images.len() * c);
    let mut token_scores = Vec::new();
    let mut labels = Vec::with_capacity(set.labels.len());
    let label_of: std::collections::HashMap<&str, usize> = set.images.iter().zip(&set.labels).map(|(s, &l)| (s.key.as_str(), l)).collect();
    let skipped = for_each_image_batch::<B>(&set.images, image_cfg, 32, device, |keys, x| {
        labels.extend(keys.iter().map(|k| label_of[k.as_str()]));
        let img = model.encode_image(x);
        let n = keys.len();
        let g: Vec<f32> = rows(img.global.matmul(class_vectors.clone()));
        global_scores.extend(g);
        if token_level {
            let (i2t, _) = TokenwiseLoss::similarities(img.tokens, prompt.tokens.clone(), mask.clone());
            let per_class: Tensor<B, 2> = i2t.reshape([n, c, t]).mean_dim(2).reshape([n, c]);
            token_scores.extend(rows(per_class));
        }
    });
    let score = |method: &str, scores: &[f32]| {
        let (top1, top5) = accuracy(scores, c, &labels);
        ZeroShotScore { method: method.into(), top1, top5, images: labels.len(), classes: c }
    };
    let mut out = vec![score("global, mean embedding", &global_scores)];
    if token_level {
        out.push(score("token-level, mean similarity", &token_scores));
    }
    Ok((out, skipped))
}

/// The same classification with random unit vectors for images and classes: chance, measured.
pub fn random_baseline(set: &LabelledImages, dim: usize) -> ZeroShotScore {
    let ids: Vec<String> = (0..set.images.len()).map(|i| i.to_string()).collect();
    let classes: Vec<String> = set.classes.clone();
    let (im, cl): (Embeddings, Embeddings) = (random_embeddings(&ids, dim, 3), random_embeddings(&classes, dim, 4));
    let scores = crate::retrieval::scores(&im, &cl);
    let (top1, top5) = accuracy(&scores, classes.len(), &set.labels);
    ZeroShotScore { method: "random embeddings".into(), top1, top5, images: ids.len(), classes: classes.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_ties_against_the_truth() {
        // 3 images, 6 classes
        let scores = [
            0.9, 0.1, 0.2, 0.3, 0.4, 0.5, // label 0: top 1
            0.9, 0.8, 0.7, 0.6, 0.5, 0.4, // label 5: rank 6
            0.5, 0.5, 0.5, 0.5, 0.5, 0.5, // label 2: tied with all, no credit
        ];
        assert_eq!(accuracy(&scores, 6, &[0, 5, 2]), (1.0 / 3.0, 1.0 / 3.0));
        assert_eq!(accuracy(&scores, 6, &[0, 1, 2]), (1.0 / 3.0, 2.0 / 3.0));
    }

    #[test]
    fn templates_are_checked() {
        assert_eq!(templates("en").unwrap().len(), TEMPLATES_EN.len());
        assert!(templates("zh").unwrap().iter().all(|t| t.contains("{}")));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.txt");
        std::fs::write(&f, "# mine\na {} b\n\nno slot\n").unwrap();
        let e = templates(f.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("no slot") && e.contains("exactly one"), "{e}");
        assert!(templates("/nonexistent/t.txt").unwrap_err().to_string().contains("/nonexistent/t.txt"));
        assert_eq!(prompts(&["cat".into(), "dog".into()], &["a {}".into(), "{}!".into()]), ["a cat", "cat!", "a dog", "dog!"]);
    }
}
