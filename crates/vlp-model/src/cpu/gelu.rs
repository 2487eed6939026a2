//! GELU, `x · Φ(x)`, with its own CPU kernel.
//!
//! On the CPU backend burn's GELU calls `libm::erff` one element at a time on one core, forward
//! and again in backward; in the `tiny.toml` training step that was about a fifth of the time.
//! Here, for f32 tensors on Flex (and on Autodiff over Flex, where training runs), Φ comes from
//! Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, the formula burn-flex itself used before it
//! switched to libm) with a polynomial `exp` the compiler vectorises, over both cores. Any other
//! backend or element type gets burn's own GELU, so CUDA is untouched.

use super::flex::{cast, contiguous, from_flex, values};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// GELU of every element of `x`, any shape.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let p = match x.into_primitive() {
        TensorPrimitive::Float(p) => p,
        quantized => return burn::tensor::activation::gelu(Tensor::from_primitive(quantized)),
    };
    let p = match cast::<_, FlexTensor>(p) {
        Ok(t) => return from_flex(flex_gelu(t)),
        Err(p) => p,
    };
    let p = match cast::<_, FloatTensor<Autodiff<Flex>>>(p) {
        Ok(t) => return from_flex(autodiff_gelu(t)),
        Err(p) => p,
    };
    burn::tensor::activation::gelu(Tensor::from_primitive(TensorPrimitive::Float(p)))
}

fn flex_gelu(x: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 {
        return <Flex as burn::tensor::ops::ActivationOps<Flex>>::gelu(x);
    }
    map_f32(&x, None, |x, _| gelu_f32(x))
}

fn flex_gelu_backward(x: &FlexTensor, grad: FlexTensor) -> FlexTensor {
    if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return <Flex as burn::tensor::ops::ActivationOps<Flex>>::gelu_backward(x.clone(), grad);
    }
    map_f32(x, Some(&grad), |x, g| g * gelu_grad_f32(x))
}

/// `f(x, g)` over every element of `x` (and of `other`, same shape, when given; 0 otherwise), in
/// parallel chunks, into a new contiguous tensor.
fn map_f32(x: &FlexTensor, other: Option<&FlexTensor>, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    const CHUNK: usize = 1 << 14;
    let shape = x.shape();
    let x = contiguous(x);
    let xs = values(&x);
    let mut out = vec![0f32; xs.len()];
    match other.map(contiguous) {
        Some(g) => {
            let gs = values(&g);
            out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).zip(gs.par_chunks(CHUNK)).for_each(|((o, x), g)| lanes(o, x, Some(g), &f));
        }
        None => out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(o, x)| lanes(o, x, None, &f)),
    }
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// `o[i] = f(x[i], g[i])`, in 8-wide AVX2 registers where the CPU has them (the polynomials are
/// the same IEEE operations either way, so the results are too).
fn lanes<F: Fn(f32, f32) -> f32>(o: &mut [f32], x: &[f32], g: Option<&[f32]>, f: &F) {
    #[inline(always)]
    fn run<F: Fn(f32, f32) -> f32>(o: &mut [f32], x: &[f32], g: Option<&[f32]>, f: &F) {
        match g {
            Some(g) => o.iter_mut().zip(x).zip(g).for_each(|((o, &x), &g)| *o = f(x, g)),
            None => o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x, 0.0)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2<F: Fn(f32, f32) -> f32>(o: &mut [f32], x: &[f32], g: Option<&[f32]>, f: &F) {
        run(o, x, g, f)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { run_avx2(o, x, g, f) };
    }
    run(o, x, g, f)
}

/// GELU of every value, in place (the epilogue of [`super::linear::linear_activation`]).
pub(super) fn gelu_in_place(values: &mut [f32]) {
    in_place(values, gelu_f32)
}

/// OpenAI's QuickGELU, `x · σ(1.702 x)`, of every value, in place.
pub(super) fn quick_gelu_in_place(values: &mut [f32]) {
    in_place(values, quick_gelu_f32)
}

/// `v = f(v)` for every value, in 8-wide AVX2 registers where the CPU has them.
fn in_place<F: Fn(f32) -> f32>(values: &mut [f32], f: F) {
    #[inline(always)]
    fn run<F: Fn(f32) -> f32>(values: &mut [f32], f: &F) {
        values.iter_mut().for_each(|v| *v = f(*v));
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2<F: Fn(f32) -> f32>(values: &mut [f32], f: &F) {
        run(values, f)
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { run_avx2(values, &f) };
    }
    run(values, &f)
}

/// GELU on Autodiff over Flex: the input is kept for the backward pass (the same tensor burn's
/// GELU keeps), and the gradient is `grad · (Φ(x) + x·φ(x))`.
fn autodiff_gelu(x: FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>> {
    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Flex, 1> for GeluBackward {
        type State = FlexTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| flex_gelu_backward(&x, grad));
        }
    }

    match GeluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = flex_gelu(x.primitive.clone());
            prep.finish(x.primitive, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex_gelu(x.primitive)),
    }
}

