//! In-memory copies of the shard's vectors by slot: what rescoring, exact scans and the
//! indexer read. Pure data structure: no I/O. The durable copy of every vector, at the
//! precision the client sent, stays in storage (`Get` and `with_vector` read it from there).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::shard::f16_kernels::prefetch;
use crate::shard::scoring;
use vecshard_core::model::{Metric, Quantization};

/// Element type of the in-memory copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Half the memory of f32, for unit vectors only (cosine collections): each component
    /// is then below 1 in magnitude, rounds with a relative error of at most 2^-11, and a
    /// score moves by at most |q|·|v|·2^-11 ≈ 4.9e-4 (Cauchy–Schwarz), far less than the
    /// i8/b1 ranking error that rescoring corrects. On the 116k × 384 benchmark it saves
    /// 86 MiB at equal recall. Dot and L2 vectors have no bounded magnitude (f16 overflows
    /// past 65504), so they keep f32 copies.
    F16,
}

impl Precision {
    /// f16 for quantized cosine collections; f32 when the graph itself is f32 (exact scores
    /// were asked for) or the vectors are not unit length.
    pub fn for_collection(metric: Metric, quantization: Quantization) -> Precision {
        match (metric, quantization) {
            (Metric::Cosine, Quantization::F16 | Quantization::I8 | Quantization::B1) => {
                Precision::F16
            }
            _ => Precision::F32,
        }
    }
}

/// Bound on how far a score from f16 copies of unit vectors is from the f32 score: the
/// rounding bound 2^-11 (see `Precision::F16`) with a 4× margin for the f32 accumulation.
const F16_UNIT_SCORE_ERROR: f32 = 2e-3;

/// Vectors in fixed-size chunks: growing never copies or doubles (a single `Vec` would
/// briefly hold two copies of every vector while it reallocates, and its spare capacity
/// would count against the memory budget).
struct Chunks<T> {
    dimension: usize,
    chunks: Vec<Vec<T>>,
}

impl<T: Copy> Chunks<T> {
    const CHUNK_VECTORS: usize = 4096;

    fn new(dimension: usize) -> Self {
        Chunks {
            dimension,
            chunks: Vec::new(),
        }
    }

    fn get(&self, slot: u32) -> &[T] {
        let (chunk, offset) = (
            slot as usize / Self::CHUNK_VECTORS,
            slot as usize % Self::CHUNK_VECTORS,
        );
        &self.chunks[chunk][offset * self.dimension..(offset + 1) * self.dimension]
    }

    /// Moves the vectors of `slots` (increasing) to slots 0, 1, … in place and drops the
    /// rest: each vector moves to a slot no later than its own, so nothing is overwritten
    /// before it is read, and no second copy of the arena is ever held.
    fn compact(&mut self, slots: impl Iterator<Item = u32>) {
        let d = self.dimension;
        let mut kept = 0usize;
        let mut vector: Vec<T> = Vec::with_capacity(d);
        for slot in slots {
            debug_assert!(slot as usize >= kept, "slots must increase");
            if slot as usize != kept {
                vector.clear();
                vector.extend_from_slice(self.get(slot));
                let (chunk, offset) = (kept / Self::CHUNK_VECTORS, kept % Self::CHUNK_VECTORS);
                self.chunks[chunk][offset * d..(offset + 1) * d].copy_from_slice(&vector);
            }
            kept += 1;
        }
        let (full, rest) = (kept / Self::CHUNK_VECTORS, kept % Self::CHUNK_VECTORS);
        self.chunks.truncate(full + usize::from(rest > 0));
        if rest > 0 {
            self.chunks[full].truncate(rest * d);
        }
    }

    fn push(&mut self, vector: impl Iterator<Item = T>) {
        let full = self
            .chunks
            .last()
            .is_none_or(|c| c.len() == Self::CHUNK_VECTORS * self.dimension);
        if full {
            self.chunks
                .push(Vec::with_capacity(Self::CHUNK_VECTORS * self.dimension));
        }
        self.chunks
            .last_mut()
            .expect("a chunk exists")
            .extend(vector);
    }
}

pub struct VectorArena(Arena);

enum Arena {
    F32(Chunks<f32>),
    F16(Chunks<f16>),
}

impl VectorArena {
    pub fn new(dimension: usize, precision: Precision) -> Self {
        VectorArena(match precision {
            Precision::F32 => Arena::F32(Chunks::new(dimension)),
            Precision::F16 => Arena::F16(Chunks::new(dimension)),
        })
    }

    /// Stores the vector of the next slot.
    pub fn push(&mut self, vector: &[f32]) {
        match &mut self.0 {
            Arena::F32(c) => c.push(vector.iter().copied()),
            Arena::F16(c) => c.push(vector.iter().map(|x| f16::from_f32(*x))),
        }
    }

