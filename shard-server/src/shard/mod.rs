//! A shard: durable points (storage), the HNSW graph (index), the in-memory state, and the two
//! background threads that connect them: the committer (group commit + fsync, the only writer)
//! and the indexer (moves acknowledged points into the graph). Blocking work runs on those
//! threads or on the read pool's threads, never on the async executor.

mod f16_kernels;
mod payload_index;
pub mod planner;
mod read_pool;
mod saved_graph;
pub mod scoring;
mod state;
pub mod value_graphs;
pub mod vectors;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use roaring::RoaringBitmap;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::index::VectorIndex;
use crate::metrics::Metrics;
use crate::model::{
    check_batch_len, next_version, normalize, CollectionConfig, Metric, Point, PointId, MAX_LIMIT,
    MAX_PAYLOAD_BYTES,
};
use crate::storage::{encode_entry, LogPage, Record, Storage};
use payload_index::renumber_slots;
use planner::{CostModel, GraphPart, Plan, PlanInput};
use read_pool::{ReadPool, Rejected};
use scoring::{graph_budget, rescore};
use state::State;
use value_graphs::{ValueGraphPolicy, ValueGraphs};

/// Operational limits and sizes of a shard.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    pub data_dir: PathBuf,
    /// Name of this shard in metrics (e.g. `docs-0`).
    pub shard_name: String,
    pub max_batch_points: usize,
    pub max_batch_bytes: usize,
    /// Searches executing at once (also usearch thread slots).
    pub search_threads: usize,
    /// Requests allowed to wait for a search slot or the committer before RESOURCE_EXHAUSTED.
    pub max_queued_requests: usize,
    /// Filters matching at most this many points are always answered by an exact scan; above
    /// it the planner compares the estimated costs of the plans (`planner.rs`).
    pub exact_scan_threshold: u64,
    /// The planner's cost estimates.
    pub cost_model: CostModel,
    /// Which keyword values get a graph of their own (`value_graphs.rs`).
    pub value_graphs: ValueGraphPolicy,
    pub indexer_threads: usize,
    pub cache_bytes: u64,
    /// Operation-log entries kept for replicas to catch up from.
    pub wal_retention: u64,
    /// Hash partitions of the collection (for per-partition fingerprints and copies).
    pub partitions: u32,
    /// Back the graph with transparent huge pages where the kernel allows (huge_pages.rs).
    pub huge_pages: bool,
    /// How often the graph is saved for the next start (saved_graph.rs) while points keep
    /// arriving; `None`: only when the shard closes.
    pub graph_save_interval: Option<Duration>,
    /// Slots of replaced or deleted points kept before they are compacted away: compaction
    /// runs when there are at least this many and at least half as many as live points.
    pub compact_min_dead_slots: u64,
}

impl ShardOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ShardOptions {
            data_dir: data_dir.into(),
            shard_name: "0".into(),
            max_batch_points: 10_000,
            max_batch_bytes: 64 * 1024 * 1024,
            search_threads: cores,
            max_queued_requests: 1024,
            exact_scan_threshold: 1024,
            cost_model: CostModel::default(),
            value_graphs: ValueGraphPolicy::default(),
            indexer_threads: cores,
            cache_bytes: 64 * 1024 * 1024,
            wal_retention: 100_000,
            partitions: 256,
            huge_pages: true,
            graph_save_interval: Some(Duration::from_secs(300)),
            compact_min_dead_slots: 10_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub ef: Option<usize>,
    pub exact: bool,
    pub with_payload: bool,
    pub with_vector: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    pub version: u64,
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub sequence: u64,
    pub affected: u64,
    pub version: u64,
}

pub enum DeleteTarget {
    Ids(Vec<PointId>),
    Filter(Filter),
}

#[derive(Clone, Debug)]
pub struct ShardInfo {
    pub points: u64,
    pub pending_points: u64,
    /// Slots of replaced or deleted points awaiting compaction.
    pub dead_slots: u64,
    /// Reads waiting for a read thread.
    pub queued_reads: u64,
    pub wal_sequence: u64,
    pub index_memory_bytes: u64,
    /// Value graphs held (`value_graphs.rs`), the points they hold and their memory (also
    /// counted in `index_memory_bytes`).
    pub value_graphs: u64,
    pub value_graph_points: u64,
    pub ready: bool,
}

type Payload = Map<String, Value>;
/// A validated point waiting for the committer (which fills in the record's version).
type PreparedPoint = (PointId, Record, Payload);
/// One write of a batch as the committer plans it: a point, or a tombstone (no payload).
type PlannedWrite = (PointId, Record, Option<Payload>);

enum WriteOp {
    Upsert(Vec<PreparedPoint>),
    Delete(DeleteTarget),
}