/// `(Φ(x), e^(-x²/2))`: the normal CDF from A&S 7.1.26, where the tail is computed directly
/// (no `1 + erf` cancellation for negative x), and the exponential that φ(x) shares.
#[inline(always)]
fn normal_cdf_and_exp(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let e = exp_f32(-z * z);
    // erfc(|x|/√2) / 2: the mass beyond |x|
    let tail = 0.5 * poly * e;
    (if x < 0.0 { tail } else { 1.0 - tail }, e)
}

#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    x * normal_cdf_and_exp(x).0
}

/// `x · σ(1.702 x)`, with `σ(z) = 1 / (1 + e^-z)` for `z ≥ 0` and `e^z / (1 + e^z)` below, so
/// that [`exp_f32`] only sees `-|z|`.
#[inline(always)]
fn quick_gelu_f32(x: f32) -> f32 {
    let z = 1.702 * x;
    let e = exp_f32(-z.abs());
    let sigmoid = if z >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
    x * sigmoid
}

/// d/dx of `x·Φ(x)`: `Φ(x) + x·φ(x)`, φ(x) = e^(-x²/2)/√(2π).
#[inline(always)]
fn gelu_grad_f32(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (cdf, e) = normal_cdf_and_exp(x);
    cdf + x * INV_SQRT_2PI * e
}

/// e^x for x ≤ 0 (Cephes' expf polynomial, relative error ~1e-7), written with no branches or
/// calls so that a loop over it vectorises; below -87, where e^x is subnormal in f32, it returns 0.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // adding 1.5·2^23 rounds to an integer in the low mantissa bits, without a round instruction
    const SHIFT: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = x.max(-87.0);
    let shifted = x * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let p = p * r * r + r + 1.0;
    let scale = f32::from_bits(((shifted.to_bits() as i32 - SHIFT.to_bits() as i32 + 127) << 23) as u32);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;

    fn normal_cdf_f64(x: f64) -> f64 {
        0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
    }

    fn gelu_f64(x: f64) -> f64 {
        x * normal_cdf_f64(x)
    }

    fn grid() -> Vec<f32> {
        (-1200..=1200).map(|i| i as f32 / 100.0).chain([-100.0, -88.5, 0.0, 1e-30, 50.0, 100.0]).collect()
    }

    #[test]
    fn exp_matches_f64_over_its_range() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            assert!((got - want).abs() <= 3e-7 * want + 1e-38, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp_f32(-87.01), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
    }

    #[test]
    fn gelu_and_its_derivative_match_f64() {
        for x in grid() {
            let xd = x as f64;
            let want = gelu_f64(xd);
            let got = gelu_f32(x) as f64;
            assert!((got - want).abs() <= 2e-7 * xd.abs().max(1.0), "gelu({x}) = {got}, want {want}");
            let want_grad = normal_cdf_f64(xd) + xd * (-xd * xd / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let got_grad = gelu_grad_f32(x) as f64;
            assert!((got_grad - want_grad).abs() <= 5e-7, "gelu'({x}) = {got_grad}, want {want_grad}");
        }
    }

    #[test]
    fn flex_and_autodiff_agree_with_burns_gelu() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let values: Vec<f32> = (0..4 * 6 * 5).map(|i| ((i * 37 % 101) as f32 - 50.0) / 9.0).collect();
        // a transposed view: the kernel has to read it in logical order
        let make = || Tensor::<B, 3>::from_data(TensorData::new(values.clone(), [4, 6, 5]), &device).swap_dims(1, 2);
        let weights =
            Tensor::<B, 3>::from_data(TensorData::new((0..120).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(), [4, 5, 6]), &device);

        let ours = make().require_grad();
        let theirs = make().require_grad();
        let y_ours = gelu(ours.clone());
        let y_theirs = burn::tensor::activation::gelu(theirs.clone());
        y_ours.to_data().assert_approx_eq::<f32>(&y_theirs.to_data(), burn::tensor::Tolerance::absolute(1e-6));

        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_theirs = (y_theirs * weights).sum().backward();
        let (g_ours, g_theirs) = (ours.grad(&g_ours).unwrap(), theirs.grad(&g_theirs).unwrap());
        g_ours.to_data().assert_approx_eq::<f32>(&g_theirs.to_data(), burn::tensor::Tolerance::absolute(3e-6));

        // inference on plain Flex takes the same kernel
        let plain = || Tensor::<Flex, 3>::from_data(TensorData::new(values.clone(), [4, 6, 5]), &device).swap_dims(1, 2);
        let (ours, theirs) = (gelu(plain()), burn::tensor::activation::gelu(plain()));
        ours.to_data().assert_approx_eq::<f32>(&theirs.to_data(), burn::tensor::Tolerance::absolute(1e-6));
    }
}
