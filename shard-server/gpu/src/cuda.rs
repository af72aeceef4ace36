//! The CUDA device (cudarc, libraries loaded at run time): the vectors in fixed-size chunks of
//! device memory (growing never reallocates or copies), exact scores of a batch of queries
//! against a chunk by one cuBLAS GEMM (f16 or f32 inputs, f32 accumulation and output), and
//! the best allowed slots of each segment of the scores by a selection kernel compiled with
//! NVRTC when the device opens. Compaction gathers the kept rows into fresh chunks on the
//! device (a gather kernel), freeing old chunks as soon as nothing later reads them.
//!
//! Every call into a CUDA library goes through this module; `libraries_present` is checked
//! before the first one, since cudarc panics when a library it loads is missing.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use half::f16;

use crate::kernel::{
    Element, ExactKernel, KernelError, KeyKind, Mask, SegmentBest, SelectBatch, MAX_PER_SEGMENT,
};

/// Threads of a selection block (the kernel's `THREADS`).
const SELECT_THREADS: u32 = 256;
/// Device memory per chunk of vectors (its vector count is this over a vector's size).
const CHUNK_BYTES: usize = 128 << 20;
/// Queries sharing one pass over the vectors: the scores of a pass (queries × chunk × 4
/// bytes) are the largest work buffer.
const PASS_QUERIES: usize = 256;
/// Small batches split each chunk into this many segments (more blocks for the selection).
const SMALL_BATCH_SEGMENTS: usize = 8;

/// The kernels compiled with NVRTC when a device opens (also emulated on the CPU by
/// `tests/kernel_emulation.rs`).
pub const KERNELS: &str = r#"
#define KMAX 128
#define THREADS 256
#define FULL 0xffffffffu

__device__ __forceinline__ bool better(float k1, unsigned s1, float k2, unsigned s2) {
    return k1 > k2 || (k1 == k2 && s1 < s2);
}

// The best `per_segment` allowed slots of one segment of one query's scores (key descending,
// slot ascending), and how many slots of the segment the mask allows. Block (segment, query).
extern "C" __global__ void select_segments(
    const float* __restrict__ scores, int tile_len, int seg_len, int per_segment,
    const unsigned* __restrict__ masks, int mask_words, const int* __restrict__ mask_of_query,
    unsigned tile_base, const float* __restrict__ norms, int neg_l2,
    const float* __restrict__ query_norms,
    float* __restrict__ out_keys, unsigned* __restrict__ out_slots,
    unsigned* __restrict__ out_allowed, int seg_offset, int total_segments)
{
    const int q = blockIdx.y;
    const int seg = blockIdx.x;
    const int start = seg * seg_len;
    const int end = min(start + seg_len, tile_len);
    const float* row = scores + (unsigned long long)q * tile_len;
    const int m = mask_of_query[q];
    const unsigned* mask = m < 0 ? (const unsigned*)0 : masks + (unsigned long long)m * mask_words;
    const float qn = neg_l2 ? query_norms[q] : 0.0f;

    float keys[KMAX];
    unsigned slots[KMAX];
    int n = 0;
    unsigned allowed = 0;
    for (int i = start + (int)threadIdx.x; i < end; i += THREADS) {
        const unsigned slot = tile_base + (unsigned)i;
        if (mask) {
            const unsigned w = slot >> 5;
            if (w >= (unsigned)mask_words || !((mask[w] >> (slot & 31u)) & 1u)) continue;
        }
        allowed++;
        float key = row[i];
        if (neg_l2) key = -(qn + norms[i] - 2.0f * key);
        // A thread sees its slots in increasing order: on equal keys the earlier one stays.
        if (n == per_segment && !(key > keys[n - 1])) continue;
        int j = n < per_segment ? n++ : n - 1;
        while (j > 0 && keys[j - 1] < key) {
            keys[j] = keys[j - 1];
            slots[j] = slots[j - 1];
            j--;
        }
        keys[j] = key;
        slots[j] = slot;
    }

    __shared__ unsigned s_count[THREADS / 32];
    __shared__ float s_key[THREADS / 32];
    __shared__ unsigned s_slot[THREADS / 32];
    __shared__ int s_tid[THREADS / 32];
    __shared__ unsigned s_total;
    __shared__ int s_win;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    unsigned c = allowed;
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(FULL, c, o);
    if (lane == 0) s_count[warp] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned t = 0;
        for (int w = 0; w < THREADS / 32; w++) t += s_count[w];
        s_total = t;
    }
    __syncthreads();
    const unsigned total = s_total;
    const unsigned long long out = (unsigned long long)q * total_segments + seg_offset + seg;
    if (threadIdx.x == 0) out_allowed[out] = total;
    const int rounds = (int)min((unsigned)per_segment, total);
    int head = 0;
    for (int r = 0; r < rounds; r++) {
        float k = head < n ? keys[head] : -__int_as_float(0x7f800000);
        unsigned s = head < n ? slots[head] : 0xffffffffu;
        int t = threadIdx.x;
        for (int o = 16; o > 0; o >>= 1) {
            const float k2 = __shfl_down_sync(FULL, k, o);
            const unsigned s2 = __shfl_down_sync(FULL, s, o);
            const int t2 = __shfl_down_sync(FULL, t, o);
            if (better(k2, s2, k, s)) { k = k2; s = s2; t = t2; }
        }
        if (lane == 0) { s_key[warp] = k; s_slot[warp] = s; s_tid[warp] = t; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float bk = s_key[0];
            unsigned bs = s_slot[0];
            int bt = s_tid[0];
            for (int w = 1; w < THREADS / 32; w++) {
                if (better(s_key[w], s_slot[w], bk, bs)) { bk = s_key[w]; bs = s_slot[w]; bt = s_tid[w]; }
            }
            out_keys[out * per_segment + r] = bk;
            out_slots[out * per_segment + r] = bs;
            s_win = bt;
        }
        __syncthreads();
        if ((int)threadIdx.x == s_win) head++;
    }
}