struct CommitJob {
    op: WriteOp,
    version: u64,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

pub struct Shard {
    config: CollectionConfig,
    options: ShardOptions,
    storage: Storage,
    index: VectorIndex,
    value_graphs: ValueGraphs,
    state: RwLock<State>,
    metrics: Arc<Metrics>,
    commit_tx: Mutex<Option<SyncSender<CommitJob>>>,
    reads: ReadPool,
    wal_sequence: AtomicU64,
    ready: AtomicBool,
    stopping: AtomicBool,
    indexer_wake: (Mutex<()>, Condvar),
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shard {
    /// Opens (or creates) the shard in `options.data_dir`, loads every stored point, replays the
    /// operation log past the last applied entry, and starts the committer and the indexer.
    /// The graph is rebuilt in the background; until then searches scan exactly.
    pub fn open(
        config: CollectionConfig,
        options: ShardOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Shard>> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            Error::internal(format!(
                "cannot create data dir {}: {e}",
                options.data_dir.display()
            ))
        })?;
        let storage = Storage::open(&options.data_dir, options.cache_bytes)?;
        match storage.stored_config()? {
            Some(stored) => check_same_collection(&stored, &config)?,
            None => storage.store_config(&config)?,
        }
        let threads = options.search_threads + options.indexer_threads + 2;
        let index = VectorIndex::new(&config, threads)?;
        let mut state = State::new(
            config.dimension,
            vectors::Precision::for_collection(config.metric, config.quantization),
            &config.indexed_fields,
        );
        for item in storage.scan() {
            let (id, record) = item?;
            apply_record(&mut state, id, &record);
        }
        let applied = storage.applied_seq()?;
        let mut replayed = 0;
        for item in storage.log_after(applied) {
            let (seq, entries) = item?;
            let winners: Vec<(PointId, Record)> = entries
                .into_iter()
                .filter(|(id, r)| state.wins(id, r.version))
                .collect();
            storage.apply(seq, &winners)?;
            for (id, record) in winners {
                apply_record(&mut state, id, &record);
            }
            replayed += 1;
        }
        storage.flush()?;
        let in_graph = reuse_saved_graph(&options.data_dir, &config, &index, &mut state)?;
        let wal_sequence = storage.last_log_seq()?.max(applied);
        tracing::info!(
            points = state.live_len(),
            replayed,
            wal_sequence,
            "shard loaded"
        );
        // Versions the shard assigns must stay above every stored one, even if the clock
        // stepped back across the restart.
        let initial_version = state.by_id.values().map(|e| e.version).max().unwrap_or(0);
        let (tx, rx) = mpsc::sync_channel(options.max_queued_requests);
        let value_graphs = ValueGraphs::new(&config, options.value_graphs, threads);
        let shard = Arc::new(Shard {
            reads: ReadPool::start(options.search_threads, options.max_queued_requests)
                .map_err(|e| Error::internal(format!("cannot start read threads: {e}")))?,
            ready: AtomicBool::new(state.pending.is_empty()),
            state: RwLock::new(state),
            config,
            options,
            storage,
            index,
            value_graphs,
            metrics,
            commit_tx: Mutex::new(Some(tx)),
            wal_sequence: AtomicU64::new(wal_sequence),
            stopping: AtomicBool::new(false),
            indexer_wake: (Mutex::new(()), Condvar::new()),
            threads: Mutex::new(Vec::new()),
        });
        shard.metrics.graph_points_loaded.set(in_graph.len() as i64);
        let committer = {
            let shard = shard.clone();
            std::thread::Builder::new()
                .name("committer".into())
                .spawn(move || shard.run_committer(rx, initial_version))
        };
        let indexer = {
            let shard = shard.clone();
            std::thread::Builder::new()
                .name("indexer".into())
                .spawn(move || shard.run_indexer(in_graph))
        };
        let spawned = [committer, indexer]
            .into_iter()
            .collect::<std::io::Result<Vec<_>>>();
        *shard.threads.lock() =
            spawned.map_err(|e| Error::internal(format!("cannot start shard threads: {e}")))?;
        Ok(shard)
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    pub fn options(&self) -> &ShardOptions {
        &self.options
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Points whose graph node came from the saved graph at open (0: the graph was rebuilt).
    pub fn graph_points_loaded(&self) -> u64 {
        self.metrics.graph_points_loaded.get() as u64
    }

    /// Ready once every stored point is in the graph after start-up.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn info(&self) -> ShardInfo {
        let (points, pending_points, dead_slots) = {
            let st = self.state.read();
            (st.live_len(), st.pending.len(), st.dead_slots())
        };
        let (value_graphs, value_graph_points, value_graph_bytes) = self.value_graphs.stats();
        ShardInfo {
            points,
            pending_points,
            dead_slots,
            queued_reads: self.reads.queued() as u64,
            wal_sequence: self.wal_sequence.load(Ordering::Acquire),
            index_memory_bytes: (self.index.memory_bytes() + value_graph_bytes) as u64,
            value_graphs: value_graphs as u64,
            value_graph_points,
            ready: self.is_ready(),
        }
    }

    /// Stops the background threads after the committer has drained every queued write, then
    /// fsyncs. Safe to call more than once.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.commit_tx.lock().take();
        self.indexer_wake.1.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            let _ = t.join();
        }
        self.reads.close();
        if let Err(e) = self.storage.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    // ---- writes -------------------------------------------------------------------------

    /// Validates every point first (nothing is written when any is bad), then commits the batch
    /// durably. `version` 0 lets the shard assign one.
    pub async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome> {
        let started = Instant::now();
        let prepared = self.prepare_upsert(points)?;
        let outcome = self.submit(WriteOp::Upsert(prepared), version).await;
        self.metrics
            .upsert_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    pub async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome> {
        match &target {
            DeleteTarget::Ids(ids) => {
                self.check_batch_len(ids.len())?;
                ids.iter().try_for_each(PointId::validate)?;
            }
            DeleteTarget::Filter(f) => {
                f.check(&self.config)?;
                if f.must.is_empty() && f.should.is_empty() && f.must_not.is_empty() {
                    return Err(Error::invalid(
                        "delete filter has no conditions and would delete every point; \
                         name the points or give at least one condition",
                    ));
                }
            }
        }
        self.submit(WriteOp::Delete(target), version).await
    }

    fn check_batch_len(&self, n: usize) -> Result<()> {
        check_batch_len(n, self.options.max_batch_points)
    }

    fn prepare_upsert(&self, points: Vec<Point>) -> Result<Vec<PreparedPoint>> {
        self.check_batch_len(points.len())?;
        let mut bytes = 0usize;
        let mut prepared = Vec::with_capacity(points.len());
        for (i, p) in points.into_iter().enumerate() {
            p.id.validate()
                .map_err(|e| Error::invalid(format!("points[{i}]: {e}")))?;
            self.config
                .check_vector("vector", &p.vector)
                .map_err(|e| Error::invalid(format!("points[{i}] (id {}): {e}", p.id)))?;
            let payload =
                serde_json::to_vec(&p.payload).map_err(|e| Error::internal(e.to_string()))?;
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(Error::invalid(format!(
                    "points[{i}] (id {}): payload has {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
                    p.id,
                    payload.len()
                )));
            }
            bytes += payload.len() + p.vector.len() * 4;
            if bytes > self.options.max_batch_bytes {
                return Err(Error::too_large(format!(
                    "batch exceeds {} bytes of vectors and payloads",
                    self.options.max_batch_bytes
                )));
            }
            let mut vector = p.vector;
            if self.config.metric == Metric::Cosine {
                normalize(&mut vector);
            }
            prepared.push((
                p.id,
                Record {
                    version: 0,
                    vector: Some(vector),
                    payload,
                },
                p.payload,
            ));
        }
        // The same id twice in one batch: the later one is what the client meant.
        let mut seen = std::collections::HashSet::new();
        let mut deduped: Vec<_> = prepared
            .into_iter()
            .rev()
            .filter(|(id, _, _)| seen.insert(id.clone()))
            .collect();
        deduped.reverse();
        Ok(deduped)
    }

