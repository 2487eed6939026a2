//! burn's `Linear` for embedding on the CPU: `x · W + b` (and the MLP's activation after it)
//! through [`super::gemm`] on Flex with f32 tensors; burn's own ops on every other backend, under
//! autodiff, in a bf16 scope, and for products of fewer than `MIN_ROWS` rows (where packing the
//! weight would cost more than the product).

use super::flex::{flex_f32, flex_result, values};
use super::gelu::{gelu, gelu_in_place, quick_gelu_in_place};
use super::gemm::{self, Epilogue, Fused, Weight};
use crate::config::Activation;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorMetadata};
use burn_flex::FlexTensor;

/// Fewer rows than this go through burn: packing a `[k, n]` weight costs about as much as a
/// product of ~64 rows by it.
const MIN_ROWS: usize = 64;

/// Whether a product of `rows` rows takes the kernel: enough rows, no bf16 scope open, a CPU with
/// AVX2 and FMA (the backend and element type are [`flex_f32`]'s to check).
pub(super) fn takes_kernel(rows: usize) -> bool {
    rows >= MIN_ROWS && !crate::autocast::active() && gemm::available()
}

/// A layer's weight and bias as f32 Flex tensors, when they are.
pub(super) fn flex_parameters<B: Backend, const D: usize>(
    weight: &Param<Tensor<B, D>>,
    bias: &Option<Param<Tensor<B, 1>>>,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
    let bias = match bias {
        Some(b) => Some(flex_f32(b.val())?),
        None => None,
    };
    Some((flex_f32(weight.val())?, bias))
}

/// `layer.forward(x)`. `x`: `[..., in]` → `[..., out]`.
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    match flex_linear(layer, &x, None, None) {
        Some(y) => y,
        None => layer.forward(x),
    }
}

/// `residual + layer.forward(x)`, a transformer block's second half with its skip connection;
/// on the kernel's path the residual is added inside the product. `x`: `[..., in]`;
/// `residual`: `[..., out]`.
pub fn linear_residual<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>, residual: Tensor<B, D>) -> Tensor<B, D> {
    match flex_linear(layer, &x, None, Some(&residual)) {
        Some(y) => y,
        None => residual + crate::autocast::linear(layer, x),
    }
}

/// `activation(layer.forward(x))`, the first half of a transformer's MLP; on the kernel's path
/// the activation runs on each thread's rows as soon as their product is done, in place.
pub fn linear_activation<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>, activation: Activation) -> Tensor<B, D> {
    let epilogue: Epilogue = match activation {
        Activation::Gelu => &gelu_in_place,
        Activation::QuickGelu => &quick_gelu_in_place,
    };
    if let Some(y) = flex_linear(layer, &x, Some(epilogue), None) {
        return y;
    }
    let hidden = crate::autocast::linear(layer, x);
    match activation {
        Activation::Gelu => gelu(hidden),
        Activation::QuickGelu => hidden.clone() * sigmoid(hidden * 1.702),
    }
}

fn flex_linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: &Tensor<B, D>,
    then: Option<Epilogue>,
    residual: Option<&Tensor<B, D>>,
) -> Option<Tensor<B, D>> {
    let mut dims = x.dims();
    let k = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    if !takes_kernel(m) {
        return None;
    }
    let x = flex_f32(x.clone())?;
    let (weight, bias) = flex_parameters(&layer.weight, &layer.bias)?;
    let n = weight.shape()[1];
    let residual = match residual {
        Some(r) => Some(flex_f32(r.clone())?),
        None => None,
    };
    let fused = Fused { bias: bias.as_ref().map(values), residual: residual.as_ref().map(values), then };
    let y = gemm::matmul_fused(values(&x), m, k, Weight::whole(values(&weight), n).owned_by(&weight), fused)?;
    dims[D - 1] = n;
    Some(flex_result(y, dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    /// The kernel's result against burn's `Linear` on the same weights, rank 2 and 3.
    #[test]
    fn agrees_with_burns_linear() {
        let device = Default::default();
        let layer = LinearConfig::new(40, 24).init::<Flex>(&device);
        let x = Tensor::<Flex, 3>::random([3, 70, 40], Distribution::Normal(0.0, 1.0), &device);
        let want = layer.forward(x.clone()).into_data();
        let got = linear(&layer, x.clone()).into_data();
        got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
        let flat = x.reshape([210, 40]);
        linear(&layer, flat.clone())
            .into_data()
            .assert_approx_eq::<f32>(&layer.forward(flat).into_data(), burn::tensor::Tolerance::absolute(1e-5));
        // under autodiff it is burn's own layer, gradients and all
        let layer = LinearConfig::new(40, 24).init::<Autodiff<Flex>>(&device);
        let x = Tensor::<Autodiff<Flex>, 2>::random([100, 40], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = linear(&layer, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_some());
    }

    /// With packed weights kept between products (as an `Encoder` keeps them), a layer still
    /// agrees with burn's after its weight changes: the new values are packed afresh.
    #[test]
    fn kept_weights_follow_a_changed_parameter() {
        crate::cpu::pack::keep_packed_weights(1 << 20);
        let device = Default::default();
        let mut layer = LinearConfig::new(40, 24).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::random([100, 40], Distribution::Normal(0.0, 1.0), &device);
        let tolerance = burn::tensor::Tolerance::absolute(1e-5);
        for _ in 0..2 {
            linear(&layer, x.clone()).into_data().assert_approx_eq::<f32>(&layer.forward(x.clone()).into_data(), tolerance);
        }
        layer.weight = Param::from_tensor(layer.weight.val() * 2.0);
        linear(&layer, x.clone()).into_data().assert_approx_eq::<f32>(&layer.forward(x).into_data(), tolerance);
    }

    /// The residual added inside the product against burn's `Linear` plus the residual, on the
    /// kernel's path (Flex) and burn's (Autodiff).
    #[test]
    fn residual_agrees_with_burns_linear_plus_it() {
        fn check<B: Backend>() {
            let device = Default::default();
            let layer = LinearConfig::new(40, 24).init::<B>(&device);
            let x = Tensor::<B, 3>::random([3, 70, 40], Distribution::Normal(0.0, 1.0), &device);
            let residual = Tensor::<B, 3>::random([3, 70, 24], Distribution::Normal(0.0, 1.0), &device);
            let want = (residual.clone() + layer.forward(x.clone())).into_data();
            let got = linear_residual(&layer, x, residual).into_data();
            got.assert_approx_eq::<f32>(&want, burn::tensor::Tolerance::absolute(1e-5));
        }
        check::<Flex>();
        check::<Autodiff<Flex>>();
    }

    /// The activation in the product's epilogue against burn's GELU and QuickGELU after burn's
    /// `Linear`.
    #[test]
    fn activation_epilogue_agrees_with_burns_ops() {
        let device = Default::default();
        let layer = LinearConfig::new(24, 40).init::<Flex>(&device);
        let x = Tensor::<Flex, 2>::random([100, 24], Distribution::Normal(0.0, 2.0), &device);
        let hidden = layer.forward(x.clone());
        let gelu_want = burn::tensor::activation::gelu(hidden.clone()).into_data();
        let quick_want = (hidden.clone() * sigmoid(hidden * 1.702)).into_data();
        let tolerance = burn::tensor::Tolerance::absolute(1e-5);
        linear_activation(&layer, x.clone(), Activation::Gelu).into_data().assert_approx_eq::<f32>(&gelu_want, tolerance);
        linear_activation(&layer, x, Activation::QuickGelu).into_data().assert_approx_eq::<f32>(&quick_want, tolerance);
    }
}
