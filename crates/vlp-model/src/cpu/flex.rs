//! Reaching burn's CPU backend (Flex) from generic model code, for the ops that have their own
//! kernels in [`super`].

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::FlexTensor;
use std::any::Any;

/// Moves `a` into a `T` when they are the same type: how a generic function reaches the one
/// backend it has a kernel for without making every model generic over an extension trait.
pub(crate) fn cast<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(t.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// Whether `A` and `T` are one type.
pub(crate) fn same_type<A: 'static, T: 'static>() -> bool {
    std::any::TypeId::of::<A>() == std::any::TypeId::of::<T>()
}

/// A float primitive that came from `B` by [`cast`], back into a tensor of `B`.
pub(crate) fn from_flex<B: Backend, const D: usize, T: 'static>(t: T) -> Tensor<B, D> {
    let p = cast::<T, B::FloatTensorPrimitive>(t).unwrap_or_else(|_| unreachable!("cast back to the type it came from"));
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `t` itself when its storage is already its elements in order from offset 0, else a copy that is.
pub(crate) fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// The first `shape.num_elements()` f32 values of a tensor made by [`contiguous`].
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    &t.storage::<f32>()[..t.shape().num_elements()]
}

/// `t` as a contiguous f32 Flex tensor when `B` is Flex itself (inference, no autodiff) and `t`
/// holds f32; `None` for any other backend or element type.
pub(crate) fn flex_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    if !same_type::<B::FloatTensorPrimitive, FlexTensor>() {
        return None;
    }
    match t.into_primitive() {
        TensorPrimitive::Float(p) => {
            let p = cast::<_, FlexTensor>(p).ok()?;
            (p.dtype() == DType::F32).then(|| contiguous(&p))
        }
        TensorPrimitive::QFloat(_) => None,
    }
}

/// An f32 result of `shape` as a tensor of `B`, which [`flex_f32`] found to be Flex.
pub(crate) fn flex_result<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    from_flex(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// Runs `f` on one of rayon's threads when `B` is Flex itself (inference), so that the thread
/// driving a forward pass is one of the pool's and each parallel op starts where it is called,
/// instead of every op being handed to the pool while the calling thread waits: 1.9 % more
/// ViT-B/32 images/s on average over 11 A/B pairs on the 2-core build machine (9 ahead, 1 tie,
/// 1 behind), about 2 % more texts/s, and 22–35 % more queries/s from `vlp serve`
/// (BENCHMARKS.md), whose two workers each drive a forward at once. (A pool thread waiting
/// inside one forward's parallel op may take up the other forward whole, and finish it first:
/// one search can then wait for two, yet p99 measured lower too.) Any other backend runs `f`
/// where it is called (a GPU stream may belong to its thread), as does a pool thread.
pub(crate) fn on_pool<B: Backend, R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if same_type::<B::FloatTensorPrimitive, FlexTensor>() && rayon::current_thread_index().is_none() {
        rayon::scope(|_| f())
    } else {
        f()
    }
}