    async fn submit(&self, op: WriteOp, version: u64) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        {
            let tx = self.commit_tx.lock();
            let tx = tx
                .as_ref()
                .ok_or_else(|| Error::unavailable("shard is shutting down"))?;
            tx.try_send(CommitJob { op, version, reply })
                .map_err(|e| match e {
                    TrySendError::Full(_) => Error::exhausted(format!(
                        "write queue is full ({} batches waiting); retry with backoff",
                        self.options.max_queued_requests
                    )),
                    TrySendError::Disconnected(_) => Error::unavailable("shard is shutting down"),
                })?;
        }
        answer
            .await
            .map_err(|_| Error::unavailable("shard stopped before the write committed"))?
    }

    /// The committer: takes every queued batch, writes them all, fsyncs once (group commit),
    /// makes them visible, then acknowledges. Exits when the queue is closed and drained.
    fn run_committer(self: Arc<Self>, rx: Receiver<CommitJob>, initial_version: u64) {
        let mut last_version = initial_version;
        let mut seq = self.wal_sequence.load(Ordering::Acquire);
        let mut carried: Option<CommitJob> = None;
        while let Some(first) = carried.take().or_else(|| rx.recv().ok()) {
            let mut group = vec![first];
            while group.len() < 256 {
                match rx.try_recv() {
                    // A delete by filter must see every earlier write, so it starts a group.
                    Ok(job) if matches!(job.op, WriteOp::Delete(DeleteTarget::Filter(_))) => {
                        carried = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let first_seq = seq;
            let result = self.commit_group(&mut group, &mut seq, &mut last_version);
            match result {
                Ok(applied) => {
                    self.wal_sequence.store(seq, Ordering::Release);
                    for (job, outcome) in group.into_iter().zip(applied) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                    self.indexer_wake.1.notify_one();
                    // Trim in steps (an eighth of the retention, at most 1024 entries) so
                    // that not every group pays for a range delete.
                    let step = (self.options.wal_retention / 8).clamp(1, 1024);
                    if seq / step != first_seq / step && seq > self.options.wal_retention {
                        if let Err(e) = self
                            .storage
                            .trim_log_through(seq - self.options.wal_retention)
                        {
                            tracing::warn!(error = %e, "trimming the operation log failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "commit failed");
                    let message = e.to_string();
                    for job in group {
                        let _ = job.reply.send(Err(Error::internal(message.clone())));
                    }
                }
            }
        }
    }

    fn commit_group(
        &self,
        group: &mut [CommitJob],
        seq: &mut u64,
        last_version: &mut u64,
    ) -> Result<Vec<WriteOutcome>> {
        let mut planned = Vec::with_capacity(group.len());
        {
            // Decide winners against current state plus earlier batches of this group.
            let st = self.state.read();
            // id → (version, live) as decided by earlier batches of this group.
            let mut overlay: std::collections::HashMap<PointId, (u64, bool)> =
                std::collections::HashMap::new();
            for job in group.iter_mut() {
                let version = if job.version == 0 {
                    next_version(last_version)
                } else {
                    job.version
                };
                *last_version = (*last_version).max(version);
                let entries: Vec<PlannedWrite> = match &mut job.op {
                    WriteOp::Upsert(points) => std::mem::take(points)
                        .into_iter()
                        .map(|(id, mut record, payload)| {
                            record.version = version;
                            (id, record, Some(payload))
                        })
                        .collect(),
                    WriteOp::Delete(target) => {
                        let ids: Vec<PointId> = match target {
                            DeleteTarget::Ids(ids) => std::mem::take(ids),
                            DeleteTarget::Filter(f) => st
                                .payloads
                                .evaluate(f, &st.live)
                                .iter()
                                .map(|s| st.slot_ids[s as usize].clone())
                                .collect(),
                        };
                        ids.into_iter()
                            .map(|id| {
                                (
                                    id,
                                    Record {
                                        version,
                                        vector: None,
                                        payload: Vec::new(),
                                    },
                                    None,
                                )
                            })
                            .collect()
                    }
                };
                *seq += 1;
                let log: Vec<(PointId, Record)> = entries
                    .iter()
                    .map(|(id, r, _)| (id.clone(), r.clone()))
                    .collect();
                let mut winners = Vec::new();
                for (id, record, payload) in entries {
                    let current = overlay
                        .get(&id)
                        .copied()
                        .or_else(|| st.by_id.get(&id).map(|e| (e.version, e.slot.is_some())));
                    if current.is_none_or(|(v, _)| version > v) {
                        let live_before = current.is_some_and(|(_, live)| live);
                        overlay.insert(id.clone(), (version, record.vector.is_some()));
                        winners.push((id, record, payload, live_before));
                    }
                }
                self.storage.write(
                    *seq,
                    &encode_entry(&log),
                    &winners
                        .iter()
                        .map(|(i, r, _, _)| (i.clone(), r.clone()))
                        .collect::<Vec<_>>(),
                )?;
                planned.push((*seq, version, winners));
            }
        }
        self.storage.flush()?;
        let mut st = self.state.write();
        Ok(planned
            .into_iter()
            .map(|(sequence, version, winners)| {
                let mut affected = 0;
                for (id, record, payload, live_before) in winners {
                    match (&record.vector, &payload) {
                        (Some(v), Some(p)) => {
                            st.apply(id, version, Some((v, p)));
                            affected += 1;
                        }
                        _ => {
                            affected += u64::from(live_before);
                            st.apply(id, version, None);
                        }
                    }
                }
                WriteOutcome {
                    sequence,
                    affected,
                    version,
                }
            })
            .collect())
    }

    // ---- indexing -----------------------------------------------------------------------

    /// The indexer: moves pending slots into the graph in batches, in parallel, removes
    /// slots of replaced or deleted points, and saves the graph for the next start when it
    /// has caught up (every `graph_save_interval` at most) and when the shard closes. It is
    /// the graph's only writer, so the graph holds still while it saves. `in_graph`: the
    /// slots the graph holds.
    fn run_indexer(self: Arc<Self>, mut in_graph: RoaringBitmap) {
        // Small batches: the graph is locked against searches while a batch goes in.
        const BATCH: usize = 64;
        let mut huge_pages = crate::huge_pages::Advisor::new(self.options.huge_pages);
        // Changes since the graph was last saved (or loaded), and when that was.
        let mut unsaved = 0usize;
        let mut saved_at = (!in_graph.is_empty()).then(Instant::now);
        // The state the value graphs were last found current for (see `sync_value_graphs`).
        let mut value_graphs_current_at = None;
        while !self.stopping.load(Ordering::Acquire) {
            let (work, dead) = {
                let mut st = self.state.write();
                let dead = std::mem::take(&mut st.dead_indexed);
                let work: Vec<(u64, Vec<f32>)> = st
                    .pending
                    .iter()
                    .take(BATCH)
                    .map(|s| (u64::from(s), st.vector(s)))
                    .collect();
                (work, dead)
            };
            if !dead.is_empty() {
                let gone: RoaringBitmap = dead.iter().copied().collect();
                match self.retire_from_graph(&gone, &mut in_graph) {
                    Ok(()) => unsaved += dead.len(),
                    Err(e) => {
                        tracing::warn!(error = %e, "removing retired slots from the graph failed")
                    }
                }
            }
            if work.is_empty() {
                if !self.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        points = self.index.len(),
                        from_saved_graph = self.graph_points_loaded(),
                        "index ready"
                    );
                }
                huge_pages.caught_up();
                if self.sync_value_graphs(&mut value_graphs_current_at) {
                    continue;
                }
                if self.compaction_due() {
                    self.compact_slots(&mut in_graph);
                    unsaved += 1;
                    continue;
                }
                let due = self.options.graph_save_interval.is_some_and(|every| {
                    unsaved > 0 && saved_at.is_none_or(|at| at.elapsed() >= every)
                });
                if due {
                    self.save_graph(&in_graph);
                    (unsaved, saved_at) = (0, Some(Instant::now()));
                    continue;
                }
                let mut guard = self.indexer_wake.0.lock();
                self.indexer_wake
                    .1
                    .wait_for(&mut guard, Duration::from_millis(200));
                continue;
            }
            if let Err(e) = self.index.add_batch(&work, self.options.indexer_threads) {
                tracing::error!(error = %e, "indexing failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            // The graph may have grown into new arenas (and the copies into new memory).
            huge_pages.points_added(work.len());
            in_graph.extend(work.iter().map(|(key, _)| *key as u32));
            unsaved += work.len();
            let mut st = self.state.write();
            for (key, _) in &work {
                let slot = *key as u32;
                st.pending.remove(slot);
                if !st.live.contains(slot) {
                    st.dead_indexed.push(slot);
                }
            }
        }
        if unsaved > 0 {
            self.save_graph(&in_graph);
        }
    }

    /// One step of bringing the value graphs in step with the points (after the full graph,
    /// which read-your-writes and readiness depend on); true when it did some work.
    /// `current_at` is the state (slot count, live count) at which they were last current:
    /// nothing is planned again until a write changes it.
    fn sync_value_graphs(&self, current_at: &mut Option<(usize, u64)>) -> bool {
        let now = {
            let st = self.state.read();
            (st.slot_ids.len(), st.live_len())
        };
        if *current_at == Some(now) {
            return false;
        }
        const BATCH: usize = 256;
        match self
            .value_graphs
            .sync(&self.state, BATCH, self.options.indexer_threads)
        {
            Ok(step) if step.is_idle() => {
                *current_at = Some(now);
                false
            }
            Ok(step) => {
                if step.created + step.dropped > 0 {
                    let (graphs, points, bytes) = self.value_graphs.stats();
                    tracing::info!(
                        created = step.created,
                        dropped = step.dropped,
                        graphs,
                        points,
                        bytes,
                        "value graphs changed"
                    );
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating the value graphs failed; retrying later");
                *current_at = Some(now);
                false
            }
        }
    }

    /// True when replaced and deleted points' leftovers (see `State::compact`) reach the
    /// compaction threshold.
    fn compaction_due(&self) -> bool {
        let st = self.state.read();
        st.dead_slots() >= self.options.compact_min_dead_slots.max(st.live_len() / 2)
    }

    /// Drops the slots of replaced and deleted points and renumbers the live ones densely,
    /// in the state and in the graph at once: memory then follows the live points, not
    /// every write ever made. Searches and writes wait meanwhile (measured in
    /// docs/benchmarks.md); runs on the indexer thread, between batches, so that no slot is
    /// on its way into the graph.
    fn compact_slots(&self, in_graph: &mut RoaringBitmap) {
        let started = Instant::now();
        let mut st = self.state.write();
        let dead = std::mem::take(&mut st.dead_indexed);
        // Graph keys of points no longer live: those just retired, and any left by a failed
        // removal earlier.
        let mut gone: RoaringBitmap = dead.iter().copied().collect();
        gone |= &*in_graph - &st.live;
        if let Err(e) = self.retire_from_graph(&gone, in_graph) {
            tracing::warn!(error = %e, "removing retired slots from the graph failed; not compacting");
            st.dead_indexed = dead;
            return;
        }
        let map = st.compaction_map();
        let moves: Vec<(u64, u64)> = in_graph
            .iter()
            .map(|s| (u64::from(s), u64::from(map[s as usize])))
            .filter(|(from, to)| from != to)
            .collect();
        let renumbered = renumber_slots(in_graph, &map);
        let (dropped, live) = (st.dead_slots(), st.live_len());
        let graph_started = Instant::now();
        if let Err(e) = self.index.rekey_downward(&moves) {
            // Keys may be half renamed: start the graph again; searches scan what is pending.
            tracing::error!(error = %e, "renumbering the graph failed; rebuilding it");
            if let Err(e) = self.index.clear() {
                tracing::error!(error = %e, "clearing the graph failed");
            }
            st.pending = st.live.clone();
            in_graph.clear();
        } else {
            *in_graph = renumbered;
        }
        self.value_graphs.compact(&map);
        let graph_ms = graph_started.elapsed().as_millis() as u64;
        st.compact(&map);
        drop(st);
        self.metrics.slot_compactions.inc();
        tracing::info!(
            dropped,
            live,
            renamed = moves.len(),
            graph_ms,
            ms = started.elapsed().as_millis() as u64,
            "slots of replaced and deleted points compacted"
        );
    }

    /// Removes `gone` from the graph and from `in_graph` (the slots the graph holds).
    fn retire_from_graph(&self, gone: &RoaringBitmap, in_graph: &mut RoaringBitmap) -> Result<()> {
        let keys: Vec<u64> = gone.iter().map(u64::from).collect();
        self.index.remove_batch(&keys)?;
        *in_graph -= gone;
        Ok(())
    }

    /// Saves the graph and what each of its keys holds (see `saved_graph`). A failure costs
    /// only time at the next start (what the saved graph lacks is indexed again).
    fn save_graph(&self, in_graph: &RoaringBitmap) {
        let started = Instant::now();
        let keys: Vec<saved_graph::SavedKey> = {
            let st = self.state.read();
            in_graph
                .iter()
                .map(|slot| {
                    let id = st.slot_ids[slot as usize].clone();
                    let version = st
                        .by_id
                        .get(&id)
                        .filter(|e| e.slot == Some(slot))
                        .map_or(0, |e| e.version);
                    saved_graph::SavedKey {
                        key: u64::from(slot),
                        id,
                        version,
                    }
                })
                .collect()
        };
        let params = saved_graph::GraphParams::of(&self.config);
        match saved_graph::save(&self.options.data_dir, &params, &self.index, &keys) {
            Ok(bytes) => {
                self.metrics.graph_saves.inc();
                let now_s = crate::model::unix_millis() / 1000;
                self.metrics.graph_saved_timestamp.set(now_s as i64);
                tracing::info!(
                    keys = keys.len(),
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "graph saved"
                )
            }
            Err(e) => tracing::warn!(
                error = %e,
                "saving the graph failed; the next start indexes what the saved graph lacks"
            ),
        }
    }

    // ---- reads --------------------------------------------------------------------------

    /// Checks a search before it queues: vector, limit, ef and filter.
    pub fn validate_search(&self, req: &mut SearchRequest) -> Result<()> {
        self.config.check_vector("query vector", &req.vector)?;
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(Error::invalid(format!(
                "limit is {}, it must be between 1 and {MAX_LIMIT}",
                req.limit
            )));
        }
        if let Some(ef) = req.ef {
            if ef > MAX_LIMIT {
                return Err(Error::invalid(format!(
                    "ef is {ef}, the limit is {MAX_LIMIT}"
                )));
            }
        }
        if let Some(f) = &req.filter {
            f.check(&self.config)?;
        }
        if self.config.metric == Metric::Cosine {
            normalize(&mut req.vector);
        }
        Ok(())
    }

    /// Runs blocking read work on the read threads, refusing (RESOURCE_EXHAUSTED) when
    /// `max_queued_requests` reads are already waiting rather than queueing without bound.
    async fn run_read<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shard = self.clone();
        let answer = self
            .reads
            .submit(move || work(&shard))
            .map_err(|e| match e {
                Rejected::Full { capacity } => Error::exhausted(format!(
                    "{capacity} reads are already waiting, the limit is {capacity} \
                 (--max-queued-requests); retry with backoff"
                )),
                Rejected::Closed => Error::unavailable("shard is shutting down"),
            })?;
        answer
            .await
            .map_err(|_| Error::internal("read failed: its thread panicked"))?
    }

    pub async fn search(self: &Arc<Self>, mut req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.validate_search(&mut req)?;
        let started = Instant::now();
        let result = self
            .run_read(move |shard| shard.search_blocking(&req))
            .await;
        self.metrics
            .search_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub async fn search_batch(
        self: &Arc<Self>,
        mut reqs: Vec<SearchRequest>,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        if reqs.is_empty() || reqs.len() > self.options.max_batch_points {
            return Err(Error::invalid(format!(
                "batch has {} searches, it must have between 1 and {}",
                reqs.len(),
                self.options.max_batch_points
            )));
        }
        for (i, r) in reqs.iter_mut().enumerate() {
            self.validate_search(r)
                .map_err(|e| Error::invalid(format!("searches[{i}]: {e}")))?;
        }
        let started = Instant::now();
        // A batch is spread over the read threads: on one thread its searches would wait for
        // each other while the other threads idle (routers forward a client's batch to each
        // shard as one batch).
        let chunks = batch_chunks(reqs, self.options.search_threads);
        let answers = futures::future::join_all(chunks.into_iter().map(|chunk| {
            self.run_read(move |shard| {
                chunk
                    .iter()
                    .map(|r| shard.search_blocking(r))
                    .collect::<Result<Vec<_>>>()
            })
        }))
        .await;
        let result = answers
            .into_iter()
            .collect::<Result<Vec<Vec<_>>>>()
            .map(|parts| parts.into_iter().flatten().collect());
        self.metrics
            .search_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The search itself, on a validated request (query already normalised for cosine).
    pub fn search_blocking(&self, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        let metric = self.config.metric;
        // Exact plans over rounded in-memory copies keep every near-tie of the k-th score;
        // those are re-ranked below with the stored vectors, so exact means exact.
        let mut recheck = false;
        let hits: Vec<ScoredPoint> = {
            let st = self.state.read();
            let allowed = req
                .filter
                .as_ref()
                .map(|f| st.payloads.evaluate(f, &st.live));
            let candidates = allowed.as_ref().unwrap_or(&st.live);
            let ef = req.ef.unwrap_or(self.config.hnsw.ef_search);
            let oversample = self.config.quantization.oversample();
            let selectivity = candidates.len() as f64 / st.live_len().max(1) as f64;
            let budget = graph_budget(req.limit, ef, oversample, selectivity);
            let cover = match (&req.filter, &allowed) {
                (Some(f), Some(a)) if !req.exact => self.value_graphs.cover(f, a),
                _ => None,
            };
            let value_graph_breadth =
                value_graph_breadth(req.limit, ef, self.options.value_graphs.breadth_factor);
            let choice = self.options.cost_model.choose(&PlanInput {
                exact_requested: req.exact,
                dimension: self.config.dimension,
                matching: candidates.len(),
                matching_span: match (candidates.min(), candidates.max()) {
                    (Some(lo), Some(hi)) => u64::from(hi - lo) + 1,
                    _ => 0,
                },
                live: st.live_len(),
                graph_breadth: budget.breadth,
                value_graph_breadth,
                exact_scan_threshold: self.options.exact_scan_threshold,
                cover: cover.as_ref().map(|c| {
                    let parts = c.graphs.iter().map(|p| GraphPart {
                        members: p.members,
                        allowed: p.allowed,
                    });
                    (parts.collect(), c.lag.len())
                }),
            });
            self.metrics.count_plan(choice.plan.name());
            tracing::debug!(
                plan = choice.plan.name(),
                matching = candidates.len(),
                live = st.live_len(),
                exact_cost_us = choice.exact_cost,
                graph_cost_us = choice.graph_cost,
                value_graph_cost_us = ?choice.value_graph_cost,
                "search planned"
            );
            let top = match choice.plan {
                Plan::Exact => {
                    let slots: Vec<u32> = candidates.iter().collect();
                    let scored = st.score_all(metric, &req.vector, &slots);
                    match st.copy_score_error() {
                        None => scoring::top_k(metric, scored, req.limit),
                        Some(error) => {
                            recheck = true;
                            scoring::near_top_k(metric, scored, req.limit, 2.0 * error)
                        }
                    }
                }
                Plan::ValueGraphs => {
                    let (Some(cover), Some(allowed)) = (&cover, &allowed) else {
                        return Err(Error::internal("value-graph plan without a cover"));
                    };
                    let accept = |key: u64| allowed.contains(key as u32);
                    let mut slots: Vec<u32> = Vec::new();
                    for part in &cover.graphs {
                        // A predicate only when the filter excludes some of the graph's points.
                        let predicate: Option<&dyn Fn(u64) -> bool> =
                            (part.allowed < part.members).then_some(&accept);
                        let found =
                            part.graph
                                .index
                                .search(&req.vector, value_graph_breadth, predicate)?;
                        slots.extend(
                            found
                                .into_iter()
                                .map(|(k, _)| k as u32)
                                .filter(|s| allowed.contains(*s)),
                        );
                    }
                    // Every candidate is rescored: a value graph's points are alike, and the
                    // quantized distances alone rank them poorly (measured: recall 0.86 with
                    // limit × 2 rescored, docs/benchmarks.md); rescoring costs ~35 ns each.
                    slots.extend(cover.lag.iter());
                    slots.sort_unstable();
                    slots.dedup();
                    scoring::top_k(metric, st.score_all(metric, &req.vector, &slots), req.limit)
                }
                Plan::Graph => {
                    let accept = |key: u64| allowed.as_ref().is_none_or(|a| a.contains(key as u32));
                    let graph = match &allowed {
                        None => self.index.search(&req.vector, budget.breadth, None)?,
                        Some(_) => self
                            .index
                            .search(&req.vector, budget.breadth, Some(&accept))?,
                    };
                    // Replaced or deleted points may linger in the graph until the indexer
                    // removes them; pending points are not in it yet and are scanned exactly.
                    let from_graph = graph
                        .into_iter()
                        .map(|(k, _)| k as u32)
                        .filter(|s| st.live.contains(*s));
                    let pending = &st.pending & candidates;
                    rescore(metric, from_graph, pending.iter(), budget, req.limit, |s| {
                        st.score(metric, &req.vector, s)
                    })
                }
            };
            top.into_iter()
                .map(|(slot, score)| {
                    let id = st.slot_ids[slot as usize].clone();
                    let version = st.by_id.get(&id).map_or(0, |e| e.version);
                    ScoredPoint {
                        id,
                        score,
                        version,
                        payload: None,
                        vector: None,
                    }
                })
                .collect()
        };
        if !(recheck || req.with_payload || req.with_vector) {
            return Ok(hits);
        }
        // Stored records are read after the state lock is released, once per hit: the same
        // read serves the exact re-ranking and the payload and vector asked for.
        let mut read = Vec::with_capacity(hits.len());
        for hit in hits {
            let record = self.storage.get(&hit.id)?;
            read.push((hit, record));
        }
        if recheck {
            read = rerank_with_stored_vectors(metric, read, &req.vector, req.limit);
        }
        read.into_iter()
            .map(|(mut hit, record)| {
                fill_from_record(
                    &mut hit,
                    record.unwrap_or_default(),
                    req.with_payload,
                    req.with_vector,
                )?;
                Ok(hit)
            })
            .collect()
    }

    /// Live points among `ids`, in the order asked; missing and deleted ids are left out.
    pub async fn get(
        self: &Arc<Self>,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        self.check_batch_len(ids.len())?;
        ids.iter().try_for_each(PointId::validate)?;
        self.run_read(move |shard| {
            let found: Vec<ScoredPoint> = {
                let st = shard.state.read();
                ids.into_iter()
                    .filter_map(|id| {
                        let e = *st.by_id.get(&id)?;
                        e.slot?;
                        Some(ScoredPoint {
                            id,
                            score: 0.0,
                            version: e.version,
                            payload: None,
                            vector: None,
                        })
                    })
                    .collect()
            };
            found
                .into_iter()
                .map(|mut hit| {
                    if with_payload || with_vector {
                        let record = shard.storage.get(&hit.id)?.unwrap_or_default();
                        fill_from_record(&mut hit, record, with_payload, with_vector)?;
                    }
                    Ok(hit)
                })
                .collect()
        })
        .await
    }

    /// Largest version this replica holds: where catching up from a peer starts.
    pub fn max_version(&self) -> u64 {
        self.state
            .read()
            .by_id
            .values()
            .map(|e| e.version)
            .max()
            .unwrap_or(0)
    }

    /// A page of the operation log for a peer (see `Storage::read_log_page`).
    pub async fn read_log(
        self: &Arc<Self>,
        after_version: u64,
        after_sequence: u64,
        max: usize,
    ) -> Result<LogPage> {
        self.run_read(move |shard| {
            shard
                .storage
                .read_log_page(after_version, after_sequence, max)
        })
        .await
    }

    /// A page of stored records (live and tombstones) for a peer copying partitions:
    /// `partitions` is (partition count, wanted partitions), `None` for every record.
    pub async fn scan(
        self: &Arc<Self>,
        after: Vec<u8>,
        max: usize,
        partitions: Option<(u32, Vec<u32>)>,
    ) -> Result<crate::storage::ScanPage> {
        self.run_read(move |shard| {
            let wanted: Option<(u32, std::collections::HashSet<u32>)> =
                partitions.map(|(n, list)| (n, list.into_iter().collect()));
            shard.storage.scan_page(&after, max, |key| {
                wanted.as_ref().is_none_or(|(n, set)| {
                    set.contains(&vecshard_proto::shard_map::partition_of(key, *n))
                })
            })
        })
        .await
    }

    /// Count and checksum of live points per partition, and the log sequence they reflect.
    pub async fn partition_stats(
        self: &Arc<Self>,
        partition_count: u32,
    ) -> Result<(Vec<vecshard_proto::v1::PartitionStat>, u64)> {
        self.run_read(move |shard| {
            let st = shard.state.read();
            let sequence = shard.wal_sequence.load(Ordering::Acquire);
            let keys: Vec<(Vec<u8>, u64)> = st
                .by_id
                .iter()
                .filter(|(_, e)| e.slot.is_some())
                .map(|(id, e)| (id.to_bytes(), e.version))
                .collect();
            drop(st);
            let stats = crate::partitions::partition_stats(
                keys.iter().map(|(k, v)| (k.as_slice(), *v)),
                partition_count,
            );
            Ok((stats, sequence))
        })
        .await
    }

    /// Applies records copied from a peer, each with its own version. Records that would lose
    /// last-writer-wins are skipped before they reach the log, so repeated catch-up rounds
    /// over the same window write nothing. Returns how many records were applied.
    pub async fn apply_replicated(&self, records: Vec<(PointId, Record)>) -> Result<u64> {
        let mut by_version: std::collections::BTreeMap<u64, (Vec<PreparedPoint>, Vec<PointId>)> =
            Default::default();
        {
            let st = self.state.read();
            for (id, record) in records {
                if !st.wins(&id, record.version) {
                    continue;
                }
                let group = by_version.entry(record.version).or_default();
                match record.vector {
                    Some(_) => {
                        let payload: Payload =
                            serde_json::from_slice(&record.payload).unwrap_or_default();
                        group.0.push((
                            id,
                            Record {
                                version: 0,
                                ..record
                            },
                            payload,
                        ));
                    }
                    None => group.1.push(id),
                }
            }
        }
        let mut applied = 0;
        for (version, (points, tombstones)) in by_version {
            if !points.is_empty() {
                applied += self
                    .submit(WriteOp::Upsert(points), version)
                    .await?
                    .affected;
            }
            if !tombstones.is_empty() {
                let n = tombstones.len() as u64;
                self.submit(WriteOp::Delete(DeleteTarget::Ids(tombstones)), version)
                    .await?;
                applied += n;
            }
        }
        Ok(applied)
    }

    pub async fn count(self: &Arc<Self>, filter: Option<Filter>) -> Result<u64> {
        if let Some(f) = &filter {
            f.check(&self.config)?;
        }
        self.run_read(move |shard| {
            let st = shard.state.read();
            Ok(match &filter {
                Some(f) => st.payloads.evaluate(f, &st.live).len(),
                None => st.live_len(),
            })
        })
        .await
    }
}

/// Splits a batch, in order, into at most `threads` runs of near-equal length (at least one
/// search each), one per read thread.
fn batch_chunks<T>(items: Vec<T>, threads: usize) -> Vec<Vec<T>> {
    let parts = threads.clamp(1, items.len().max(1));
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut items = items.into_iter();
    (0..parts)
        .map(|p| items.by_ref().take(base + usize::from(p < extra)).collect())
        .filter(|c: &Vec<T>| !c.is_empty())
        .collect()
}

/// Breadth of a value-graph walk: `factor` times the asked breadth (and the limit). The points
/// of one value are close to each other (one topic, one tenant), and the walk needs a wider
/// beam to rank a crowded neighbourhood: measured on wordnet-minilm-384 (7,964 `noun.plant`
/// points), recall@10 0.86 at breadth 64, 0.94 at 128, 0.97 at 192 (docs/benchmarks.md).
/// Every candidate is rescored, so the quantization adds no ranking error on top.
fn value_graph_breadth(limit: usize, ef: usize, factor: usize) -> usize {
    ef.max(limit).saturating_mul(factor.max(1))
}

/// Scores the hits again with their vectors as stored (full precision) and keeps the best
/// `limit`. A hit whose point was deleted meanwhile is dropped.
fn rerank_with_stored_vectors(
    metric: Metric,
    read: Vec<(ScoredPoint, Option<Record>)>,
    query: &[f32],
    limit: usize,
) -> Vec<(ScoredPoint, Option<Record>)> {
    let mut rescored: Vec<(ScoredPoint, Option<Record>)> = read
        .into_iter()
        .filter_map(|(mut hit, record)| {
            hit.score = scoring::score(metric, query, record.as_ref()?.vector.as_ref()?);
            Some((hit, record))
        })
        .collect();
    // Stable: equal scores keep the order of the in-memory ranking.
    rescored.sort_by(|(a, _), (b, _)| scoring::better(metric, &(0, a.score), &(0, b.score)));
    rescored.truncate(limit);
    rescored
}

/// Sets a hit's payload and vector, as asked, from its stored record: the vector exactly as
/// it was written, not the in-memory copy, which may be f16 (see `vectors::Precision`).
fn fill_from_record(
    hit: &mut ScoredPoint,
    record: Record,
    payload: bool,
    vector: bool,
) -> Result<()> {
    if payload {
        hit.payload = Some(if record.payload.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice(&record.payload).map_err(|e| {
                Error::internal(format!("stored payload of {} is unreadable: {e}", hit.id))
            })?
        });
    }
    if vector {
        hit.vector = record.vector;
    }
    Ok(())
}

/// Loads the graph saved in `dir` (when there is a usable one) into `index`, with its keys
/// renamed to the slots of `state`, and takes the slots it covers out of `pending`; returns
/// them. On any failure the index is left empty and every slot pending: the graph is then
/// rebuilt, as with no saved graph (an error only when even the empty index cannot be made).
fn reuse_saved_graph(
    dir: &std::path::Path,
    config: &CollectionConfig,
    index: &VectorIndex,
    state: &mut State,
) -> Result<RoaringBitmap> {
    let started = Instant::now();
    let attempt = || -> Result<Option<saved_graph::Reuse>> {
        let params = saved_graph::GraphParams::of(config);
        let Some(saved) = saved_graph::load(dir, &params, index)? else {
            return Ok(None);
        };
        let reuse = saved_graph::plan_reuse(&saved, |id| state.by_id.get(id).copied());
        index.remove_batch(&reuse.stale)?;
        index.rekey(&reuse.moves)?;
        Ok(Some(reuse))
    };
    match attempt() {
        Ok(Some(reuse)) => {
            let in_graph: RoaringBitmap = reuse.moves.iter().map(|(_, s)| *s as u32).collect();
            state.pending -= &in_graph;
            tracing::info!(
                reused = reuse.moves.len(),
                stale = reuse.stale.len(),
                to_index = state.pending.len(),
                ms = started.elapsed().as_millis() as u64,
                "saved graph loaded"
            );
            Ok(in_graph)
        }
        Ok(None) => Ok(RoaringBitmap::new()),
        Err(e) => {
            tracing::warn!(error = %e, "the saved graph could not be used; rebuilding it");
            // Half-renamed keys must not reach a search.
            index.clear()?;
            Ok(RoaringBitmap::new())
        }
    }
}

fn apply_record(state: &mut State, id: PointId, record: &Record) {
    match &record.vector {
        Some(v) => {
            let payload: Map<String, Value> =
                serde_json::from_slice(&record.payload).unwrap_or_default();
            state.apply(id, record.version, Some((v, &payload)));
        }
        None => state.apply(id, record.version, None),
    }
}

fn check_same_collection(stored: &CollectionConfig, asked: &CollectionConfig) -> Result<()> {
    let same = stored.name == asked.name
        && stored.dimension == asked.dimension
        && stored.metric == asked.metric;
    if same {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "data dir holds collection {:?} (dimension {}, metric {}), not {:?} (dimension {}, metric {}); \
             use another --data-dir",
            stored.name,
            stored.dimension,
            stored.metric.as_str(),
            asked.name,
            asked.dimension,
            asked.metric.as_str()
        )))
    }
}

#[cfg(test)]
mod tests;