// Compaction: row r of `dst` is the row of slot src_slots[r], read through the table of the
// old chunks (rows of `row_units` 16-bit units, `chunk_len` rows per chunk).
extern "C" __global__ void gather_rows(
    const unsigned long long* __restrict__ chunk_ptrs, int chunk_len, int row_units,
    const unsigned* __restrict__ src_slots, int rows, unsigned short* __restrict__ dst)
{
    const int r = blockIdx.x;
    if (r >= rows) return;
    const unsigned s = src_slots[r];
    const unsigned short* src =
        (const unsigned short*)chunk_ptrs[s / chunk_len] + (unsigned long long)(s % chunk_len) * row_units;
    unsigned short* d = dst + (unsigned long long)r * row_units;
    for (int j = threadIdx.x; j < row_units; j += blockDim.x) d[j] = src[j];
}

extern "C" __global__ void gather_norms(
    const unsigned long long* __restrict__ norm_ptrs, int chunk_len,
    const unsigned* __restrict__ src_slots, int rows, float* __restrict__ dst)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const unsigned s = src_slots[r];
    dst[r] = ((const float*)norm_ptrs[s / chunk_len])[s % chunk_len];
}
"#;

/// Checks that the NVIDIA driver library, cuBLAS and NVRTC can be loaded, before any call.
pub fn libraries_present() -> Result<(), String> {
    // SAFETY: these only try to dlopen the libraries by name; nothing is called in them.
    let (driver, cublas, nvrtc) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::cublas::sys::is_culib_present(),
            cudarc::nvrtc::sys::is_culib_present(),
        )
    };
    let missing: Vec<&str> = [
        (driver, "libcuda (the NVIDIA driver)"),
        (cublas, "libcublas (CUDA toolkit)"),
        (nvrtc, "libnvrtc (CUDA toolkit)"),
    ]
    .into_iter()
    .filter(|(present, _)| !present)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not found (LD_LIBRARY_PATH={})",
            missing.join(", "),
            std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
        ))
    }
}

