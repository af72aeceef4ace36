//! A CPU stand-in for the device: the same interface and the same numerics as `cuda.rs`
//! (vectors and queries rounded to the element type, f32 sums, segments of slots, the best
//! candidates of each segment in the same order), so that everything above the kernel
//! interface (masks, batching, candidate merge, the shard's mirroring) is tested on machines
//! without a GPU. Not a search path: a real CPU scan lives in the engine.

use half::f16;

use crate::kernel::{Element, ExactKernel, KernelError, KeyKind, Mask, SegmentBest, SelectBatch};

pub struct CpuStandIn {
    dimension: usize,
    element: Element,
    /// Vectors as the device would hold them (f16-rounded for `Element::F16`), as f32.
    vectors: Vec<f32>,
    /// Squared norms, from the f32 vectors (as the device's).
    norms: Vec<f32>,
    segment_len: usize,
    /// Fails the next call with this error (tests of the fallback paths).
    fail_next: Option<KernelError>,
}

impl CpuStandIn {
    pub fn new(dimension: usize, element: Element, segment_len: usize) -> Self {
        CpuStandIn {
            dimension,
            element,
            vectors: Vec::new(),
            norms: Vec::new(),
            segment_len: segment_len.max(1),
            fail_next: None,
        }
    }

    /// The next append, compaction or selection fails with `error`.
    pub fn fail_next(&mut self, error: KernelError) {
        self.fail_next = Some(error);
    }

    fn round(&self, x: f32) -> f32 {
        match self.element {
            Element::F16 => f16::from_f32(x).to_f32(),
            Element::F32 => x,
        }
    }

    fn check(&mut self) -> Result<(), KernelError> {
        self.fail_next.take().map_or(Ok(()), Err)
    }
}

impl ExactKernel for CpuStandIn {
    fn describe(&self) -> String {
        "cpu stand-in".into()
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn element(&self) -> Element {
        self.element
    }

    fn len(&self) -> usize {
        self.norms.len()
    }

    fn memory_bytes(&self) -> u64 {
        (self.len() * (self.dimension * self.element.bytes() + 4)) as u64
    }

    fn append(&mut self, vectors: &[f32]) -> Result<(), KernelError> {
        self.check()?;
        for v in vectors.chunks_exact(self.dimension) {
            self.norms.push(v.iter().map(|x| x * x).sum());
            let rounded: Vec<f32> = v.iter().map(|x| self.round(*x)).collect();
            self.vectors.extend(rounded);
        }
        Ok(())
    }

    fn compact(&mut self, keep: &[u32]) -> Result<(), KernelError> {
        self.check()?;
        let d = self.dimension;
        let mut vectors = Vec::with_capacity(keep.len() * d);
        let mut norms = Vec::with_capacity(keep.len());
        for &s in keep {
            let s = s as usize;
            vectors.extend_from_slice(&self.vectors[s * d..(s + 1) * d]);
            norms.push(self.norms[s]);
        }
        self.vectors = vectors;
        self.norms = norms;
        Ok(())
    }

    fn segment_count(&self, _queries: usize) -> usize {
        self.len().div_ceil(self.segment_len).max(1)
    }

    fn select(&mut self, batch: &SelectBatch<'_>) -> Result<Vec<SegmentBest>, KernelError> {
        self.check()?;
        let d = self.dimension;
        let segments = self.segment_count(batch.queries.len() / d);
        let mut out = Vec::with_capacity(batch.mask_of_query.len() * segments);
        for (q, query) in batch.queries.chunks_exact(d).enumerate() {
            let query: Vec<f32> = query.iter().map(|x| self.round(*x)).collect();
            let query_norm: f32 = query.iter().map(|x| x * x).sum();
            let mask: &Mask = batch.masks[batch.mask_of_query[q] as usize];
            for seg in 0..segments {
                let start = seg * self.segment_len;
                let end = (start + self.segment_len).min(self.len());
                let mut keyed: Vec<(f32, u32)> = (start..end)
                    .filter(|s| mask.allows(*s as u32))
                    .map(|s| {
                        let v = &self.vectors[s * d..(s + 1) * d];
                        let dot: f32 = query.iter().zip(v).map(|(a, b)| a * b).sum();
                        let key = match batch.key {
                            KeyKind::Dot => dot,
                            KeyKind::NegL2Squared => -(query_norm + self.norms[s] - 2.0 * dot),
                        };
                        (key, s as u32)
                    })
                    .collect();
                let allowed = keyed.len() as u32;
                keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                keyed.truncate(batch.per_segment);
                out.push(SegmentBest {
                    found: keyed,
                    allowed,
                });
            }
        }
        Ok(out)
    }
}
