//! Layer normalisation over the last axis, `y = (x - mean) / sqrt(var + eps) · γ + β`, with its
//! own CPU kernel for training.
//!
//! burn's `LayerNorm` under autodiff is built from nine tensor ops (two means, a subtraction, a
//! square, a square root, a division, a scale and a shift, each a pass over memory on one core),
//! and its backward from twice as many. Each tower runs 2·layers + 2 of them per step. Here, on
//! Autodiff over Flex with f32 tensors, forward is one pass per row and backward one pass per
//! row plus the γ and β sums, both spread over the cores. Any other backend or element type gets
//! burn's own `layer_norm` op. Parameters and records are those of `burn::nn::LayerNorm`
//! (`gamma`, `beta`), so checkpoints load either way.

use super::flex::{cast, contiguous, from_flex, same_type, values};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct LayerNormConfig {
    /// Width of the normalised (last) axis.
    pub width: usize,
    pub epsilon: f64,
}

impl LayerNormConfig {
    /// CLIP's (and burn's) ε of 1e-5.
    pub fn new(width: usize) -> Self {
        Self { width, epsilon: 1e-5 }
    }

    /// γ = 1, β = 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            gamma: Initializer::Ones.init([self.width], device),
            beta: Some(Initializer::Zeros.init([self.width], device)),
            epsilon: self.epsilon,
        }
    }
}

#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// `[width]`, the scale γ.
    pub gamma: Param<Tensor<B, 1>>,
    /// `[width]`, the shift β. Always present here; optional to keep burn's record layout.
    pub beta: Option<Param<Tensor<B, 1>>>,
    epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// `x`: `[..., width]` → the same shape, each last-axis row normalised.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gamma = self.gamma.val().into_primitive().tensor();
        let beta = self.beta.as_ref().map(|b| b.val().into_primitive().tensor());
        let burns = |x: FloatTensor<B>, gamma: FloatTensor<B>, beta: Option<FloatTensor<B>>| {
            Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(x, gamma, beta, self.epsilon)))
        };
        let x = match x.into_primitive() {
            TensorPrimitive::Float(p) => p,
            quantized => return burns(quantized.tensor(), gamma, beta),
        };
        match beta {
            Some(beta) if x.dtype() == DType::F32 && same_type::<FloatTensor<B>, FloatTensor<Autodiff<Flex>>>() => {
                let [x, gamma, beta] =
                    [x, gamma, beta].map(|t| cast::<_, FloatTensor<Autodiff<Flex>>>(t).unwrap_or_else(|_| unreachable!("same type")));
                from_flex(autodiff_layer_norm(x, gamma, beta, self.epsilon as f32))
            }
            beta => burns(x, gamma, beta),
        }
    }
}

/// Rows per parallel task: 64 rows of a few hundred floats is enough work to outweigh handing out.
const ROWS_PER_TASK: usize = 64;

/// What backward needs: the input and, per row, its mean and 1/σ.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

fn autodiff_layer_norm(
    x: FloatTensor<Autodiff<Flex>>,
    gamma: FloatTensor<Autodiff<Flex>>,
    beta: FloatTensor<Autodiff<Flex>>,
    epsilon: f32,
) -> FloatTensor<Autodiff<Flex>> {
    #[derive(Debug)]
    struct LayerNormBackward;

    impl Backward<Flex, 3> for LayerNormBackward {
        type State = Saved;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let dy = grads.consume::<Flex>(&ops.node);
            let (dx, dgamma, dbeta) = layer_norm_backward(&ops.state, &dy);
            for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                if let Some(node) = node {
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }

    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    match LayerNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, saved) = layer_norm_forward(&x.primitive, &gamma.primitive, &beta.primitive, epsilon);
            prep.finish(saved, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(layer_norm_forward(&x.primitive, &gamma.primitive, &beta.primitive, epsilon).0),
    }
}