struct Chunk {
    /// `capacity` rows of `dimension` elements (f16 bits or f32), as bytes.
    data: CudaSlice<u8>,
    /// Squared norms of the rows (for l2).
    norms: CudaSlice<f32>,
    len: usize,
}

/// A growable device buffer, reused across batches.
struct Buffer<T> {
    slice: Option<CudaSlice<T>>,
}

impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> Buffer<T> {
    fn new() -> Self {
        Buffer { slice: None }
    }

    fn ensure(
        &mut self,
        stream: &Arc<CudaStream>,
        len: usize,
    ) -> Result<&mut CudaSlice<T>, KernelError> {
        let len = len.max(1);
        if self.slice.as_ref().is_none_or(|s| s.len() < len) {
            self.slice = None;
            self.slice = Some(stream.alloc_zeros::<T>(len).map_err(oom)?);
        }
        Ok(self.slice.as_mut().expect("allocated above"))
    }

    fn bytes(&self) -> usize {
        self.slice
            .as_ref()
            .map_or(0, |s| s.len() * std::mem::size_of::<T>())
    }
}

pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    select_fn: CudaFunction,
    gather_rows_fn: CudaFunction,
    gather_norms_fn: CudaFunction,
    name: String,
    total_memory: usize,
    dimension: usize,
    element: Element,
    chunk_len: usize,
    chunks: Vec<Chunk>,
    len: usize,
    queries: Buffer<u8>,
    query_norms: Buffer<f32>,
    masks: Buffer<u32>,
    mask_of_query: Buffer<i32>,
    scores: Buffer<f32>,
    out_keys: Buffer<f32>,
    out_slots: Buffer<u32>,
    out_allowed: Buffer<u32>,
}

fn device_error(e: impl std::fmt::Display) -> KernelError {
    KernelError::Device(e.to_string())
}

fn oom(e: impl std::fmt::Display) -> KernelError {
    KernelError::OutOfMemory(e.to_string())
}

