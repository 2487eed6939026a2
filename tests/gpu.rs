//! The GPU check (`cargo test --release --features cuda --test gpu -- --ignored`, on a machine
//! with an NVIDIA card; `benches/gpu.sh` runs it first): the same initial weights and batch give
//! the same loss and gradients on CUDA as on the CPU, in f32, for the ViT and ResNet image towers,
//! the text tower and both losses; and a model moved to the card through a checkpoint file and
//! back gives the CPU's embeddings. Tolerances: the loss within 1e-4 relative; each parameter's
//! gradient within 1e-3 of its largest entry plus 1e-6 (GPU f32 reductions sum in another order).
//! Without the `cuda` feature the same check runs CPU against CPU, which tests the check itself.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use std::collections::BTreeMap;
use vlp_embed::checkpoint::recorder;
use vlp_model::{DualEncoder, LossConfig, ModelConfig};

type Cpu = Autodiff<Flex>;

/// Every parameter's gradient, by path.
struct Grads<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = p.val().grad(self.grads) {
            self.out.insert(self.path.join("."), g.into_data().to_vec::<f32>().unwrap());
        }
    }
}

/// The loss and every gradient of one step on `batch` (images, ids, mask as plain arrays).
fn step<B: AutodiffBackend>(
    model: &DualEncoder<B>,
    loss: &LossConfig,
    batch: &(TensorData, TensorData, TensorData),
    device: &B::Device,
) -> (f32, BTreeMap<String, Vec<f32>>) {
    let images = Tensor::<B, 4>::from_data(batch.0.clone(), device);
    let ids = Tensor::<B, 2, Int>::from_data(batch.1.clone(), device);
    let mask = Tensor::<B, 2>::from_data(batch.2.clone(), device);
    let total = model.loss(images, ids, mask, loss).total;
    let value = total.clone().into_data().to_vec::<f32>().unwrap()[0];
    let grads = total.backward();
    let mut visitor = Grads::<B> { grads: &grads, path: Vec::new(), out: BTreeMap::new() };
    model.visit(&mut visitor);
    (value, visitor.out)
}

/// `model_toml`: the `[model]` sections of a run config; `G` on `gpu`: the backend checked
/// against the CPU.
fn parity<G: AutodiffBackend>(model_toml: &str, gpu: G::Device) {
    let run = format!("{model_toml}[train]\nbatch_size = 8\nsteps = 1\nlr = 1e-3\n[tokenizer]\nkind = \"wordpiece\"\nvocab_size = 256\n");
    let cfg: ModelConfig = vlp_embed::config::RunConfig::from_toml(&run, "gpu parity").unwrap().model;
    let loss = LossConfig { global_weight: 1.0, token_weight: 0.5, ..Default::default() };
    let cpu = Default::default();
    let model = cfg.init::<Cpu>(&cpu);
    let tmp = tempfile::tempdir().unwrap();
    model.clone().save_file(tmp.path().join("w"), &recorder()).unwrap();
    let on_card = cfg.init::<G>(&gpu).load_file(tmp.path().join("w"), &recorder(), &gpu).unwrap();

    let (n, s, ctx) = (8, cfg.image_size(), cfg.text.context_length);
    let images: Vec<f32> = (0..n * 3 * s * s).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let ids: Vec<i32> = (0..n * ctx).map(|i| 1 + ((i * 31) % (cfg.text.vocab_size - 2)) as i32).collect();
    let mask: Vec<f32> = (0..n * ctx).map(|i| if i % ctx < 3 + (i / ctx) % (ctx - 3) { 1.0 } else { 0.0 }).collect();
    let batch = (TensorData::new(images, [n, 3, s, s]), TensorData::new(ids, [n, ctx]), TensorData::new(mask, [n, ctx]));

    let (la, ga) = step(&model, &loss, &batch, &cpu);
    let (lb, gb) = step(&on_card, &loss, &batch, &gpu);
    assert!((la - lb).abs() <= 1e-4 * la.abs(), "loss {la} on the CPU, {lb} on CUDA");
    assert_eq!(ga.keys().collect::<Vec<_>>(), gb.keys().collect::<Vec<_>>());
    for (name, a) in &ga {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a.iter().zip(&gb[name]).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-3 * scale + 1e-6, "{name}: gradients differ by {worst} (largest entry {scale})");
    }
    eprintln!("parity: loss {la} (CPU) {lb} (CUDA), {} gradients within tolerance", ga.len());

    // and back: the card's weights through a file give the CPU's embeddings
    on_card.clone().save_file(tmp.path().join("back"), &recorder()).unwrap();
    let back = cfg.init::<Cpu>(&cpu).load_file(tmp.path().join("back"), &recorder(), &cpu).unwrap();
    let images = Tensor::<Cpu, 4>::from_data(batch.0.clone(), &cpu);
    model.encode_image(images.clone()).global.into_data().assert_eq(&back.encode_image(images).global.into_data(), true);
}

const TEXT: &str =
    "[model.text]\ncontext_length = 16\nvocab_size = 256\nwidth = 32\nlayers = 2\nheads = 4\ncausal = true\npool = \"eos\"\n";

fn vit() -> String {
    format!("[model]\nembed_dim = 32\ntoken_dim = 16\n[model.image]\nkind = \"vit\"\nimage_size = 32\npatch_size = 8\nwidth = 32\nlayers = 2\nheads = 4\n{TEXT}")
}

fn resnet() -> String {
    format!("[model]\nembed_dim = 32\ntoken_dim = 16\n[model.image]\nkind = \"resnet\"\nimage_size = 32\nlayers = [1, 1]\nwidth = 16\npool = \"attention\"\nheads = 4\n{TEXT}")
}

/// OpenCLIP's ModifiedResNet (RN50's tower), four stages of one block.
fn modified_resnet() -> String {
    format!("[model]\nembed_dim = 32\ntoken_dim = 16\n[model.image]\nkind = \"modified_resnet\"\nimage_size = 64\nlayers = [1, 1, 1, 1]\nwidth = 8\nheads = 8\n{TEXT}")
}

#[test]
fn the_check_itself_passes_cpu_against_cpu() {
    parity::<Cpu>(&vit(), Default::default());
    parity::<Cpu>(&resnet(), Default::default());
    parity::<Cpu>(&modified_resnet(), Default::default());
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use burn::backend::cuda::CudaDevice;
    type Gpu = Autodiff<burn::backend::Cuda<f32>>;

    #[test]
    #[ignore = "needs an NVIDIA card: cargo test --release --features cuda --test gpu -- --ignored"]
    fn vit_and_text_towers_give_the_cpu_loss_and_gradients_on_cuda() {
        parity::<Gpu>(&vit(), CudaDevice::new(0));
    }

    #[test]
    #[ignore = "needs an NVIDIA card: cargo test --release --features cuda --test gpu -- --ignored"]
    fn resnet_and_text_towers_give_the_cpu_loss_and_gradients_on_cuda() {
        parity::<Gpu>(&resnet(), CudaDevice::new(0));
        parity::<Gpu>(&modified_resnet(), CudaDevice::new(0));
    }
}
