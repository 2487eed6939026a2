//! Encoding in batches: images (decoded in parallel, center-cropped) and texts into L2-normalised
//! global embeddings, as plain `Vec<f32>` rows.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use vlp_data::image_pipeline::{process_into, Augment, ImageConfig};
use vlp_data::source::Skip;
use vlp_data::text::TextTokenizer;
use vlp_data::{Sample, SkipLog};
use vlp_model::DualEncoder;

/// Rows of embeddings with their ids: `vectors` is `[ids.len(), dim]`, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embeddings {
    pub ids: Vec<String>,
    pub dim: usize,
    pub vectors: Vec<f32>,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }
    pub fn push_rows(&mut self, ids: Vec<String>, t: Tensor<impl Backend, 2>) {
        let [_, d] = t.dims();
        self.dim = d;
        self.ids.extend(ids);
        self.vectors.extend(rows(t));
    }
}

/// A tensor's values, row-major (a `[rows, dim]` matrix's rows one after another), as f32
/// (whatever the backend's float type): the one way vlp reads results back from a device.
pub fn rows<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 rows")
}

/// Encodes images `batch` at a time; images that fail to decode are skipped and counted.
pub fn embed_images<B: Backend>(
    model: &DualEncoder<B>,
    images: &[Sample],
    cfg: &ImageConfig,
    batch: usize,
    device: &B::Device,
) -> (Embeddings, SkipLog) {
    let mut out = Embeddings::default();
    let log = for_each_image_batch::<B>(images, cfg, batch, device, |ids, x| {
        out.push_rows(ids, model.embed_image(x));
    });
    (out, log)
}

/// Decodes `images` (in parallel, centre-cropped) and hands each batch to `f` as ids and a
/// `[n, 3, size, size]` tensor; images that fail to decode are skipped and counted.
pub fn for_each_image_batch<B: Backend>(
    images: &[Sample],
    cfg: &ImageConfig,
    batch: usize,
    device: &B::Device,
    mut f: impl FnMut(Vec<String>, Tensor<B, 4>),
) -> SkipLog {
    let px = (3 * cfg.size * cfg.size) as usize;
    let mut log = SkipLog::new();
    for chunk in images.chunks(batch.max(1)) {
        let decoded: Vec<Result<(String, Vec<f32>), Skip>> = chunk
            .par_iter()
            .map(|s| {
                let mut buf = vec![0f32; px];
                process_into(&s.image, cfg, Augment::Eval, &mut buf)
                    .map(|_| (s.key.clone(), buf))
                    .map_err(|f| Skip::new(f.reason, s.location.clone(), f.detail))
            })
            .collect();
        let mut ids = Vec::new();
        let mut pixels = Vec::with_capacity(chunk.len() * px);
        for d in decoded {
            match d {
                Ok((id, buf)) => {
                    ids.push(id);
                    pixels.extend_from_slice(&buf);
                }
                Err(skip) => skip.record_in(&mut log),
            }
        }
        if ids.is_empty() {
            continue;
        }
        let n = ids.len();
        let s = cfg.size as usize;
        f(ids, Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, s, s]), device));
    }
    log
}

/// `[batch, context]` id and mask tensors for a batch of texts.
pub fn text_tensors<B: Backend>(
    tokenizer: &TextTokenizer,
    texts: &[&str],
    device: &B::Device,
) -> vlp_data::Result<(Tensor<B, 2, Int>, Tensor<B, 2>)> {
    let enc = tokenizer.encode_batch(texts)?;
    let (n, c) = (enc.len(), enc.context);
    let ids: Vec<i32> = enc.ids.iter().map(|&i| i as i32).collect();
    let mask: Vec<f32> = enc.mask.iter().map(|&m| m as f32).collect();
    Ok((Tensor::from_data(TensorData::new(ids, [n, c]), device), Tensor::from_data(TensorData::new(mask, [n, c]), device)))
}

/// Encodes texts `batch` at a time.
pub fn embed_texts<B: Backend>(
    model: &DualEncoder<B>,
    tokenizer: &TextTokenizer,
    ids: &[String],
    texts: &[String],
    batch: usize,
    device: &B::Device,
) -> vlp_data::Result<Embeddings> {
    let mut out = Embeddings::default();
    for (id_chunk, text_chunk) in ids.chunks(batch.max(1)).zip(texts.chunks(batch.max(1))) {
        let refs: Vec<&str> = text_chunk.iter().map(String::as_str).collect();
        let (t, m) = text_tensors::<B>(tokenizer, &refs, device)?;
        out.push_rows(id_chunk.to_vec(), model.embed_text(t, m));
    }
    Ok(out)
}

/// Seeded random unit vectors: the chance baseline, through the same ranking code.
pub fn random_embeddings(ids: &[String], dim: usize, seed: u64) -> Embeddings {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut next = || rng.gen_range(-1.0f32..1.0);
    let mut vectors = Vec::with_capacity(ids.len() * dim);
    for _ in ids {
        let row: Vec<f32> = (0..dim).map(|_| next()).collect();
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        vectors.extend(row.iter().map(|x| x / n));
    }
    Embeddings { ids: ids.to_vec(), dim, vectors }
}

/// Whether a panic's text is a device running out of memory: burn-cuda (cubecl) reports an
/// allocation that does not fit as a panic, which the callers turn into an error naming the batch.
pub fn is_out_of_memory(panic_text: &str) -> bool {
    let t = panic_text.to_ascii_lowercase();
    ["out of memory", "out-of-memory", "outofmemory", "out_of_memory"].iter().any(|s| t.contains(s))
}

/// A panic's message, when it has one.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "no message".into())
}

#[cfg(test)]
mod out_of_memory_tests {
    #[test]
    fn cubecl_and_cuda_wordings_are_out_of_memory() {
        for t in [
            "An out-of-memory error happened during launch",
            "CUDA_ERROR_OUT_OF_MEMORY",
            "OutOfMemory { reason: .. }",
            "CUDA out of memory",
        ] {
            assert!(super::is_out_of_memory(t), "{t}");
        }
        assert!(!super::is_out_of_memory("index out of bounds"));
    }
}
