//! `DeviceCopy`: the shard's handle on a device copy of its vectors. One thread owns the
//! device and takes commands in order (appends, compactions, selections), so a selection
//! always sees every write the shard applied before it was asked; selections waiting
//! together run as one batch (micro-batching: the thread takes whatever is queued when it
//! becomes free, and with a window it waits up to that long for more).
//!
//! The copy turns itself off (and every later selection answers `Unavailable`, so the shard
//! scans on the CPU) when it would outgrow its memory limit or the device fails; it says why
//! in the log, in `why_unavailable` and in `vecshard_gpu_available`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use vecshard_core::metrics::Metrics;

use crate::kernel::{
    Element, ExactKernel, KernelError, KeyKind, Mask, SelectBatch, MAX_PER_SEGMENT,
};
use crate::select::{key_error, margin, pick, Picked};

/// Limits of a device copy.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// Device memory the copy may use (vectors, norms and work buffers).
    pub memory_limit: u64,
    /// Queries in one kernel batch at most.
    pub max_batch: usize,
    /// How long the device thread waits for more searches before running a batch; zero: it
    /// runs what is queued at once (batches form only while the device is busy).
    pub batch_window: Duration,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        DeviceOptions {
            memory_limit: u64::MAX,
            max_batch: 1024,
            batch_window: Duration::ZERO,
        }
    }
}

/// One exact search for the device: its query, which slots it may return, how many it asks
/// for, and the slack the CPU plan keeps around its k-th score.
#[derive(Clone, Debug)]
pub struct DeviceQuery {
    pub vector: Vec<f32>,
    pub mask: Arc<Mask>,
    pub k: usize,
    pub cpu_slack: f32,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The copy is off (memory limit, device failure); search on the CPU.
    #[error("GPU search unavailable: {0}")]
    Unavailable(String),
    /// Too many near-ties for the device's candidate lists; search this one on the CPU.
    #[error("GPU selection incomplete (near-ties past {MAX_PER_SEGMENT} per segment)")]
    Incomplete,
}

type Answer = Result<Vec<u32>, DeviceError>;

enum Command {
    Append(Vec<f32>),
    Compact(Vec<u32>),
    Select {
        queries: Vec<DeviceQuery>,
        reply: mpsc::SyncSender<Vec<Answer>>,
    },
}

struct Shared {
    usable: AtomicBool,
    why: Mutex<Option<String>>,
    memory_bytes: AtomicU64,
    /// The batching window in microseconds (`DeviceOptions::batch_window`, adjustable).
    window_us: AtomicU64,
    /// Kernel batches run and the queries they held.
    batches: AtomicU64,
    batched_queries: AtomicU64,
}

/// The shard's handle (see the module docs). Dropping it stops the device thread.
pub struct DeviceCopy {
    tx: Mutex<Option<Sender<Command>>>,
    shared: Arc<Shared>,
    describe: String,
    dimension: usize,
    element: Element,
    key: KeyKind,
    /// Appended vectors not yet sent (the shard stages a commit's vectors, then flushes).
    staged: Mutex<Vec<f32>>,
    /// Slots the device holds once every sent command has run.
    slots: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for DeviceCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCopy")
            .field("device", &self.describe)
            .field("slots", &self.slots())
            .field("usable", &self.usable())
            .finish()
    }
}

impl DeviceCopy {
    /// Starts the device thread over `kernel` (empty: the shard appends its vectors).
    pub fn start(
        kernel: Box<dyn ExactKernel>,
        key: KeyKind,
        options: DeviceOptions,
        metrics: Option<Arc<Metrics>>,
    ) -> std::io::Result<DeviceCopy> {
        let shared = Arc::new(Shared {
            usable: AtomicBool::new(true),
            why: Mutex::new(None),
            memory_bytes: AtomicU64::new(kernel.memory_bytes()),
            window_us: AtomicU64::new(options.batch_window.as_micros() as u64),
            batches: AtomicU64::new(0),
            batched_queries: AtomicU64::new(0),
        });
        let (describe, dimension, element) =
            (kernel.describe(), kernel.dimension(), kernel.element());
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            kernel,
            key,
            options,
            shared: shared.clone(),
            metrics: metrics.clone(),
            max_norm: 0.0,
        };
        let thread = std::thread::Builder::new()
            .name("gpu".into())
            .spawn(move || worker.run(rx))?;
        if let Some(m) = &metrics {
            m.gpu_available.set(1);
        }
        Ok(DeviceCopy {
            tx: Mutex::new(Some(tx)),
            shared,
            describe,
            dimension,
            element,
            key,
            staged: Mutex::new(Vec::new()),
            slots: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
            metrics,
        })
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn element(&self) -> Element {
        self.element
    }

