//! A shard: durable points (storage), the HNSW graph (index), the in-memory state, and the two
//! background threads that connect them: the committer (group commit + fsync, the only writer)
//! and the indexer (moves acknowledged points into the graph). Blocking work runs on those
//! threads or on the read pool's threads, never on the async executor.

mod commit;
mod f16_kernels;
mod fence;
mod gpu;
mod indexer;
pub mod ownership;
mod payload_index;
mod peer;
pub mod planner;
mod read_pool;
mod saved_graph;
pub mod scoring;
mod search;
mod snapshot;
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

use crate::index::VectorIndex;
use crate::storage::{encode_entry, LogPage, Record, Storage};
use ownership::OwnershipView;
use payload_index::renumber_slots;
use planner::{CostModel, GraphPart, Plan, PlanInput};
use read_pool::{ReadPool, Rejected};
use scoring::{graph_budget, rescore};
use state::State;
use value_graphs::{ValueGraphPolicy, ValueGraphs};
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::metrics::Metrics;
use vecshard_core::model::{
    check_batch_len, next_version, normalize, CollectionConfig, IndexKind, Metric, Point, PointId,
    MAX_LIMIT, MAX_PAYLOAD_BYTES,
};
use vecshard_core::request::{
    DeleteTarget, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest, WriteOutcome,
};
use vecshard_gpu::{DeviceChoice, DeviceOptions};

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
    /// Where exact searches run (`gpu.rs`): the CPU, the GPU (the shard refuses to open
    /// without one), or the GPU when one is usable.
    pub device: DeviceChoice,
    /// The device copy's memory limit (0: 90% of the device's free memory), largest batch
    /// and batching window.
    pub device_options: DeviceOptions,
    /// Exact scans of fewer points stay on the CPU (a device round trip costs more).
    pub gpu_min_points: u64,
    /// `SearchBatch` calls of at least this many searches are answered exactly on the GPU.
    pub gpu_min_batch: usize,
    /// Tests: a CPU stand-in of the device with segments of this many slots.
    #[doc(hidden)]
    pub device_stand_in: Option<usize>,
    /// `Hnsw`: searches walk a graph the indexer keeps current; `Flat`: no graph (and no value
    /// graphs): every search is an exact scan. A data dir may switch between the two across
    /// restarts: a graph is then built from scratch, or no longer kept.
    pub index: IndexKind,
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
            device: DeviceChoice::Cpu,
            device_options: DeviceOptions {
                memory_limit: 0,
                ..DeviceOptions::default()
            },
            gpu_min_points: 8_192,
            gpu_min_batch: 16,
            device_stand_in: None,
            index: IndexKind::Hnsw,
        }
    }
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
    /// Drop every stored record of the partitions the ownership view no longer makes
    /// writable (after `set_ownership`).
    Purge,
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
    /// Which partitions this replica reads and writes (`ownership.rs`); the committer drops
    /// writes of partitions that are not writable.
    ownership: RwLock<Arc<OwnershipView>>,
    /// Held shared by every write from admission to acknowledgement, exclusively by an
    /// ownership change: once `set_ownership` returns, no write admitted under the old view
    /// is still in flight (the fence).
    write_gate: tokio::sync::RwLock<()>,
    ready: AtomicBool,
    /// False while a replica with peers has not yet caught up with them (`mark_catching_up`,
    /// `mark_caught_up`): it then is not ready, so that the operator keeps it out of the
    /// replicas that serve reads and count toward the write consistency.
    caught_up: AtomicBool,
    stopping: AtomicBool,
    /// Set by `save_graph_now`: the indexer saves the graph at its next idle moment.
    graph_save_requested: AtomicBool,
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
        let ownership = Arc::new(OwnershipView::load(&options.data_dir, options.partitions)?);
        let threads = options.search_threads + options.indexer_threads + 2;
        let index = VectorIndex::new(&config, threads)?;
        let mut state = State::new(
            config.dimension,
            vectors::Precision::for_collection(config.metric, config.quantization),
            &config.indexed_fields,
        );
        if options.index == IndexKind::Flat {
            state.without_graph();
        }
        state.set_visibility(&ownership);
        // Records of partitions given away whose drop did not complete before a crash.
        let mut leftovers = Vec::new();
        for item in storage.scan() {
            let (id, record) = item?;
            if ownership.can_write(&id) {
                apply_record(&mut state, id, &record);
            } else {
                leftovers.push(id);
            }
        }
        storage.remove(&leftovers)?;
        let applied = storage.applied_seq()?;
        let mut replayed = 0;
        for item in storage.log_after(applied) {
            let (seq, entries) = item?;
            let winners: Vec<(PointId, Record)> = entries
                .into_iter()
                .filter(|(id, r)| ownership.can_write(id) && state.wins(id, r.version))
                .collect();
            storage.apply(seq, &winners)?;
            for (id, record) in winners {
                apply_record(&mut state, id, &record);
            }
            replayed += 1;
        }
        storage.flush()?;
        let in_graph = match options.index {
            IndexKind::Hnsw => reuse_saved_graph(&options.data_dir, &config, &index, &mut state)?,
            // A graph saved while the collection was `hnsw` stays on disk, unused, for a switch
            // back (which checks every key of it against the points, as after any restart).
            IndexKind::Flat => RoaringBitmap::new(),
        };
        gpu::attach_device(&config, &options, &metrics, &mut state)?;
        let wal_sequence = storage.last_log_seq()?.max(applied);
        tracing::info!(
            points = state.live_len(),
            dropped = leftovers.len(),
            map_version = ownership.map_version(),
            replayed,
            wal_sequence,
            "shard loaded"
        );
        // Versions the shard assigns must stay above every stored one, even if the clock
        // stepped back across the restart.
        let initial_version = state.by_id.values().map(|e| e.version).max().unwrap_or(0);
        let (tx, rx) = mpsc::sync_channel(options.max_queued_requests);
        let value_graph_policy = ValueGraphPolicy {
            enabled: options.value_graphs.enabled && options.index == IndexKind::Hnsw,
            ..options.value_graphs
        };
        let value_graphs = ValueGraphs::new(&config, value_graph_policy, threads);
        let shard = Arc::new(Shard {
            reads: ReadPool::start(options.search_threads, options.max_queued_requests)
                .map_err(|e| Error::internal(format!("cannot start read threads: {e}")))?,
            ready: AtomicBool::new(state.pending.is_empty()),
            caught_up: AtomicBool::new(true),
            state: RwLock::new(state),
            config,
            options,
            storage,
            index,
            value_graphs,
            metrics,
            commit_tx: Mutex::new(Some(tx)),
            wal_sequence: AtomicU64::new(wal_sequence),
            ownership: RwLock::new(ownership),
            write_gate: tokio::sync::RwLock::new(()),
            stopping: AtomicBool::new(false),
            graph_save_requested: AtomicBool::new(false),
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
    /// Ready to serve reads with full recall: the graph holds every stored point and, for a
    /// replica with peers, it has caught up with them once since it started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.caught_up.load(Ordering::Acquire)
    }

    /// A replica with peers: not ready until `mark_caught_up`.
    pub fn mark_catching_up(&self) {
        self.caught_up.store(false, Ordering::Release);
    }

    pub fn mark_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!(shard = %self.options.shard_name, "caught up with the peers");
        }
    }

    /// Graph or flat (see `ShardOptions::index`).
    pub fn index_kind(&self) -> IndexKind {
        self.options.index
    }

    /// False for a flat index: no graph is built, saved or searched.
    fn keeps_graph(&self) -> bool {
        self.options.index == IndexKind::Hnsw
    }

    pub fn info(&self) -> ShardInfo {
        let (points, pending_points, dead_slots) = {
            let st = self.state.read();
            (st.visible_len(), st.pending.len(), st.dead_slots())
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
mod gpu_tests;
#[cfg(test)]
mod tests;
