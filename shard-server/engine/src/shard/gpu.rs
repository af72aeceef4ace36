//! Exact search on the GPU (`vecshard_gpu`): the device copy is opened with the shard and
//! kept slot for slot with the in-memory vectors (`State` stages every vector and mirrors
//! compactions). The device narrows an exact scan to the slots the CPU plan could keep
//! (within its error bounds of the k-th score); those are scored here with the CPU plan's own
//! functions, so the answer is the CPU exact plan's. Used for exact plans over at least
//! `gpu_min_points` points (single searches, micro-batched by the device thread) and for
//! `SearchBatch` calls of at least `gpu_min_batch` searches (answered exactly).

use super::search::{allowed_slots, exact_top, hits_of};
use super::vectors::Precision;
use super::*;
use vecshard_gpu::cpu::CpuStandIn;
use vecshard_gpu::{DeviceChoice, DeviceCopy, DeviceQuery, Element, KeyKind, Mask};

/// Opens the device copy the options ask for and loads `state`'s vectors into it. `Ok(None)`:
/// search on the CPU (asked for, no GPU with `auto`, or the vectors do not fit the memory
/// limit — logged with the numbers). An error when `gpu` was asked for and no GPU is usable.
pub(super) fn attach_device(
    config: &CollectionConfig,
    options: &ShardOptions,
    metrics: &Arc<Metrics>,
    state: &mut State,
) -> Result<()> {
    metrics.gpu_available.set(0);
    let element = match Precision::for_collection(config.metric, config.quantization) {
        Precision::F16 => Element::F16,
        Precision::F32 => Element::F32,
    };
    let key = match config.metric {
        Metric::L2 => KeyKind::NegL2Squared,
        Metric::Cosine | Metric::Dot => KeyKind::Dot,
    };
    let (kernel, free_memory) = match options.device_stand_in {
        Some(segment_len) => (
            Box::new(CpuStandIn::new(config.dimension, element, segment_len))
                as Box<dyn vecshard_gpu::ExactKernel>,
            u64::MAX,
        ),
        None => match vecshard_gpu::open(options.device, config.dimension, element)
            .map_err(Error::invalid)?
        {
            None => return Ok(()),
            Some(opened) => (opened.kernel, opened.free_memory),
        },
    };
    let mut device_options = options.device_options.clone();
    if device_options.memory_limit == 0 {
        // Room for the driver, cuBLAS's workspace and other processes.
        device_options.memory_limit = free_memory / 10 * 9;
    }
    let per_vector = (config.dimension * element.bytes() + 4) as u64;
    let need = state.slot_ids.len() as u64 * per_vector;
    if need > device_options.memory_limit {
        let why = format!(
            "the shard's {} vectors need {} MiB of GPU memory, over the limit of {} MiB \
             (--gpu-memory-limit, or 90% of the free memory)",
            state.slot_ids.len(),
            need >> 20,
            device_options.memory_limit >> 20
        );
        if options.device == DeviceChoice::Gpu && options.device_stand_in.is_none() {
            tracing::error!("{why}; searching on the CPU");
        } else {
            tracing::warn!("{why}; searching on the CPU");
        }
        return Ok(());
    }
    let started = Instant::now();
    let device = DeviceCopy::start(kernel, key, device_options, Some(metrics.clone()))
        .map_err(|e| Error::internal(format!("cannot start the GPU thread: {e}")))?;
    let device = Arc::new(device);
    state.attach_device(device.clone());
    tracing::info!(
        device = device.describe(),
        vectors = state.slot_ids.len(),
        precision = ?element,
        ms = started.elapsed().as_millis() as u64,
        "vectors copied to the GPU"
    );
    Ok(())
}

/// The slots `candidates` as a device mask (every slot: none), built from whichever of the
/// set and its complement is smaller.
fn mask_of(st: &State, candidates: &RoaringBitmap) -> Mask {
    let slots = st.slot_ids.len() as u64;
    if candidates.len() >= slots {
        return Mask::All;
    }
    if candidates.len() * 2 < slots {
        return Mask::of_slots(candidates.iter(), slots as usize);
    }
    let mut words = vec![u32::MAX; (slots as usize).div_ceil(32)];
    if !slots.is_multiple_of(32) {
        *words.last_mut().expect("slots > 0") = (1u32 << (slots % 32)) - 1;
    }
    let all: RoaringBitmap = (0..slots as u32).collect();
    for s in &all - candidates {
        words[s as usize / 32] &= !(1u32 << (s % 32));
    }
    Mask::Bits(words)
}