/// Returns `y` and what backward needs: the contiguous `x` and γ it read, each row's mean and 1/σ.
fn layer_norm_forward(x: &FlexTensor, gamma: &FlexTensor, beta: &FlexTensor, epsilon: f32) -> (FlexTensor, Saved) {
    let shape = x.shape();
    let width = shape[shape.num_dims() - 1];
    let (x, gamma_t, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
    let (xs, gamma, beta) = (values(&x), values(&gamma_t), values(&beta));
    let rows = xs.len() / width.max(1);
    let mut y = vec![0f32; xs.len()];
    let mut mean = vec![0f32; rows];
    let mut rstd = vec![0f32; rows];
    let chunk = ROWS_PER_TASK * width.max(1);
    y.par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .zip(mean.par_chunks_mut(ROWS_PER_TASK).zip(rstd.par_chunks_mut(ROWS_PER_TASK)))
        .for_each(|((y, x), (mean, rstd))| {
            for (((y, x), mean), rstd) in y.chunks_mut(width).zip(x.chunks(width)).zip(mean).zip(rstd) {
                let m = x.iter().sum::<f32>() / width as f32;
                let var = x.iter().map(|&v| (v - m) * (v - m)).sum::<f32>() / width as f32;
                let r = 1.0 / (var + epsilon).sqrt();
                for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *y = (x - m) * r * g + b;
                }
                (*mean, *rstd) = (m, r);
            }
        });
    (FlexTensor::from_data(TensorData::new(y, shape)), Saved { x, gamma: gamma_t, mean, rstd })
}