    pub fn key(&self) -> KeyKind {
        self.key
    }

    /// False once the copy has turned itself off.
    pub fn usable(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    pub fn why_unavailable(&self) -> Option<String> {
        self.shared.why.lock().clone()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.shared.memory_bytes.load(Ordering::Relaxed)
    }

    /// Changes the batching window (see `DeviceOptions::batch_window`) from the next batch on.
    pub fn set_batch_window(&self, window: Duration) {
        self.shared
            .window_us
            .store(window.as_micros() as u64, Ordering::Relaxed);
    }

    /// Kernel batches run so far and the queries they held (the mean batch size).
    pub fn batch_stats(&self) -> (u64, u64) {
        (
            self.shared.batches.load(Ordering::Relaxed),
            self.shared.batched_queries.load(Ordering::Relaxed),
        )
    }

    /// Slots the device holds (staged vectors included) once the queued commands have run.
    pub fn slots(&self) -> u64 {
        self.slots.load(Ordering::Acquire) + (self.staged.lock().len() / self.dimension) as u64
    }

    /// The most results one device search may ask for (larger `k` scans on the CPU).
    pub fn max_k(&self) -> usize {
        MAX_PER_SEGMENT / 2
    }

    /// Stages the vector of the next slot; sent by `flush`.
    pub fn stage(&self, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.dimension);
        self.staged.lock().extend_from_slice(vector);
    }

    /// Sends the staged vectors to the device thread (after everything sent before).
    pub fn flush(&self) {
        // Sent under the lock: a selection sent after this flush returns is queued behind it.
        let mut staged = self.staged.lock();
        if staged.is_empty() {
            return;
        }
        let vectors = std::mem::take(&mut *staged);
        self.slots
            .fetch_add((vectors.len() / self.dimension) as u64, Ordering::AcqRel);
        self.send(Command::Append(vectors));
    }

    /// Mirrors a compaction: keeps the vectors of `keep` (increasing), renumbered 0, 1, ….
    pub fn compact(&self, keep: Vec<u32>) {
        self.flush();
        self.slots.store(keep.len() as u64, Ordering::Release);
        self.send(Command::Compact(keep));
    }

    /// Exact candidates for each query (every slot within the margin of its k-th best), in
    /// one or more device batches shared with concurrent callers. Blocks until answered.
    pub fn select(&self, queries: Vec<DeviceQuery>) -> Vec<Answer> {
        let n = queries.len();
        if !self.usable() {
            return vec![Err(self.unavailable()); n];
        }
        self.flush();
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Command::Select { queries, reply });
        answer
            .recv()
            .unwrap_or_else(|_| vec![Err(self.unavailable()); n])
    }

    fn unavailable(&self) -> DeviceError {
        DeviceError::Unavailable(
            self.why_unavailable()
                .unwrap_or_else(|| "the device thread has stopped".into()),
        )
    }

    fn send(&self, command: Command) {
        if let Some(tx) = self.tx.lock().as_ref() {
            // A stopped thread has turned the copy off already; nothing to do.
            let _ = tx.send(command);
        }
    }
}

impl Drop for DeviceCopy {
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        if let Some(m) = &self.metrics {
            m.gpu_available.set(0);
            m.gpu_memory_bytes.set(0);
        }
    }
}