    /// Keeps only the vectors of `slots` (increasing), renumbered 0, 1, … in that order.
    pub fn compact(&mut self, slots: impl Iterator<Item = u32>) {
        match &mut self.0 {
            Arena::F32(c) => c.compact(slots),
            Arena::F16(c) => c.compact(slots),
        }
    }

    /// The score users see for `query` against the vector in `slot` (see `scoring::score`).
    pub fn score(&self, metric: Metric, query: &[f32], slot: u32) -> f32 {
        match &self.0 {
            Arena::F32(c) => scoring::score(metric, query, c.get(slot)),
            Arena::F16(c) => scoring::score_f16(metric, query, c.get(slot)),
        }
    }

    /// `score` for every slot of `slots`, in order, loading the vectors a few slots ahead
    /// (`f16_kernels::prefetch`): what exact scans use.
    pub fn score_all(&self, metric: Metric, query: &[f32], slots: &[u32]) -> Vec<(u32, f32)> {
        const AHEAD: usize = 6;
        let prefetch = |slot: u32| match &self.0 {
            Arena::F32(c) => prefetch(c.get(slot)),
            Arena::F16(c) => prefetch(c.get(slot)),
        };
        slots.iter().take(AHEAD).for_each(|s| prefetch(*s));
        slots
            .iter()
            .enumerate()
            .map(|(i, &slot)| {
                if let Some(next) = slots.get(i + AHEAD) {
                    prefetch(*next);
                }
                (slot, self.score(metric, query, slot))
            })
            .collect()
    }

    /// How far `score` may be from the score of the vector as stored: `None` for exact
    /// (f32) copies.
    pub fn score_error(&self) -> Option<f32> {
        match &self.0 {
            Arena::F32(_) => None,
            Arena::F16(_) => Some(F16_UNIT_SCORE_ERROR),
        }
    }

    /// The vector in `slot`, as f32.
    pub fn to_f32(&self, slot: u32) -> Vec<f32> {
        match &self.0 {
            Arena::F32(c) => c.get(slot).to_vec(),
            Arena::F16(c) => c.get(slot).to_f32_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_quantized_cosine_collections_keep_f16_copies() {
        use Precision::*;
        assert_eq!(
            Precision::for_collection(Metric::Cosine, Quantization::I8),
            F16
        );
        assert_eq!(
            Precision::for_collection(Metric::Cosine, Quantization::F32),
            F32
        );
        assert_eq!(
            Precision::for_collection(Metric::Dot, Quantization::I8),
            F32
        );
        assert_eq!(Precision::for_collection(Metric::L2, Quantization::B1), F32);
    }

    #[test]
    fn vectors_stay_addressable_across_chunks_at_both_precisions() {
        for precision in [Precision::F32, Precision::F16] {
            let mut arena = VectorArena::new(3, precision);
            let n = Chunks::<f32>::CHUNK_VECTORS as u32 * 2 + 5;
            for i in 0..n {
                arena.push(&[(i % 1000) as f32, 0.5, -1.0]);
            }
            for i in [0, 4095, 4096, n - 1] {
                assert_eq!(
                    arena.to_f32(i),
                    vec![(i % 1000) as f32, 0.5, -1.0],
                    "{precision:?}"
                );
            }
        }
    }

    #[test]
    fn compaction_in_place_keeps_the_chosen_vectors_in_order_across_chunks() {
        let n = Chunks::<f32>::CHUNK_VECTORS as u32 * 2 + 7;
        let mut arena = VectorArena::new(2, Precision::F32);
        for i in 0..n {
            arena.push(&[i as f32, -(i as f32)]);
        }
        let keep: Vec<u32> = (0..n).filter(|i| i % 3 != 1).collect();
        arena.compact(keep.iter().copied());
        for (slot, old) in keep.iter().enumerate() {
            assert_eq!(arena.to_f32(slot as u32), vec![*old as f32, -(*old as f32)]);
        }
        // Room for more, numbered after the kept ones.
        arena.push(&[0.5, 0.5]);
        assert_eq!(arena.to_f32(keep.len() as u32), vec![0.5, 0.5]);
    }

    #[test]
    fn f16_copies_of_unit_vectors_score_within_the_rounding_bound() {
        let unit = |seed: u32| {
            let mut v: Vec<f32> = (0..384)
                .map(|d| ((seed * 7919 + d * 104_729) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            vecshard_core::model::normalize(&mut v);
            v
        };
        let query = unit(1);
        let mut exact = VectorArena::new(384, Precision::F32);
        let mut half = VectorArena::new(384, Precision::F16);
        for seed in 2..50 {
            exact.push(&unit(seed));
            half.push(&unit(seed));
        }
        let bound = half.score_error().expect("f16 copies are not exact");
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            for slot in 0..48 {
                let (a, b) = (
                    exact.score(metric, &query, slot),
                    half.score(metric, &query, slot),
                );
                assert!(
                    (a - b).abs() <= bound / 4.0,
                    "{metric:?} slot {slot}: {a} vs {b}"
                );
            }
        }
    }
}