/// With `x̂ = (x - mean)·r` and `g = dy·γ`: `dx = r·(g - mean(g) - x̂·mean(g·x̂))` per row,
/// `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`.
fn layer_norm_backward(saved: &Saved, dy: &FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
    let shape = saved.x.shape();
    let width = shape[shape.num_dims() - 1];
    let dy = contiguous(dy);
    let (xs, dys, gamma) = (values(&saved.x), values(&dy), values(&saved.gamma));
    let mut dx = vec![0f32; xs.len()];
    let chunk = ROWS_PER_TASK * width.max(1);
    let (dgamma, dbeta) = dx
        .par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk).zip(dys.par_chunks(chunk)))
        .zip(saved.mean.par_chunks(ROWS_PER_TASK).zip(saved.rstd.par_chunks(ROWS_PER_TASK)))
        .map(|((dx, (x, dy)), (mean, rstd))| {
            let (mut dgamma, mut dbeta) = (vec![0f32; width], vec![0f32; width]);
            for ((((dx, x), dy), &m), &r) in dx.chunks_mut(width).zip(x.chunks(width)).zip(dy.chunks(width)).zip(mean).zip(rstd) {
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                for (((&x, &dy), &gm), (dg, db)) in x.iter().zip(dy).zip(gamma).zip(dgamma.iter_mut().zip(dbeta.iter_mut())) {
                    let xhat = (x - m) * r;
                    let g = dy * gm;
                    sum_g += g;
                    sum_gx += g * xhat;
                    *dg += dy * xhat;
                    *db += dy;
                }
                let (mean_g, mean_gx) = (sum_g / width as f32, sum_gx / width as f32);
                for (((dx, &x), &dy), &gm) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                    *dx = r * (dy * gm - mean_g - (x - m) * r * mean_gx);
                }
            }
            (dgamma, dbeta)
        })
        // each task's sums, added in task order: rayon's own reduce pairs them as the work was
        // stolen, which would make a seeded run differ from itself in the last bits
        .collect::<Vec<_>>()
        .into_iter()
        .fold((vec![0f32; width], vec![0f32; width]), |(mut ga, mut ba), (gb, bb)| {
            ga.iter_mut().zip(gb).for_each(|(a, b)| *a += b);
            ba.iter_mut().zip(bb).for_each(|(a, b)| *a += b);
            (ga, ba)
        });
    let vector = |v: Vec<f32>| FlexTensor::from_data(TensorData::new(v, Shape::new([width])));
    (FlexTensor::from_data(TensorData::new(dx, shape)), vector(dgamma), vector(dbeta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::AutodiffModule;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::Tolerance;

    type B = Autodiff<Flex>;

    fn filled<BK: Backend, const D: usize>(n: usize, shape: [usize; D], seed: usize) -> Tensor<BK, D> {
        let values: Vec<f32> = (0..n).map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 13.0).collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    /// Normalisation written as plain f64 loops.
    fn reference(x: &[f32], width: usize, gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
        x.chunks(width)
            .flat_map(|row| {
                let m = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
                let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / width as f64;
                row.iter().zip(gamma).zip(beta).map(move |((&v, &g), &b)| (v as f64 - m) / (var + eps).sqrt() * g as f64 + b as f64)
            })
            .collect()
    }

    /// A layer norm with γ and β that are not 1 and 0, on backend `BK`.
    fn layer<BK: Backend>(width: usize) -> LayerNorm<BK> {
        let mut ln = LayerNormConfig::new(width).init::<BK>(&Default::default());
        ln.gamma = Param::from_tensor(filled(width, [width], 3).div_scalar(4.0).add_scalar(1.0));
        ln.beta = Some(Param::from_tensor(filled(width, [width], 5).div_scalar(3.0)));
        ln
    }

    #[test]
    fn forward_matches_f64_on_flex_and_under_autodiff() {
        let width = 12;
        let ln = layer::<B>(width);
        // a transposed view: the kernel must read it in logical order
        let x = filled::<B, 3>(4 * width * 5, [4, width, 5], 0).swap_dims(1, 2);
        let xs = x.to_data().to_vec::<f32>().unwrap();
        let (gamma, beta) =
            (ln.gamma.val().to_data().to_vec::<f32>().unwrap(), ln.beta.as_ref().unwrap().val().to_data().to_vec::<f32>().unwrap());
        let want = reference(&xs, width, &gamma, &beta, 1e-5);
        for got in [ln.forward(x.clone()).to_data(), ln.valid().forward(x.inner()).to_data()] {
            let got = got.to_vec::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 2e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn gradients_match_burns_layer_norm() {
        // the kernel, not burn's op, is what this compares
        assert!(same_type::<FloatTensor<B>, FloatTensor<Autodiff<Flex>>>());
        let width = 24;
        let ours = layer::<B>(width);
        let mut theirs = burn::nn::LayerNormConfig::new(width).init::<B>(&Default::default());
        theirs.gamma = Param::from_tensor(ours.gamma.val().detach());
        theirs.beta = Some(Param::from_tensor(ours.beta.as_ref().unwrap().val().detach()));
        // 130 rows: more than one parallel task, and a last task that is not full
        let make = || filled::<B, 3>(2 * 65 * width, [2, 65, width], 1).require_grad();
        let weights = filled::<B, 3>(2 * 65 * width, [2, 65, width], 7);
        let (x_ours, x_theirs) = (make(), make());
        let (y_ours, y_theirs) = (ours.forward(x_ours.clone()), theirs.forward(x_theirs.clone()));
        y_ours.to_data().assert_approx_eq::<f32>(&y_theirs.to_data(), Tolerance::absolute(2e-5));
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_theirs = (y_theirs * weights).sum().backward();
        let tol = Tolerance::absolute(1e-4);
        x_ours.grad(&g_ours).unwrap().to_data().assert_approx_eq::<f32>(&x_theirs.grad(&g_theirs).unwrap().to_data(), tol);
        let grad = |p: &Param<Tensor<B, 1>>, g| p.val().grad(g).unwrap().to_data();
        grad(&ours.gamma, &g_ours).assert_approx_eq::<f32>(&grad(&theirs.gamma, &g_theirs), tol);
        grad(ours.beta.as_ref().unwrap(), &g_ours).assert_approx_eq::<f32>(&grad(theirs.beta.as_ref().unwrap(), &g_theirs), tol);
    }

    #[test]
    fn records_are_those_of_burns_layer_norm() {
        let theirs = {
            let mut ln = burn::nn::LayerNormConfig::new(6).init::<Flex>(&Default::default());
            ln.gamma = Param::from_tensor(filled(6, [6], 2));
            ln
        };
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = recorder.record(theirs.clone().into_record(), ()).unwrap();
        let ours =
            LayerNormConfig::new(6).init::<Flex>(&Default::default()).load_record(recorder.load(bytes, &Default::default()).unwrap());
        ours.gamma.val().to_data().assert_eq(&theirs.gamma.val().to_data(), true);
        let x = filled::<Flex, 2>(18, [3, 6], 4);
        ours.forward(x.clone()).to_data().assert_approx_eq::<f32>(&theirs.forward(x).to_data(), Tolerance::absolute(1e-5));
    }
}
