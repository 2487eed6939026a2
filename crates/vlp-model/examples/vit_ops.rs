//! Where a ViT-B/32 transformer block's time goes when embedding on the CPU: each of its
//! operations at batch 32 (`[32, 50, 768]`, 12 heads), burn's op beside vlp's kernel for it
//! (`vlp_model::cpu`), then the whole block as the model runs it. The best of three rounds.
//!
//!     cargo run --release -p vlp-model --example vit_ops
//!
//! The peer for the products is `benches/openclip/gemm_bench.py` (PyTorch's `addmm`, same shapes).

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;
use vlp_model::cpu::gemm::{matmul, Weight};
use vlp_model::cpu::self_attention::attend;
use vlp_model::init::BlockScheme;
use vlp_model::transformer::TransformerConfig;
use vlp_model::{Activation, BlockNorm};

type B = Flex;

/// Prints the best mean time over three rounds of `reps` calls, and GFLOP/s when `flop` is given.
fn time<T>(name: &str, reps: usize, flop: Option<f64>, mut f: impl FnMut() -> T) {
    std::hint::black_box(f());
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(f());
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    let rate = flop.map(|f| format!("{:6.1} GFLOP/s", f / best / 1e9)).unwrap_or_default();
    println!("{name:46} {:8.2} ms {rate}", best * 1e3);
}

fn values<const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone().into_data().to_vec().expect("f32")
}

fn main() {
    let device = Default::default();
    let (batch, tokens, width, heads) = (32, 50, 768, 12);
    let rows = batch * tokens;
    let normal = |shape: [usize; 2], std: f64| Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, std), &device);
    let x = normal([rows, width], 1.0);
    let hidden = normal([rows, 4 * width], 1.0);
    let w_qkv = normal([width, 3 * width], 0.02);
    let w_fc = normal([width, 4 * width], 0.02);
    let w_proj = normal([4 * width, width], 0.02);
    let bias = Tensor::<B, 1>::random([4 * width], Distribution::Normal(0.0, 0.02), &device);
    let (xs, hs, qkv_s, fc_s, proj_s, bias_s) =
        (values(&x), values(&hidden), values(&w_qkv), values(&w_fc), values(&w_proj), values(&bias));
    let flop = |k: usize, n: usize| Some(2.0 * (rows * k * n) as f64);

    println!("products [{rows}, k] · [k, n], with the bias:");
    time("  burn: q, k, v (3 × n 768, weight slices)", 3, flop(width, 3 * width), || {
        (0..3).map(|i| x.clone().matmul(w_qkv.clone().slice([0..width, i * width..(i + 1) * width]))).collect::<Vec<_>>()
    });
    time("  vlp:  q, k, v fused (n 2304)", 3, flop(width, 3 * width), || {
        matmul(&xs, rows, width, Weight::whole(&qkv_s, 3 * width), Some(&bias_s[..3 * width]))
    });
    time("  burn: MLP in (k 768, n 3072)", 3, flop(width, 4 * width), || x.clone().matmul(w_fc.clone()));
    time("  burn: its bias, one more pass", 5, None, || hidden.clone() + bias.clone().unsqueeze_dim(0));
    time("  vlp:  MLP in, bias in the first pass", 3, flop(width, 4 * width), || {
        matmul(&xs, rows, width, Weight::whole(&fc_s, 4 * width), Some(&bias_s))
    });
    time("  burn: MLP out (k 3072, n 768)", 3, flop(4 * width, width), || hidden.clone().matmul(w_proj.clone()));
    time("  vlp:  MLP out", 3, flop(4 * width, width), || {
        matmul(&hs, rows, 4 * width, Weight::whole(&proj_s, width), Some(&bias_s[..width]))
    });

    println!("attention, [{batch}, {heads} heads, {tokens}, 64]:");
    let q = Tensor::<B, 4>::random([batch, heads, tokens, 64], Distribution::Normal(0.0, 1.0), &device);
    time("  burn: attention op", 5, None, || {
        burn::tensor::module::attention(q.clone(), q.clone(), q.clone(), None, None, Default::default())
    });
    time("  burn: a head swap (one of the two around it)", 5, None, || vlp_model::heads::swap_heads(q.clone()));
    let qkv = matmul(&xs, rows, width, Weight::whole(&qkv_s, 3 * width), None).expect("AVX2 and FMA");
    time("  vlp:  heads read and written in place", 5, None, || attend(&qkv, batch, tokens, heads, 64, None, false));

    println!("elementwise:");
    time("  vlp:  GELU of the MLP's hidden layer", 5, None, || vlp_model::gelu::gelu(hidden.clone()));
    let ln = vlp_model::layer_norm::LayerNormConfig { width, epsilon: 1e-5 }.init::<B>(&device);
    let x3 = x.clone().reshape([batch, tokens, width]);
    time("  vlp:  layer norm", 5, None, || ln.forward(x3.clone()));

    let config = TransformerConfig { width, layers: 1, heads, mlp_ratio: 4.0, init: BlockScheme::PyTorchDefault, layer_norm_eps: 1e-5 };
    let block = config.init::<B>(&device);
    let block_flop = Some(2.0 * rows as f64 * 12.0 * (width * width) as f64);
    time("one block as the model runs it", 3, block_flop, || block.forward(x3.clone(), None, false, Activation::Gelu, BlockNorm::Pre));
    let conv = burn::nn::conv::Conv2dConfig::new([3, width], [32, 32]).with_stride([32, 32]).with_bias(false).init::<B>(&device);
    let images = Tensor::<B, 4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    time("patch embedding (burn's conv2d), once per batch", 3, Some(2.0 * (batch * 49 * 3 * 32 * 32 * width) as f64), || {
        conv.forward(images.clone())
    });
}
