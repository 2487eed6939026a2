//! A ViT's patch embedding for embedding on the CPU: the convolution whose stride is its kernel,
//! as the image's patches gathered into rows and one [`super::gemm`] product by the weight read
//! transposed in place, which leaves the result `[batch, patches, width]`, the layout the
//! transformer takes.
//!
//! Measured on the 2-core build machine, ViT-B/32 at batch 32 (`examples/vit_ops.rs`): burn-flex's
//! `conv2d` took 79–107 ms (69–94 GFLOP/s) for the `[1568, 3072] · [3072, 768]` product it
//! amounts to, where the product kernel runs at 135–160 GFLOP/s, and the tower then swapped its
//! `[batch, width, patches]` output into place with another copy.

use super::flex::{flex_f32, flex_result, values};
use super::gemm::{self, Weight};
use super::linear::{flex_parameters, takes_kernel};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorMetadata};
use rayon::prelude::*;

/// `conv(images)` as `[batch, patches, out]` (patches row by row) when `B` is Flex, the tensors
/// f32, no bf16 scope open, the CPU has the kernel and `conv` is a patch embedding (stride equal
/// to the kernel, no padding or dilation, one group); `None` otherwise (the caller runs burn's
/// `conv2d`). `images`: `[batch, channels, height, width]`.
pub(crate) fn flex_patch_embed<B: Backend>(conv: &Conv2d<B>, images: &Tensor<B, 4>) -> Option<Tensor<B, 3>> {
    let [batch, channels, height, width] = images.dims();
    let [kh, kw] = conv.kernel_size;
    let unpadded = matches!(conv.padding, PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0));
    if conv.stride != conv.kernel_size || conv.dilation != [1, 1] || conv.groups != 1 || !unpadded || height < kh || width < kw {
        return None;
    }
    let (gh, gw) = (height / kh, width / kw);
    let rows = batch * gh * gw;
    if !takes_kernel(rows) {
        return None;
    }
    let images = flex_f32(images.clone())?;
    let (weight, bias) = flex_parameters(&conv.weight, &conv.bias)?;
    let [out, in_channels] = [weight.shape()[0], weight.shape()[1]];
    if in_channels != channels {
        return None; // burn's conv2d names the mismatch
    }
    let k = channels * kh * kw;
    let patches = gather(values(&images), [batch, channels, height, width], [kh, kw]);
    let y =
        gemm::matmul(&patches, rows, k, Weight::transposed(&values(&weight)[..out * k], k).owned_by(&weight), bias.as_ref().map(values))?;
    Some(flex_result(y, [batch, gh * gw, out]))
}

/// The patches of `images` (`[batch, channels, height, width]`) as rows `[batch · gh · gw,
/// channels · kh · kw]`, each in the convolution weight's `(channel, y, x)` order.
fn gather(images: &[f32], [batch, channels, height, width]: [usize; 4], [kh, kw]: [usize; 2]) -> Vec<f32> {
    let (gh, gw) = (height / kh, width / kw);
    let k = channels * kh * kw;
    let mut rows = vec![0f32; batch * gh * gw * k];
    rows.par_chunks_mut(gh * gw * k).enumerate().for_each(|(b, rows)| {
        let image = &images[b * channels * height * width..][..channels * height * width];
        for (patch, row) in rows.chunks_exact_mut(k).enumerate() {
            let (py, px) = (patch / gw, patch % gw);
            for c in 0..channels {
                for y in 0..kh {
                    let src = &image[c * height * width + (py * kh + y) * width + px * kw..][..kw];
                    row[(c * kh + y) * kw..][..kw].copy_from_slice(src);
                }
            }
        }
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    /// Against burn's `conv2d`, with and without a bias, on images whose sides leave a remainder.
    #[test]
    fn agrees_with_burns_convolution() {
        if !gemm::available() {
            eprintln!("no AVX2/FMA here: nothing to check");
            return;
        }
        let device = Default::default();
        for (bias, side) in [(false, 32), (true, 35)] {
            let conv = Conv2dConfig::new([3, 24], [4, 4]).with_stride([4, 4]).with_bias(bias).init::<Flex>(&device);
            let images = Tensor::<Flex, 4>::random([2, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
            let got = flex_patch_embed(&conv, &images).expect("the kernel's path");
            let want = conv.forward(images);
            let [b, w, gh, gw] = want.dims();
            let want = want.reshape([b, w, gh * gw]).swap_dims(1, 2);
            got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
        // an overlapping convolution is not a patch embedding
        let conv = Conv2dConfig::new([3, 8], [4, 4]).with_stride([2, 2]).init::<Flex>(&device);
        assert!(flex_patch_embed(&conv, &Tensor::<Flex, 4>::zeros([4, 3, 32, 32], &device)).is_none());
    }
}