impl Shard {
    /// Where exact searches run, for the collection info: `cpu`, `gpu: <device>`, or
    /// `cpu (GPU off: <why>)`.
    pub fn device_description(&self) -> String {
        let st = self.state.read();
        match st.device() {
            None => "cpu".into(),
            Some(d) if d.usable() => format!("gpu: {}", d.describe()),
            Some(d) => format!("cpu (GPU off: {})", d.why_unavailable().unwrap_or_default()),
        }
    }

    /// True when searches can go to the GPU now.
    pub fn gpu_in_use(&self) -> bool {
        self.state.read().usable_device().is_some()
    }

    /// True when a batch of `reqs` is worth sending to the GPU: enough searches, a usable
    /// device, and every limit within its candidate lists (a larger one would be scanned on
    /// the CPU inside the batch, where the graph would answer it faster).
    pub(super) fn batch_for_device(&self, reqs: &[SearchRequest]) -> bool {
        if reqs.len() < self.options.gpu_min_batch {
            return false;
        }
        let st = self.state.read();
        st.usable_device()
            .is_some_and(|d| reqs.iter().all(|r| r.limit <= d.max_k()))
    }

    /// The device's candidates for an exact scan of `candidates`, or `None` to scan on the
    /// CPU (no usable device, too few points, a limit past the device's lists, or a crowd
    /// of near-ties the device could not settle).
    pub(super) fn device_candidates(
        &self,
        st: &State,
        req: &SearchRequest,
        candidates: &RoaringBitmap,
    ) -> Option<Vec<u32>> {
        let device = st.usable_device()?;
        if candidates.len() < self.options.gpu_min_points || req.limit > device.max_k() {
            return None;
        }
        let query = DeviceQuery {
            vector: req.vector.clone(),
            mask: Arc::new(mask_of(st, candidates)),
            k: req.limit,
            cpu_slack: st.copy_score_error().map_or(0.0, |e| 2.0 * e),
        };
        device.select(vec![query]).pop()?.ok()
    }

    /// A batch answered exactly with the GPU in one device call (`None`: no usable device
    /// now; the caller searches as usual). Requests sharing a filter share a mask.
    pub(super) fn search_batch_on_device(
        &self,
        reqs: &[SearchRequest],
    ) -> Option<Result<Vec<Vec<ScoredPoint>>>> {
        let metric = self.config.metric;
        let ranked: Vec<(Vec<ScoredPoint>, bool)> = {
            let st = self.state.read();
            let device = st.usable_device()?.clone();
            let mut masks: Vec<(Option<&Filter>, Arc<Mask>)> = Vec::new();
            let mut allowed: Vec<Option<RoaringBitmap>> = Vec::with_capacity(reqs.len());
            let mut queries = Vec::new();
            let mut asked = Vec::new();
            for (i, req) in reqs.iter().enumerate() {
                let a = allowed_slots(&st, req.filter.as_ref());
                if req.limit <= device.max_k() {
                    let shared = masks
                        .iter()
                        .find(|(f, _)| *f == req.filter.as_ref())
                        .map(|(_, m)| m.clone());
                    let mask = shared.unwrap_or_else(|| {
                        let m = Arc::new(mask_of(&st, a.as_ref().unwrap_or(&st.live)));
                        masks.push((req.filter.as_ref(), m.clone()));
                        m
                    });
                    queries.push(DeviceQuery {
                        vector: req.vector.clone(),
                        mask,
                        k: req.limit,
                        cpu_slack: st.copy_score_error().map_or(0.0, |e| 2.0 * e),
                    });
                    asked.push(i);
                }
                allowed.push(a);
            }
            let mut from_device: Vec<Option<Vec<u32>>> = vec![None; reqs.len()];
            for (i, answer) in asked.into_iter().zip(device.select(queries)) {
                from_device[i] = answer.ok();
            }
            reqs.iter()
                .zip(allowed)
                .zip(from_device)
                .map(|((req, a), slots)| {
                    self.metrics.count_plan(Plan::Exact.name());
                    let slots =
                        slots.unwrap_or_else(|| a.as_ref().unwrap_or(&st.live).iter().collect());
                    let (top, recheck) = exact_top(&st, metric, req, &slots);
                    (hits_of(&st, top), recheck)
                })
                .collect()
        };
        Some(
            reqs.iter()
                .zip(ranked)
                .map(|(req, (hits, recheck))| self.finish(req, hits, recheck))
                .collect(),
        )
    }
}
