//! Mixed precision as `torch.autocast(dtype=torch.bfloat16)` runs it, which is OpenCLIP's
//! `--precision amp_bf16`: inside a [`scope`], the towers' matrix products, convolutions and
//! attention take bf16 inputs and hand back results in the model's own float type (f32), so the
//! parameters, their gradients and the optimizer's state stay f32, and the layer norms, GELU,
//! batch norm, the losses and their softmax over the batch run in f32. Outside a scope every
//! function here is the plain f32 layer.
//!
//! The scope is per thread, as autocast's is: each data-parallel replica sets its own. What runs
//! in bf16 ([`linear`], [`conv2d`], [`matmul`], [`attention`]) is what the towers call for their
//! heavy products; Wukong's token reduction, the token-level loss and the global loss stay f32.
//! Results come back to f32 after each product: on the CPU, whose kernels here read f32, that is
//! required; on a GPU the casts are small elementwise kernels beside the products.

use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::backend::Backend;
use burn::tensor::module;
use burn::tensor::ops::{AttentionModuleOptions, PaddedConvOptions};
use burn::tensor::{Bool, DType, FloatDType, Tensor};
use std::cell::Cell;

/// The float type the towers' products run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 products with f32 parameters, reductions and losses (`amp_bf16`).
    Bf16,
}

impl Precision {
    fn compute(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
        }
    }
}

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// While alive, this thread's products run in `precision`; dropping it restores what was set
/// before.
#[must_use = "the precision holds only while the scope is alive"]
pub struct Scope {
    before: Option<FloatDType>,
}

/// Runs this thread's tower products in `precision` until the returned [`Scope`] is dropped.
pub fn scope(precision: Precision) -> Scope {
    Scope { before: COMPUTE.with(|c| c.replace(precision.compute())) }
}

impl Drop for Scope {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.before));
    }
}

fn compute() -> Option<FloatDType> {
    COMPUTE.with(Cell::get)
}

/// Whether a bf16 [`scope`] is open on this thread.
pub(crate) fn active() -> bool {
    compute().is_some()
}

/// `t` in `dtype`.
fn to<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    t.cast(dtype)
}

/// `t` back in `dtype` (the float type the product's input had).
fn back<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    t.cast(FloatDType::from(dtype))
}

/// `layer.forward(x)`; inside a bf16 scope, from bf16 inputs. `x`: `[..., in]` → `[..., out]`.
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(dt) = compute() else { return crate::cpu::linear::linear(layer, x) };
    let dtype = x.dtype();
    let y = module::linear(to(x, dt), to(layer.weight.val(), dt), layer.bias.as_ref().map(|b| to(b.val(), dt)));
    back(y, dtype)
}

/// `layer.forward(x)`; inside a bf16 scope, from bf16 inputs. `x`: `[batch, in, h, w]`.
/// (A `Same`-padded layer runs in f32: vlp's towers have none.)
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    // the paddings vlp's towers use; burn-nn keeps its `Same` arithmetic to itself, so a layer
    // with it runs as it is
    let (Some(dt), Some((top, left, bottom, right))) = (
        compute(),
        match layer.padding {
            PaddingConfig2d::Valid => Some((0, 0, 0, 0)),
            PaddingConfig2d::Explicit(t, l, b, r) => Some((t, l, b, r)),
            PaddingConfig2d::Same => None,
        },
    ) else {
        return layer.forward(x);
    };
    let options = PaddedConvOptions::asymmetric(layer.stride, [top, left], [bottom, right], layer.dilation, layer.groups);
    let dtype = x.dtype();
    let y = module::conv2d(to(x, dt), to(layer.weight.val(), dt), layer.bias.as_ref().map(|b| to(b.val(), dt)), options);
    back(y, dtype)
}

/// `a.matmul(b)`; inside a bf16 scope, from bf16 inputs.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let Some(dt) = compute() else { return a.matmul(b) };
    let dtype = a.dtype();
    back(to(a, dt).matmul(to(b, dt)), dtype)
}

/// burn's attention op (`[batch, heads, tokens, head_dim]` each); inside a bf16 scope, from bf16
/// queries, keys and values, as autocast runs scaled dot-product attention.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let Some(dt) = compute() else { return module::attention(q, k, v, mask, None, options) };
    let dtype = q.dtype();
    back(module::attention(to(q, dt), to(k, dt), to(v, dt), mask, None, options), dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::LinearInit;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<Flex>;

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<A, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// bf16 keeps 8 bits of mantissa: a product of sums over `k` terms is off by about 2^-8
    /// relative per input, which this bounds generously; the result is f32 and not the f32
    /// result exactly, so the products did run in bf16.
    fn close_not_equal<const D: usize>(mixed: Tensor<A, D>, plain: Tensor<A, D>) {
        assert_eq!(mixed.dtype(), DType::F32);
        let (m, p) = (mixed.into_data(), plain.into_data());
        m.assert_approx_eq::<f32>(&p, Tolerance::absolute(0.1).set_relative(0.05));
        assert_ne!(m.to_vec::<f32>().unwrap(), p.to_vec::<f32>().unwrap());
    }

    #[test]
    fn products_in_a_bf16_scope_are_close_to_f32_and_f32_outside_it() {
        let device = Default::default();
        let lin = LinearInit::torch_default(16).init::<A>(16, 8, &device);
        let conv = Conv2dConfig::new([3, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<A>(&device);
        let (x, img, a, b) = (random([5, 16]), random([2, 3, 9, 9]), random([2, 4, 16]), random([2, 16, 3]));
        let (q, k, v) = (random([2, 2, 5, 8]), random([2, 2, 5, 8]), random([2, 2, 5, 8]));
        let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let plain = (
            lin.forward(x.clone()),
            conv.forward(img.clone()),
            a.clone().matmul(b.clone()),
            module::attention(q.clone(), k.clone(), v.clone(), None, None, opts),
        );
        // outside a scope: the very same values
        assert_eq!(linear(&lin, x.clone()).into_data(), plain.0.clone().into_data());
        assert_eq!(conv2d(&conv, img.clone()).into_data(), plain.1.clone().into_data());
        {
            let _bf16 = scope(Precision::Bf16);
            close_not_equal(linear(&lin, x.clone()), plain.0);
            close_not_equal(conv2d(&conv, img.clone()), plain.1);
            close_not_equal(matmul(a, b), plain.2);
            close_not_equal(attention(q, k, v, None, opts), plain.3);
            let _inner = scope(Precision::F32);
            assert_eq!(linear(&lin, x.clone()).into_data(), lin.forward(x.clone()).into_data());
        }
        // dropped: f32 again
        assert_eq!(linear(&lin, x.clone()).into_data(), lin.forward(x).into_data());
    }

    #[test]
    fn gradients_reach_the_f32_parameters_through_the_casts() {
        let device = Default::default();
        let lin = LinearInit::torch_default(16).init::<A>(16, 8, &device);
        let x = random([5, 16]);
        let plain = lin.forward(x.clone()).sum().backward();
        let mixed = {
            let _bf16 = scope(Precision::Bf16);
            linear(&lin, x).sum().backward()
        };
        let (gp, gm) = (lin.weight.grad(&plain).unwrap(), lin.weight.grad(&mixed).unwrap());
        assert_eq!(gm.dtype(), DType::F32, "the weight's gradient is f32, as the weight");
        gm.into_data().assert_approx_eq::<f32>(&gp.into_data(), Tolerance::absolute(0.05).set_relative(0.02));
    }
}
