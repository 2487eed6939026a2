//! The right operand of [`super::gemm`] packed the way its kernel reads it, and the packed
//! weights kept between products.
//!
//! Packing reads all of a weight and writes all of it again: a ViT-B/32 block packs 28 MB of
//! weights, 2.7 % of an image batch in perf on the 2-core build machine, for values that do not
//! change from one batch to the next when a model embeds. Once [`keep_packed_weights`] is
//! called, a weight whose [`Weight::owner`] is given is packed once and its panels reused,
//! least recently used dropped first past the limit. An entry holds the owning tensor's storage:
//! it stays allocated, and burn-flex copies shared storage before writing to it, so the values
//! behind a kept key cannot change. Once nothing but the kept entries holds it (the model was
//! dropped), they go at the next insert.

use super::gemm::{Weight, NR};
use burn::tensor::Bytes;
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

/// One row of a packed panel of `W`: [`NR`] floats on a cache line of their own, so that the
/// kernel's two 8-lane loads never straddle two lines. (`Vec<f32>` promises 4-byte alignment;
/// on the build machine glibc's large blocks happened to be aligned well enough that the two
/// layouts measured the same, within noise.)
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line(pub(super) [f32; NR]);

/// Panels one packing task takes: it sweeps W's rows in order, copying `GROUP · NR` adjacent
/// values of each (a panel at a time, 16 values from each of `k` rows `stride` apart, packed
/// the MLP's `[768, 3072]` weight in 2.8–3.7 ms; this way, in 1.3–1.8).
const GROUP: usize = 8;

/// `w` packed for a product of depth `k`: the kept panels when [`keep_packed_weights`] is on and
/// `w` has an owner, else packed now (in parallel, or on the calling thread where `parallel` is
/// false).
pub(super) fn packed(w: &Weight, k: usize, parallel: bool) -> Arc<Vec<Line>> {
    let Some(owner) = w.owner else { return Arc::new(pack_weight(w, k, parallel)) };
    let key = Key::of(w, k);
    if let Some(panels) = KEPT.lock().expect("kept panels").get(&key) {
        return panels;
    }
    let panels = Arc::new(pack_weight(w, k, parallel));
    KEPT.lock().expect("kept panels").insert(key, &panels, owner);
    panels
}

/// Keeps packed weights between products from now on, up to `bytes` of them (the largest limit
/// asked for holds; 0 asks for nothing). For a process that embeds with fixed weights: the
/// commands that load an [`Encoder`](../../../vlp_embed/checkpoint/struct.Encoder.html) turn it
/// on, training never does (its weights change every step).
pub fn keep_packed_weights(bytes: usize) {
    let mut kept = KEPT.lock().expect("kept panels");
    kept.limit = kept.limit.max(bytes);
}

/// The bytes of packed weights kept now.
pub fn kept_bytes() -> usize {
    KEPT.lock().expect("kept panels").bytes
}

static KEPT: Mutex<Kept> = Mutex::new(Kept { limit: 0, bytes: 0, clock: 0, entries: Vec::new() });

/// What identifies a packed weight: where its values lie and which of them it takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    address: usize,
    len: usize,
    stride: usize,
    cols: (usize, usize),
    transposed: bool,
    k: usize,
}

impl Key {
    fn of(w: &Weight, k: usize) -> Key {
        Key {
            address: w.values.as_ptr() as usize,
            len: w.values.len(),
            stride: w.stride,
            cols: (w.cols.start, w.cols.end),
            transposed: w.transposed,
            k,
        }
    }
}

struct Entry {
    key: Key,
    panels: Arc<Vec<Line>>,
    /// The owning tensor's storage: keeps the values at `key.address` allocated and unchanged
    /// while the entry lives.
    storage: Arc<Bytes>,
    used: u64,
}

/// The kept panels, in a list: a model has a few hundred weights at most, and one lookup per
/// product of millions of multiply-adds.
struct Kept {
    limit: usize,
    bytes: usize,
    clock: u64,
    entries: Vec<Entry>,
}

impl Kept {
    fn get(&mut self, key: &Key) -> Option<Arc<Vec<Line>>> {
        self.clock += 1;
        let entry = self.entries.iter_mut().find(|e| e.key == *key)?;
        entry.used = self.clock;
        Some(entry.panels.clone())
    }

