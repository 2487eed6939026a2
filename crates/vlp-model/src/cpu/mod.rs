//! vlp's own CPU kernels, where burn's CPU backend (Flex) was measured to spend the time:
//! GELU ([`gelu`]), layer normalisation ([`layer_norm`]) and the head swap of attention
//! ([`heads`]), forward and backward; and for embedding, BatchNorm with its running statistics
//! ([`batch_norm`]), the matrix product of linear layers with their bias ([`gemm`], through
//! [`linear`]), the whole self-attention block ([`self_attention`]) and a ViT's patch embedding
//! ([`patch_embed`]). Each is reached from generic model code through `flex`'s
//! type test and runs only on Flex, or Autodiff over Flex, with f32 tensors; every other backend
//! and element type (CUDA among them) gets burn's own op, so the GPU path never touches these.
//! Each file's header gives the measurement that justified it.

pub mod batch_norm;
pub(crate) mod flex;
pub mod gelu;
pub mod gemm;
pub mod heads;
pub mod layer_norm;
pub mod linear;
pub mod pack;
pub mod patch_embed;
pub mod self_attention;