struct Worker {
    kernel: Box<dyn ExactKernel>,
    key: KeyKind,
    options: DeviceOptions,
    shared: Arc<Shared>,
    metrics: Option<Arc<Metrics>>,
    /// Largest vector norm appended (never lowered by compaction: a bound, not a measure).
    max_norm: f32,
}

impl Worker {
    fn run(mut self, rx: Receiver<Command>) {
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(c) => c,
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            match command {
                Command::Append(vectors) => self.append(&vectors),
                Command::Compact(keep) => {
                    if self.on() {
                        let result = self.kernel.compact(&keep);
                        self.after(result);
                    }
                }
                Command::Select { queries, reply } => {
                    let mut jobs = vec![(queries, reply)];
                    next = self.gather(&rx, &mut jobs);
                    self.answer(jobs);
                }
            }
        }
    }

    /// More selections queued behind the first (and, with a window, arriving within it), up
    /// to `max_batch` queries; stops at the first other command, which is returned to run next.
    fn gather(
        &self,
        rx: &Receiver<Command>,
        jobs: &mut Vec<(Vec<DeviceQuery>, mpsc::SyncSender<Vec<Answer>>)>,
    ) -> Option<Command> {
        let window = Duration::from_micros(self.shared.window_us.load(Ordering::Relaxed));
        let deadline = Instant::now() + window;
        let mut queries: usize = jobs.iter().map(|j| j.0.len()).sum();
        while queries < self.options.max_batch {
            let received = match rx.try_recv() {
                Ok(c) => Ok(c),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    rx.recv_timeout(deadline - now)
                }
            };
            match received {
                Ok(Command::Select { queries: q, reply }) => {
                    queries += q.len();
                    jobs.push((q, reply));
                }
                Ok(other) => return Some(other),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
        None
    }

    fn on(&self) -> bool {
        self.shared.usable.load(Ordering::Acquire)
    }

    fn append(&mut self, vectors: &[f32]) {
        if !self.on() {
            return;
        }
        let d = self.kernel.dimension();
        let count = vectors.len() / d;
        let need = (count * (d * self.kernel.element().bytes() + 4)) as u64;
        let used = self.kernel.memory_bytes();
        if used.saturating_add(need) > self.options.memory_limit {
            self.turn_off(format!(
                "{} vectors need {} MiB more GPU memory than the limit of {} MiB allows \
                 (--gpu-memory-limit); searching on the CPU",
                self.kernel.len() + count,
                (used + need - self.options.memory_limit.min(used + need)).div_ceil(1 << 20),
                self.options.memory_limit >> 20
            ));
            return;
        }
        for v in vectors.chunks_exact(d) {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            self.max_norm = self.max_norm.max(norm);
        }
        let result = self.kernel.append(vectors);
        self.after(result);
    }

    /// Records the outcome of a device call: memory in use, or the copy turned off.
    fn after(&mut self, result: Result<(), KernelError>) {
        match result {
            Ok(()) => {
                let bytes = self.kernel.memory_bytes();
                self.shared.memory_bytes.store(bytes, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.gpu_memory_bytes.set(bytes as i64);
                }
            }
            Err(e) => self.turn_off(format!("{e}; searching on the CPU")),
        }
    }

    fn turn_off(&mut self, why: String) {
        tracing::warn!(device = %self.kernel.describe(), "GPU search turned off: {why}");
        *self.shared.why.lock() = Some(why);
        self.shared.usable.store(false, Ordering::Release);
        if let Some(m) = &self.metrics {
            m.gpu_available.set(0);
        }
    }

    fn answer(&mut self, jobs: Vec<(Vec<DeviceQuery>, mpsc::SyncSender<Vec<Answer>>)>) {
        let sizes: Vec<usize> = jobs.iter().map(|j| j.0.len()).collect();
        let mut all: Vec<DeviceQuery> = Vec::with_capacity(sizes.iter().sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for (queries, reply) in jobs {
            all.extend(queries);
            replies.push(reply);
        }
        let mut answers = self.select_all(&all).into_iter();
        for (size, reply) in sizes.into_iter().zip(replies) {
            let _ = reply.send(answers.by_ref().take(size).collect());
        }
    }

    /// Answers every query: in batches of `max_batch`, then once more with the longest
    /// candidate lists for those a crowd of near-ties left incomplete.
    fn select_all(&mut self, queries: &[DeviceQuery]) -> Vec<Answer> {
        let mut answers: Vec<Answer> = vec![Err(DeviceError::Incomplete); queries.len()];
        let mut todo: Vec<usize> = (0..queries.len()).collect();
        for first in [true, false] {
            let mut again = Vec::new();
            for batch in todo.chunks(self.options.max_batch.max(1)) {
                let k = batch.iter().map(|&i| queries[i].k).max().unwrap_or(1);
                let per = Self::per_segment(k, first);
                if !first && per <= Self::per_segment(k, true) {
                    continue; // the first pass already kept as many as possible
                }
                match self.run_batch(queries, batch, per) {
                    Ok(picked) => {
                        for (&i, p) in batch.iter().zip(picked) {
                            match p {
                                Picked::Complete(slots) => answers[i] = Ok(slots),
                                Picked::Incomplete => again.push(i),
                            }
                        }
                    }
                    Err(e) => {
                        let why = DeviceError::Unavailable(e.to_string());
                        self.turn_off(format!("{e}; searching on the CPU"));
                        batch.iter().for_each(|&i| answers[i] = Err(why.clone()));
                    }
                }
            }
            todo = again;
            if todo.is_empty() {
                break;
            }
        }
        if let Some(m) = &self.metrics {
            let fallbacks = answers.iter().filter(|a| a.is_err()).count() as u64;
            m.gpu_searches("gpu")
                .inc_by(answers.len() as u64 - fallbacks);
            m.gpu_searches("cpu_fallback").inc_by(fallbacks);
        }
        answers
    }

    /// Candidates kept per segment: the k asked for plus room for near-ties, then (second
    /// pass) as many as the kernel keeps.
    fn per_segment(k: usize, first: bool) -> usize {
        if first {
            (k + (k / 2).max(8)).min(MAX_PER_SEGMENT)
        } else {
            MAX_PER_SEGMENT
        }
    }

    fn run_batch(
        &mut self,
        queries: &[DeviceQuery],
        batch: &[usize],
        per_segment: usize,
    ) -> Result<Vec<Picked>, KernelError> {
        if !self.on() {
            return Err(KernelError::Device(
                self.shared.why.lock().clone().unwrap_or_default(),
            ));
        }
        let started = Instant::now();
        let d = self.kernel.dimension();
        let mut flat = Vec::with_capacity(batch.len() * d);
        let mut masks: Vec<&Arc<Mask>> = Vec::new();
        let mut mask_of_query = Vec::with_capacity(batch.len());
        for &i in batch {
            let q = &queries[i];
            flat.extend_from_slice(&q.vector);
            let m = match masks.iter().position(|m| Arc::ptr_eq(m, &q.mask)) {
                Some(m) => m,
                None => {
                    masks.push(&q.mask);
                    masks.len() - 1
                }
            };
            mask_of_query.push(m as u32);
        }
        let mask_refs: Vec<&Mask> = masks.iter().map(|m| m.as_ref()).collect();
        let segments = self.kernel.select(&SelectBatch {
            queries: &flat,
            masks: &mask_refs,
            mask_of_query: &mask_of_query,
            per_segment,
            key: self.key,
        })?;
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.shared
            .batched_queries
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.gpu_batch_size.observe(batch.len() as f64);
            m.gpu_kernel_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let per_query = segments.len() / batch.len().max(1);
        let (element, key) = (self.kernel.element(), self.key);
        Ok(batch
            .iter()
            .zip(segments.chunks(per_query.max(1)))
            .map(|(&i, segs)| {
                let q = &queries[i];
                let norm = q.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                let error = key_error(element, key, d, norm, self.max_norm);
                pick(segs, q.k, margin(q.cpu_slack, error))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