    /// Keeps `panels` when they fit under the limit, dropping the least recently used first.
    /// Only for an owner whose storage something else holds too (the model's parameter): a
    /// unique one is a copy made for this product, which no later product will find.
    fn insert(&mut self, key: Key, panels: &Arc<Vec<Line>>, owner: &FlexTensor) {
        let size = std::mem::size_of_val(panels.as_slice());
        if size > self.limit || owner.is_unique() || self.entries.iter().any(|e| e.key == key) {
            return;
        }
        self.drop_orphans();
        while self.bytes + size > self.limit {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used).expect("bytes > 0 means entries");
            let gone = self.entries.swap_remove(oldest);
            self.bytes -= std::mem::size_of_val(gone.panels.as_slice());
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.push(Entry { key, panels: panels.clone(), storage: owner.data_arc(), used: self.clock });
    }

    /// Drops the entries whose storage only they still hold (one weight may be kept under
    /// several keys: column ranges, depths): their model is gone or their parameter was
    /// replaced, so no product will find their keys again, and they would keep its weights
    /// allocated beside the panels, uncounted, until evicted (a command that embeds with a
    /// large model and then a small one would hold most of the first to the end).
    fn drop_orphans(&mut self) {
        let mut holders: HashMap<*const Bytes, usize> = HashMap::new();
        for e in &self.entries {
            *holders.entry(Arc::as_ptr(&e.storage)).or_default() += 1;
        }
        let bytes = &mut self.bytes;
        self.entries.retain(|e| {
            let held_elsewhere = Arc::strong_count(&e.storage) > holders[&Arc::as_ptr(&e.storage)];
            if !held_elsewhere {
                *bytes -= std::mem::size_of_val(e.panels.as_slice());
            }
            held_elsewhere
        });
    }
}

/// `w` as panels of [`NR`] columns, each `k` lines (zeros past the last column); the packing
/// tasks run in parallel, or on the calling thread where `parallel` is false.
///
/// The buffer is not zeroed first: each task writes every line of its panels once. (Zeroing it
/// on the calling thread while the pool waited, and copying each line through `memmove`, were
/// 3.6 % of a ViT-B/32 image batch in perf, more than the packing itself.)
pub(super) fn pack_weight(w: &Weight, k: usize, parallel: bool) -> Vec<Line> {
    let len = w.cols.len().div_ceil(NR) * k;
    let mut packed: Vec<Line> = Vec::with_capacity(len);
    if len == 0 {
        return packed;
    }
    let lines = &mut packed.spare_capacity_mut()[..len];
    match parallel {
        true => lines.par_chunks_mut(k * GROUP).enumerate().for_each(|(g, panels)| pack_panels(w, k, g * GROUP, panels)),
        false => lines.chunks_mut(k * GROUP).enumerate().for_each(|(g, panels)| pack_panels(w, k, g * GROUP, panels)),
    }
    // SAFETY: the chunks cover all `len` lines and `pack_panels` wrote each of them
    unsafe { packed.set_len(len) };
    packed
}

