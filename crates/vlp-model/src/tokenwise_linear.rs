//! A linear layer applied to every token of a sequence as one matrix product.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `x`: `[batch, tokens, in]` → `[batch, tokens, out]`.
///
/// burn's `Linear` on a rank-3 input multiplies each batch row by the weight separately: the
/// CPU backend repacks the weight once per row, and the weight's gradient is built as
/// `[batch, in, out]` and then summed. Folding the batch into the rows first makes forward and
/// both gradients one matrix product each (on the 2-core `tiny.toml` step this was most of the
/// time spent in matmul).
pub fn per_token<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, w] = x.dims();
    let y = crate::autocast::linear(linear, x.reshape([b * n, w]));
    let out = y.dims()[1];
    y.reshape([b, n, out])
}