impl CudaDevice {
    /// Opens device `ordinal`: context, stream, cuBLAS handle, and the kernels compiled.
    pub fn open(ordinal: usize, dimension: usize, element: Element) -> Result<CudaDevice, String> {
        libraries_present()?;
        let count = CudaContext::device_count().map_err(|e| format!("cuDeviceGetCount: {e}"))?;
        if count as usize <= ordinal {
            return Err(format!("no CUDA device {ordinal} ({count} found)"));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA context: {e}"))?;
        let name = ctx.name().map_err(|e| format!("device name: {e}"))?;
        let total_memory = ctx.total_mem().map_err(|e| format!("device memory: {e}"))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e}"))?;
        let ptx = compile_ptx_with_opts(
            KERNELS,
            CompileOptions {
                name: Some("vecshard_select.cu".into()),
                ..Default::default()
            },
        )
        .map_err(|e| format!("NVRTC could not compile the selection kernels: {e}"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("loading the selection kernels: {e}"))?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| format!("kernel {name}: {e}"))
        };
        let row_bytes = (dimension * element.bytes()).max(1);
        let chunk_len = (CHUNK_BYTES / row_bytes).clamp(1024, 1 << 20) / 1024 * 1024;
        Ok(CudaDevice {
            select_fn: load("select_segments")?,
            gather_rows_fn: load("gather_rows")?,
            gather_norms_fn: load("gather_norms")?,
            ctx,
            stream,
            blas,
            name,
            total_memory,
            dimension,
            element,
            chunk_len,
            chunks: Vec::new(),
            len: 0,
            queries: Buffer::new(),
            query_norms: Buffer::new(),
            masks: Buffer::new(),
            mask_of_query: Buffer::new(),
            scores: Buffer::new(),
            out_keys: Buffer::new(),
            out_slots: Buffer::new(),
            out_allowed: Buffer::new(),
        })
    }

    /// Free and total device memory now.
    pub fn memory_info(&self) -> Result<(usize, usize), String> {
        self.ctx.bind_to_thread().map_err(|e| e.to_string())?;
        self.ctx.mem_get_info().map_err(|e| e.to_string())
    }

    /// Device memory bandwidth measured by device-to-device copies of `bytes` (bytes read
    /// plus bytes written per second): the bound a scan of the vectors cannot beat.
    pub fn copy_bandwidth(&self, bytes: usize) -> Result<f64, String> {
        self.ctx.bind_to_thread().map_err(|e| e.to_string())?;
        let src = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| e.to_string())?;
        let mut dst = self
            .stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| e.to_string())?;
        let copy = |dst: &mut CudaSlice<u8>| -> Result<(), String> {
            self.stream
                .memcpy_dtod(&src, dst)
                .map_err(|e| e.to_string())
        };
        copy(&mut dst)?;
        self.stream.synchronize().map_err(|e| e.to_string())?;
        const ROUNDS: usize = 5;
        let started = std::time::Instant::now();
        for _ in 0..ROUNDS {
            copy(&mut dst)?;
        }
        self.stream.synchronize().map_err(|e| e.to_string())?;
        Ok((2 * ROUNDS * bytes) as f64 / started.elapsed().as_secs_f64())
    }

    fn row_bytes(&self) -> usize {
        self.dimension * self.element.bytes()
    }

    fn new_chunk(&self) -> Result<Chunk, KernelError> {
        Ok(Chunk {
            data: self
                .stream
                .alloc_zeros::<u8>(self.chunk_len * self.row_bytes())
                .map_err(oom)?,
            norms: self
                .stream
                .alloc_zeros::<f32>(self.chunk_len)
                .map_err(oom)?,
            len: 0,
        })
    }

    /// Row bytes of `vectors` at the device's element type.
    fn encode(&self, vectors: &[f32]) -> Vec<u8> {
        match self.element {
            Element::F32 => vectors.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Element::F16 => vectors
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
        }
    }

    fn segments_per_chunk(queries: usize) -> usize {
        if queries < 32 {
            SMALL_BATCH_SEGMENTS
        } else {
            1
        }
    }

    /// Scores of `n` queries (already on the device) against chunk `c`, into `scores`
    /// (query-major, `chunk.len` per query).
    fn gemm(&self, c: usize, n: usize, queries: u64, scores: u64) -> Result<(), KernelError> {
        let chunk = &self.chunks[c];
        let (data, _sync) = chunk.data.device_ptr(&self.stream);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let ty = match self.element {
            Element::F16 => blas_sys::cudaDataType_t::CUDA_R_16F,
            Element::F32 => blas_sys::cudaDataType_t::CUDA_R_32F,
        };
        let d = self.dimension as i32;
        // Column-major: A = the chunk (d × len, a vector per column), transposed; B = the
        // queries (d × n); C = len × n, so each query's scores are contiguous.
        // SAFETY: the pointers are live device allocations of at least the sizes given (the
        // chunk holds `len` rows, `queries` n rows, `scores` len × n floats), on this stream.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                chunk.len as i32,
                n as i32,
                d,
                (&alpha) as *const f32 as *const c_void,
                data as *const c_void,
                ty,
                d,
                queries as *const c_void,
                ty,
                d,
                (&beta) as *const f32 as *const c_void,
                scores as *mut c_void,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                chunk.len as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(device_error)
    }

    /// One pass over every chunk for up to `PASS_QUERIES` queries.
    fn select_pass(
        &mut self,
        queries: &[f32],
        mask_of_query: &[i32],
        mask_words: usize,
        per_segment: usize,
        per_chunk: usize,
        key: KeyKind,
    ) -> Result<Vec<SegmentBest>, KernelError> {
        let d = self.dimension;
        let n = queries.len() / d;
        let total_segments = self.chunks.len() * per_chunk;
        let seg_len = self.chunk_len.div_ceil(per_chunk);
        let stream = self.stream.clone();
        let encoded = self.encode(queries);
        stream
            .memcpy_htod(&encoded, self.queries.ensure(&stream, encoded.len())?)
            .map_err(device_error)?;
        let norms: Vec<f32> = queries
            .chunks_exact(d)
            .map(|q| q.iter().map(|x| x * x).sum())
            .collect();
        stream
            .memcpy_htod(&norms, self.query_norms.ensure(&stream, n)?)
            .map_err(device_error)?;
        stream
            .memcpy_htod(mask_of_query, self.mask_of_query.ensure(&stream, n)?)
            .map_err(device_error)?;
        self.scores.ensure(&stream, n * self.chunk_len)?;
        let outputs = n * total_segments;
        self.out_keys.ensure(&stream, outputs * per_segment)?;
        self.out_slots.ensure(&stream, outputs * per_segment)?;
        self.out_allowed.ensure(&stream, outputs)?;
        let (queries_ptr, scores_ptr) = (
            dev_ptr(&self.queries, &stream),
            dev_ptr(&self.scores, &stream),
        );
        let (qn_ptr, moq_ptr) = (
            dev_ptr(&self.query_norms, &stream),
            dev_ptr(&self.mask_of_query, &stream),
        );
        let masks_ptr = if mask_words == 0 {
            0
        } else {
            dev_ptr(&self.masks, &stream)
        };
        let (keys_ptr, slots_ptr, allowed_ptr) = (
            dev_ptr(&self.out_keys, &stream),
            dev_ptr(&self.out_slots, &stream),
            dev_ptr(&self.out_allowed, &stream),
        );
        let neg_l2 = i32::from(key == KeyKind::NegL2Squared);
        for c in 0..self.chunks.len() {
            self.gemm(c, n, queries_ptr, scores_ptr)?;
            let chunk = &self.chunks[c];
            let (norms_ptr, _sync) = chunk.norms.device_ptr(&stream);
            let (tile_len, seg_len_i, per_i) =
                (chunk.len as i32, seg_len as i32, per_segment as i32);
            let (mask_words_i, base) = (mask_words as i32, (c * self.chunk_len) as u32);
            let (seg_offset, total_i) = ((c * per_chunk) as i32, total_segments as i32);
            let mut launch = stream.launch_builder(&self.select_fn);
            launch
                .arg(&scores_ptr)
                .arg(&tile_len)
                .arg(&seg_len_i)
                .arg(&per_i)
                .arg(&masks_ptr)
                .arg(&mask_words_i)
                .arg(&moq_ptr)
                .arg(&base)
                .arg(&norms_ptr)
                .arg(&neg_l2)
                .arg(&qn_ptr)
                .arg(&keys_ptr)
                .arg(&slots_ptr)
                .arg(&allowed_ptr)
                .arg(&seg_offset)
                .arg(&total_i);
            let config = LaunchConfig {
                grid_dim: (per_chunk as u32, n as u32, 1),
                block_dim: (SELECT_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's parameters in order and type; every
            // pointer is a live allocation sized above for `n` queries and `total_segments`.
            unsafe { launch.launch(config) }.map_err(device_error)?;
        }
        let mut keys = vec![0f32; outputs * per_segment];
        let mut slots = vec![0u32; outputs * per_segment];
        let mut allowed = vec![0u32; outputs];
        if outputs > 0 {
            let k = self.out_keys.slice.as_ref().expect("allocated");
            stream
                .memcpy_dtoh(&k.slice(0..keys.len()), &mut keys)
                .map_err(device_error)?;
            let s = self.out_slots.slice.as_ref().expect("allocated");
            stream
                .memcpy_dtoh(&s.slice(0..slots.len()), &mut slots)
                .map_err(device_error)?;
            let a = self.out_allowed.slice.as_ref().expect("allocated");
            stream
                .memcpy_dtoh(&a.slice(0..allowed.len()), &mut allowed)
                .map_err(device_error)?;
        }
        stream.synchronize().map_err(device_error)?;
        Ok((0..outputs)
            .map(|o| {
                let kept = (allowed[o] as usize).min(per_segment);
                let at = o * per_segment;
                SegmentBest {
                    found: (at..at + kept).map(|i| (keys[i], slots[i])).collect(),
                    allowed: allowed[o],
                }
            })
            .collect())
    }
}

/// The device address of a buffer (0 before its first use).
fn dev_ptr<T>(b: &Buffer<T>, stream: &CudaStream) -> u64 {
    b.slice.as_ref().map_or(0, |s| s.device_ptr(stream).0)
}

impl ExactKernel for CudaDevice {
    fn describe(&self) -> String {
        format!("{} ({} MiB)", self.name, self.total_memory >> 20)
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn element(&self) -> Element {
        self.element
    }

    fn len(&self) -> usize {
        self.len
    }

    fn memory_bytes(&self) -> u64 {
        let chunks = self.chunks.len() * self.chunk_len * (self.row_bytes() + 4);
        let buffers = self.queries.bytes()
            + self.query_norms.bytes()
            + self.masks.bytes()
            + self.mask_of_query.bytes()
            + self.scores.bytes()
            + self.out_keys.bytes()
            + self.out_slots.bytes()
            + self.out_allowed.bytes();
        (chunks + buffers) as u64
    }

    fn append(&mut self, vectors: &[f32]) -> Result<(), KernelError> {
        self.ctx.bind_to_thread().map_err(device_error)?;
        let d = self.dimension;
        // A partial row would leave `rows` at 0 below and loop forever, allocating chunks.
        if !vectors.len().is_multiple_of(d) {
            return Err(KernelError::Device(format!(
                "append of {} values is not a whole number of {d}-dimensional vectors",
                vectors.len()
            )));
        }
        let mut rest = vectors;
        while !rest.is_empty() {
            if self.chunks.last().is_none_or(|c| c.len == self.chunk_len) {
                let chunk = self.new_chunk()?;
                self.chunks.push(chunk);
            }
            let row_bytes = self.row_bytes();
            let chunk_len = self.chunk_len;
            let stream = self.stream.clone();
            let chunk = self.chunks.last_mut().expect("pushed above");
            let rows = (rest.len() / d).min(chunk_len - chunk.len);
            let (now, later) = rest.split_at(rows * d);
            let bytes = match self.element {
                Element::F32 => now
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect::<Vec<u8>>(),
                Element::F16 => now
                    .iter()
                    .flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes())
                    .collect(),
            };
            let norms: Vec<f32> = now
                .chunks_exact(d)
                .map(|v| v.iter().map(|x| x * x).sum())
                .collect();
            let at = chunk.len;
            stream
                .memcpy_htod(
                    &bytes,
                    &mut chunk
                        .data
                        .slice_mut(at * row_bytes..(at + rows) * row_bytes),
                )
                .map_err(device_error)?;
            stream
                .memcpy_htod(&norms, &mut chunk.norms.slice_mut(at..at + rows))
                .map_err(device_error)?;
            chunk.len += rows;
            self.len += rows;
            rest = later;
        }
        self.stream.synchronize().map_err(device_error)
    }

    fn compact(&mut self, keep: &[u32]) -> Result<(), KernelError> {
        self.ctx.bind_to_thread().map_err(device_error)?;
        let stream = self.stream.clone();
        let chunk_len = self.chunk_len;
        let row_units = (self.row_bytes() / 2) as i32;
        let data_ptrs: Vec<u64> = self
            .chunks
            .iter()
            .map(|c| c.data.device_ptr(&stream).0)
            .collect();
        let norm_ptrs: Vec<u64> = self
            .chunks
            .iter()
            .map(|c| c.norms.device_ptr(&stream).0)
            .collect();
        let data_table = stream.clone_htod(&data_ptrs).map_err(oom)?;
        let norm_table = stream.clone_htod(&norm_ptrs).map_err(oom)?;
        let (data_table_ptr, norm_table_ptr) = (
            data_table.device_ptr(&stream).0,
            norm_table.device_ptr(&stream).0,
        );
        let mut old: Vec<Option<Chunk>> = std::mem::take(&mut self.chunks)
            .into_iter()
            .map(Some)
            .collect();
        let mut fresh = Vec::new();
        for (c, rows) in keep.chunks(chunk_len).enumerate() {
            let mut chunk = self.new_chunk()?;
            let slots = stream.clone_htod(rows).map_err(oom)?;
            let slots_ptr = slots.device_ptr(&stream).0;
            let (data_ptr, norms_ptr) = (
                chunk.data.device_ptr(&stream).0,
                chunk.norms.device_ptr(&stream).0,
            );
            let (chunk_len_i, n) = (chunk_len as i32, rows.len() as i32);
            let mut launch = stream.launch_builder(&self.gather_rows_fn);
            launch
                .arg(&data_table_ptr)
                .arg(&chunk_len_i)
                .arg(&row_units)
                .arg(&slots_ptr)
                .arg(&n)
                .arg(&data_ptr);
            // SAFETY: arguments in the kernel's order and types; the tables point at the old
            // chunks, alive until this pass is done with them; `slots` holds `n` rows.
            unsafe {
                launch.launch(LaunchConfig {
                    grid_dim: (rows.len() as u32, 1, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                })
            }
            .map_err(device_error)?;
            let mut launch = stream.launch_builder(&self.gather_norms_fn);
            launch
                .arg(&norm_table_ptr)
                .arg(&chunk_len_i)
                .arg(&slots_ptr)
                .arg(&n)
                .arg(&norms_ptr);
            // SAFETY: as above.
            unsafe { launch.launch(LaunchConfig::for_num_elems(rows.len() as u32)) }
                .map_err(device_error)?;
            stream.synchronize().map_err(device_error)?;
            chunk.len = rows.len();
            fresh.push(chunk);
            // Old chunks below the next row's source are read no more.
            let next = keep
                .get((c + 1) * chunk_len)
                .map_or(old.len(), |s| *s as usize / chunk_len);
            old.iter_mut().take(next).for_each(|o| *o = None);
        }
        drop(old);
        self.chunks = fresh;
        self.len = keep.len();
        Ok(())
    }

    fn segment_count(&self, queries: usize) -> usize {
        self.chunks.len() * Self::segments_per_chunk(queries)
    }

    fn select(&mut self, batch: &SelectBatch<'_>) -> Result<Vec<SegmentBest>, KernelError> {
        if batch.per_segment > MAX_PER_SEGMENT {
            return Err(KernelError::Device(format!(
                "{} candidates per segment asked, the kernel keeps at most {MAX_PER_SEGMENT}",
                batch.per_segment
            )));
        }
        self.ctx.bind_to_thread().map_err(device_error)?;
        let d = self.dimension;
        // Every distinct mask once, one after the other; `All` is -1 (no mask).
        let mask_words = self.len.div_ceil(32);
        let mut words: Vec<u32> = Vec::new();
        let mut index_of: Vec<i32> = Vec::with_capacity(batch.masks.len());
        for mask in batch.masks {
            match mask {
                Mask::All => index_of.push(-1),
                Mask::Bits(w) => {
                    index_of.push((words.len() / mask_words.max(1)) as i32);
                    let mut padded = w.clone();
                    padded.resize(mask_words, 0);
                    words.extend(padded);
                }
            }
        }
        let stream = self.stream.clone();
        if !words.is_empty() {
            stream
                .memcpy_htod(&words, self.masks.ensure(&stream, words.len())?)
                .map_err(device_error)?;
        }
        let mask_words = if words.is_empty() { 0 } else { mask_words };
        let mut out = Vec::new();
        let queries = batch.mask_of_query.len();
        for pass in (0..queries).collect::<Vec<_>>().chunks(PASS_QUERIES) {
            let (first, last) = (pass[0], pass[pass.len() - 1] + 1);
            let moq: Vec<i32> = batch.mask_of_query[first..last]
                .iter()
                .map(|m| index_of[*m as usize])
                .collect();
            let results = self.select_pass(
                &batch.queries[first * d..last * d],
                &moq,
                mask_words,
                batch.per_segment,
                Self::segments_per_chunk(queries),
                batch.key,
            )?;
            out.extend(results);
        }
        Ok(out)
    }
}
