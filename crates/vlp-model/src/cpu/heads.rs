//! Moving attention's activations between token-major `[batch, tokens, heads, head_dim]` and
//! head-major `[batch, heads, tokens, head_dim]`, with a CPU kernel for training.
//!
//! burn's `swap_dims` is a free view, but the CPU backend pays for it later: reshaping a
//! non-contiguous tensor copies it one element at a time through a generic strided iterator, and
//! backward reshapes every q, k and v gradient that way (with the forward merge of the heads, about
//! a tenth of the `tiny.toml` training step). Here, on Autodiff over Flex with f32 tensors, the swap
//! is one copy of whole `head_dim` rows into a contiguous tensor, forward and backward, and on
//! Flex itself (inference) the same copy; any other backend gets `swap_dims`.

use super::flex::{cast, contiguous, from_flex, same_type};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

/// `[batch, a, b, d]` → `[batch, b, a, d]`: axes 1 and 2 swapped (tokens and heads, either way).
pub fn swap_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    match x.into_primitive() {
        TensorPrimitive::Float(p) if p.dtype() == DType::F32 && same_type::<FloatTensor<B>, FloatTensor<Autodiff<Flex>>>() => {
            let p = cast::<_, FloatTensor<Autodiff<Flex>>>(p).unwrap_or_else(|_| unreachable!("same type"));
            from_flex(autodiff_swap_heads(p))
        }
        // inference on Flex: the same copy (a swapped view would be copied later, one element at
        // a time through the strided iterator, by the reshape after attention: about a tenth of
        // a ViT-B/32 embedding batch)
        TensorPrimitive::Float(p) if p.dtype() == DType::F32 && same_type::<FloatTensor<B>, FlexTensor>() => {
            let p = cast::<_, FlexTensor>(p).unwrap_or_else(|_| unreachable!("same type"));
            from_flex(flex_swap_heads(&p))
        }
        p => Tensor::from_primitive(p).swap_dims(1, 2),
    }
}

fn autodiff_swap_heads(x: FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>> {
    #[derive(Debug)]
    struct SwapHeadsBackward;

    impl Backward<Flex, 1> for SwapHeadsBackward {
        type State = ();

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            unary::<Flex, _>(ops.parents, ops.node, grads, |grad| flex_swap_heads(&grad));
        }
    }

    SwapHeadsBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateless(flex_swap_heads(&x.primitive))
}

/// The swap as one contiguous f32 tensor, a batch row per task. It reads `x` through its strides
/// (backward hands it transposed views), `d` floats at a time where they are adjacent.
fn flex_swap_heads(x: &FlexTensor) -> FlexTensor {
    let shape = x.shape();
    let [batch, a, b, d] = [shape[0], shape[1], shape[2], shape[3]];
    let x = if x.layout().has_positive_strides() { x.clone() } else { contiguous(x) };
    let strides: Vec<usize> = x.layout().strides().iter().map(|&s| s as usize).collect();
    let [s0, s1, s2, s3] = [strides[0], strides[1], strides[2], strides[3]];
    let (xs, offset) = (x.storage::<f32>(), x.layout().start_offset());
    let mut out = vec![0f32; batch * a * b * d];
    let row = (a * b * d).max(1);
    out.par_chunks_mut(row).enumerate().for_each(|(n, out)| {
        for (j, out) in out.chunks_mut(a * d).enumerate() {
            for (i, out) in out.chunks_mut(d).enumerate() {
                let start = offset + n * s0 + i * s1 + j * s2;
                if s3 == 1 {
                    out.copy_from_slice(&xs[start..start + d]);
                } else {
                    out.iter_mut().enumerate().for_each(|(k, o)| *o = xs[start + k * s3]);
                }
            }
        }
    });
    FlexTensor::from_data(TensorData::new(out, Shape::new([batch, b, a, d])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn the_kernel_swaps_like_swap_dims_forward_and_backward() {
        type B = Autodiff<Flex>;
        // the kernel, not swap_dims, is what this compares
        assert!(same_type::<FloatTensor<B>, FloatTensor<Autodiff<Flex>>>());
        let values: Vec<f32> = (0..3 * 4 * 5 * 6).map(|i| i as f32).collect();
        let device = Default::default();
        // a transposed view as input: the kernel must read it in logical order
        let make = || Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [3, 5, 4, 6]), &device).swap_dims(1, 2).require_grad();
        let (ours, theirs) = (make(), make());
        let (y_ours, y_theirs) = (swap_heads(ours.clone()), theirs.clone().swap_dims(1, 2));
        assert_eq!(y_ours.dims(), [3, 5, 4, 6]);
        y_ours.to_data().assert_eq(&y_theirs.to_data(), true);
        let weights =
            Tensor::<B, 4>::from_data(TensorData::new((0..360).map(|i| (i % 11) as f32).collect::<Vec<_>>(), [3, 5, 4, 6]), &device);
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_theirs = (y_theirs * weights).sum().backward();
        ours.grad(&g_ours).unwrap().to_data().assert_approx_eq::<f32>(&theirs.grad(&g_theirs).unwrap().to_data(), Tolerance::absolute(0.0));
        // a view whose last axis is not adjacent in memory
        let odd = Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [3, 4, 6, 5]), &device).swap_dims(2, 3);
        swap_heads(odd.clone()).to_data().assert_eq(&odd.swap_dims(1, 2).to_data(), true);
        // plain Flex (inference) takes the same copy, from a contiguous tensor or a view
        let plain = Tensor::<Flex, 4>::from_data(TensorData::new(values.clone(), [3, 4, 5, 6]), &device);
        swap_heads(plain.clone()).to_data().assert_eq(&plain.clone().swap_dims(1, 2).to_data(), true);
        let view = plain.swap_dims(2, 3);
        swap_heads(view.clone()).to_data().assert_eq(&view.swap_dims(1, 2).to_data(), true);
    }
}
