//! vlp's own CPU kernels, where burn's CPU backend (Flex) was measured to spend the time:
//! GELU ([`gelu`]), layer normalisation ([`layer_norm`]) and the head swap of attention
//! ([`heads`]), forward and backward, and BatchNorm with its running statistics for embedding
//! ([`batch_norm`]). Each is reached from generic model code through [`flex`]'s
//! type test and runs only on Flex, or Autodiff over Flex, with f32 tensors; every other backend
//! and element type (CUDA among them) gets burn's own op, so the GPU path never touches these.
//! Each file's header gives the measurement that justified it.

pub mod batch_norm;
mod flex;
pub mod gelu;
pub mod heads;
pub mod layer_norm;
