//! The interface between the host side and a device: what a device copy of the vectors must
//! do (append, compact, select) and the shapes of a selection. Implemented by the CUDA device
//! (`cuda.rs`) and by a CPU stand-in with the same numerics (`cpu.rs`), which the tests of
//! everything above this interface run on machines without a GPU.

/// Element type of the device copy: the precision of the shard's in-memory copies
/// (`vecshard_engine::shard::vectors::Precision`), so that the device scores what the CPU
/// exact plan scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    /// Unit vectors of cosine collections: f16 copies, f16 queries, f32 accumulation.
    F16,
    F32,
}

impl Element {
    pub fn bytes(self) -> usize {
        match self {
            Element::F16 => 2,
            Element::F32 => 4,
        }
    }
}

/// What a selection ranks by (higher is better): the inner product (cosine on unit vectors,
/// dot), or the negated squared Euclidean distance (l2; the square root is monotone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Dot,
    NegL2Squared,
}

/// Slots a query may return: every slot, or those whose bit is set (`words[slot / 32] >>
/// (slot % 32) & 1`; slots past the words are not allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mask {
    All,
    Bits(Vec<u32>),
}

impl Mask {
    pub fn allows(&self, slot: u32) -> bool {
        match self {
            Mask::All => true,
            Mask::Bits(words) => words
                .get(slot as usize / 32)
                .is_some_and(|w| w >> (slot % 32) & 1 == 1),
        }
    }

    /// A mask of the given slots (any order).
    pub fn of_slots(slots: impl Iterator<Item = u32>, slot_count: usize) -> Mask {
        let mut words = vec![0u32; slot_count.div_ceil(32)];
        for s in slots {
            if let Some(w) = words.get_mut(s as usize / 32) {
                *w |= 1 << (s % 32);
            }
        }
        Mask::Bits(words)
    }

    pub fn bytes(&self) -> usize {
        match self {
            Mask::All => 0,
            Mask::Bits(w) => w.len() * 4,
        }
    }
}

/// One kernel launch's worth of queries.
#[derive(Debug)]
pub struct SelectBatch<'a> {
    /// `queries.len() / dimension` queries, f32 (rounded to the element type on the device).
    pub queries: &'a [f32],
    /// Distinct masks of the batch...
    pub masks: &'a [&'a Mask],
    /// ...and which one each query uses.
    pub mask_of_query: &'a [u32],
    /// Candidates kept per segment (at most `MAX_PER_SEGMENT`).
    pub per_segment: usize,
    pub key: KeyKind,
}

/// The best allowed slots of one segment for one query, best first (key descending, then
/// slot ascending), and how many allowed slots the segment held: when that is more than
/// were kept, every slot left out has a key no better than the last one kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentBest {
    pub found: Vec<(f32, u32)>,
    pub allowed: u32,
}

impl SegmentBest {
    pub fn truncated(&self) -> bool {
        self.allowed as usize > self.found.len()
    }
}

/// The most candidates one segment keeps (the selection kernel's per-thread lists).
pub const MAX_PER_SEGMENT: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("GPU memory: {0}")]
    OutOfMemory(String),
    #[error("GPU: {0}")]
    Device(String),
}

/// A device copy of a shard's vectors: slot `i` is the `i`-th vector appended (after
/// compactions, renumbered as the shard renumbers).
pub trait ExactKernel: Send {
    /// Where the copy lives, for logs (`NVIDIA H200, 139 GiB`, `cpu stand-in`).
    fn describe(&self) -> String;
    fn dimension(&self) -> usize;
    fn element(&self) -> Element;
    /// Vectors held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of device memory in use (vectors, norms, work buffers).
    fn memory_bytes(&self) -> u64;
    /// Appends `vectors.len() / dimension` vectors as the next slots.
    fn append(&mut self, vectors: &[f32]) -> Result<(), KernelError>;
    /// Keeps only the vectors of `keep` (increasing slots), renumbered 0, 1, … in that order.
    fn compact(&mut self, keep: &[u32]) -> Result<(), KernelError>;
    /// For each query of the batch, for each segment of the slots, the best allowed slots.
    /// Returns `queries × segment_count()` entries, query-major.
    fn select(&mut self, batch: &SelectBatch<'_>) -> Result<Vec<SegmentBest>, KernelError>;
    /// Segments the slots are split into for a batch of `queries` queries.
    fn segment_count(&self, queries: usize) -> usize;
}