/// Panels `first..` of `w` (as many as `panels` holds, `k` lines each; panel `j` holds columns
/// `16j..16j + 16` of `w.cols`, zeros past its end): every line of `panels` is written.
fn pack_panels(w: &Weight, k: usize, first: usize, panels: &mut [MaybeUninit<Line>]) {
    let c0 = w.cols.start + first * NR;
    let count = panels.len() / k;
    // columns of W in each of these panels (the last panel of W may be narrower)
    let width = |j: usize| (w.cols.end - c0 - j * NR).min(NR);
    if w.transposed {
        // each column of W is a row of the stored Wᵀ: a line gathers one value from each of
        // `width` rows
        for j in 0..count {
            let columns: Vec<&[f32]> = (0..width(j)).map(|c| &w.values[(c0 + j * NR + c) * w.stride..][..k]).collect();
            for (p, line) in panels[j * k..(j + 1) * k].iter_mut().enumerate() {
                let mut values = [0.0; NR];
                for (v, column) in values.iter_mut().zip(&columns) {
                    *v = column[p];
                }
                line.write(Line(values));
            }
        }
        return;
    }
    for p in 0..k {
        let row = &w.values[p * w.stride + c0..];
        for j in 0..count {
            let values = match row.get(j * NR..j * NR + NR) {
                Some(full) if width(j) == NR => full.try_into().expect("NR values"),
                _ => {
                    let mut values = [0.0; NR];
                    values[..width(j)].copy_from_slice(&row[j * NR..j * NR + width(j)]);
                    values
                }
            };
            panels[j * k + p].write(Line(values));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn weight(k: usize, n: usize, seed: usize) -> FlexTensor {
        let values: Vec<f32> = (0..k * n).map(|i| ((i * 7 + seed) % 13) as f32 - 6.0).collect();
        FlexTensor::from_data(TensorData::new(values, [k, n]))
    }

    fn lines(panels: &[Line]) -> Vec<[f32; NR]> {
        panels.iter().map(|l| l.0).collect()
    }

    #[test]
    fn a_parameters_panels_are_packed_once_and_a_copys_never_kept() {
        keep_packed_weights(1 << 20);
        let (k, n) = (24, 40);
        let w = weight(k, n, 1);
        let parameter = w.clone(); // the model's handle: the storage is shared
        let values = &w.storage::<f32>()[..k * n];
        let owned = Weight::whole(values, n).owned_by(&w);
        let first = packed(&owned, k, true);
        assert!(Arc::ptr_eq(&first, &packed(&owned, k, true)), "the second product finds the kept panels");
        assert_eq!(lines(&first), lines(&pack_weight(&Weight::whole(values, n), k, true)));
        // another depth or column range of the same values is another key
        assert!(!Arc::ptr_eq(&first, &packed(&Weight { cols: 16..40, ..owned.clone() }, k, true)));
        drop(parameter);
        // a tensor nothing else holds (a copy made for one product) is packed afresh each time
        let copy = weight(k, n, 2);
        let values = &copy.storage::<f32>()[..k * n];
        let owned = Weight::whole(values, n).owned_by(&copy);
        assert!(!Arc::ptr_eq(&packed(&owned, k, false), &packed(&owned, k, false)));
    }

    #[test]
    fn past_the_limit_the_least_recently_used_goes_first() {
        let panels = |cols: usize| Arc::new(vec![Line([0.0; NR]); cols]);
        let size = std::mem::size_of::<Line>() * 4;
        let mut kept = Kept { limit: 2 * size, bytes: 0, clock: 0, entries: Vec::new() };
        let owner = weight(2, 2, 0);
        let _shared = owner.clone();
        let key = |address: usize| Key { address, len: 4, stride: 2, cols: (0, 2), transposed: false, k: 2 };
        kept.insert(key(1), &panels(4), &owner);
        kept.insert(key(2), &panels(4), &owner);
        assert!(kept.get(&key(1)).is_some());
        kept.insert(key(3), &panels(4), &owner);
        assert!(kept.get(&key(2)).is_none(), "2 was used least recently");
        assert!(kept.get(&key(1)).is_some() && kept.get(&key(3)).is_some());
        assert_eq!(kept.bytes, 2 * size);
        // one larger than the whole limit is not kept, and evicts nothing
        kept.insert(key(4), &panels(12), &owner);
        assert!(kept.get(&key(4)).is_none() && kept.get(&key(1)).is_some());
    }

    #[test]
    fn a_dropped_models_panels_go_at_the_next_insert() {
        let panels = |cols: usize| Arc::new(vec![Line([0.0; NR]); cols]);
        let size = std::mem::size_of::<Line>() * 4;
        let mut kept = Kept { limit: 4 * size, bytes: 0, clock: 0, entries: Vec::new() };
        let key = |address: usize| Key { address, len: 4, stride: 2, cols: (0, 2), transposed: false, k: 2 };
        let (first, second) = (weight(2, 2, 0), weight(2, 2, 1));
        let first_model = first.clone();
        let _second_model = second.clone();
        // one weight under two keys (two column ranges): the entries share its storage
        kept.insert(key(1), &panels(4), &first);
        kept.insert(key(2), &panels(4), &first);
        drop(first);
        kept.insert(key(3), &panels(4), &second);
        assert!(kept.get(&key(1)).is_some() && kept.get(&key(2)).is_some(), "kept while the model holds the weight");
        drop(first_model);
        kept.insert(key(4), &panels(4), &second);
        assert!(kept.get(&key(1)).is_none() && kept.get(&key(2)).is_none(), "the dropped model's entries are gone");
        assert!(kept.get(&key(3)).is_some() && kept.get(&key(4)).is_some());
        assert_eq!((kept.entries.len(), kept.bytes), (2, 2 * size));
    }
}
