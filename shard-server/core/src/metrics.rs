//! Prometheus metrics of a shard server. Names are part of vecshard's interface (DESIGN.md).
//! Gauges that mirror shard state are refreshed at scrape time by the caller of `render`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    pub plan: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub collection: String,
    pub shard: String,
}

pub struct Metrics {
    registry: Registry,
    pub search_duration: Histogram,
    pub upsert_duration: Histogram,
    pub requests: Family<RequestLabels, Counter>,
    pub points: Family<ShardLabels, Gauge>,
    pub pending_points: Gauge,
    pub queued_reads: Gauge,
    pub index_memory_bytes: Gauge,
    pub wal_sequence: Gauge,
    pub resident_memory_bytes: Gauge,
    pub gpu_available: Gauge,
    /// GPU search (vecshard-gpu): device memory held, queries per kernel batch, the time of a
    /// batch on the device, and searches answered on the GPU or sent back to the CPU.
    pub gpu_memory_bytes: Gauge,
    pub gpu_batch_size: Histogram,
    pub gpu_kernel_seconds: Histogram,
    pub gpu_search_results: Family<CacheLabels, Counter>,
    pub cache_lookups: Family<CacheLabels, Counter>,
    /// Router: reads sent to a second replica because the first was slower than its p95.
    pub hedged_reads: Counter,
    /// Router: searches answered without some shards (`allow_partial`).
    pub partial_results: Counter,
    /// Router: requests sent again after a shard refused their shard-map version.
    pub stale_map_retries: Counter,
    /// Replica: records copied from peers (log catch-up, partition copies, repairs).
    pub replicated_records: Counter,
    /// Slots of replaced or deleted points awaiting compaction.
    pub dead_slots: Gauge,
    pub slot_compactions: Counter,
    pub graph_saves: Counter,
    /// Unix time of the last successful graph save (0: none since start).
    pub graph_saved_timestamp: Gauge,
    /// Points whose graph node came from the saved graph at start (0: rebuilt).
    pub graph_points_loaded: Gauge,
    /// Searches by the plan that answered them (shard/planner.rs).
    pub search_plans: Family<PlanLabels, Counter>,
    /// Value graphs held and the points they hold (shard/value_graphs.rs).
    pub value_graphs: Gauge,
    pub value_graph_points: Gauge,
    /// Shard snapshots written by this replica: their duration, and the unix time of the last
    /// one that succeeded (0: none since the start).
    pub snapshot_seconds: Histogram,
    pub snapshot_last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 50 µs .. ~1.6 s: shard searches live in the sub-millisecond range.
        let search_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let upsert_duration = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        let requests = Family::<RequestLabels, Counter>::default();
        let points = Family::<ShardLabels, Gauge>::default();
        let pending_points = Gauge::default();
        let queued_reads = Gauge::default();
        let index_memory_bytes = Gauge::default();
        let wal_sequence = Gauge::default();
        let resident_memory_bytes = Gauge::default();
        let gpu_available = Gauge::default();
        let gpu_memory_bytes = Gauge::default();
        let gpu_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let gpu_kernel_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let gpu_search_results = Family::<CacheLabels, Counter>::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "vecshard_search_duration_seconds",
            "Search latency inside the server",
            search_duration.clone(),
        );
        registry.register(
            "vecshard_upsert_duration_seconds",
            "Upsert latency until durable",
            upsert_duration.clone(),
        );
        registry.register(
            "vecshard_requests",
            "Requests by operation and result code",
            requests.clone(),
        );
        registry.register("vecshard_points", "Live points", points.clone());
        registry.register(
            "vecshard_pending_points",
            "Points not yet in the HNSW graph (scanned exactly)",
            pending_points.clone(),
        );
        registry.register(
            "vecshard_queued_reads",
            "Searches and reads waiting for a read thread (saturation; refused past --max-queued-requests)",
            queued_reads.clone(),
        );
        registry.register(
            "vecshard_index_memory_bytes",
            "Memory of the HNSW index",
            index_memory_bytes.clone(),
        );
        registry.register(
            "vecshard_wal_sequence",
            "Last sequence number in the operation log",
            wal_sequence.clone(),
        );
        registry.register(
            "vecshard_process_resident_memory_bytes",
            "Resident memory of the server",
            resident_memory_bytes.clone(),
        );
        registry.register(
            "vecshard_gpu_available",
            "1 when exact and batched searches run on the GPU (--device), 0 on the CPU",
            gpu_available.clone(),
        );
        registry.register(
            "vecshard_gpu_memory_bytes",
            "GPU memory held by the device copy of the vectors and its work buffers",
            gpu_memory_bytes.clone(),
        );
        registry.register(
            "vecshard_gpu_batch_size",
            "Queries per GPU kernel batch (micro-batched singles and SearchBatch)",
            gpu_batch_size.clone(),
        );
        registry.register(
            "vecshard_gpu_kernel_seconds",
            "Time of one GPU batch: upload, GEMM, selection, download",
            gpu_kernel_seconds.clone(),
        );
        registry.register(
            "vecshard_gpu_searches",
            "Exact searches sent to the GPU by result: gpu, or cpu_fallback (GPU off or near-ties)",
            gpu_search_results.clone(),
        );
        registry.register(
            "vecshard_router_cache_lookups",
            "Router result-cache lookups by result (hit or miss)",
            cache_lookups.clone(),
        );
        let hedged_reads = Counter::default();
        let partial_results = Counter::default();
        let stale_map_retries = Counter::default();
        let replicated_records = Counter::default();
        registry.register(
            "vecshard_router_stale_map_retries",
            "Requests sent again after a shard refused their shard-map version (rebalancing)",
            stale_map_retries.clone(),
        );
        registry.register(
            "vecshard_router_hedged_reads",
            "Reads also sent to a second replica after the first exceeded the shard's p95",
            hedged_reads.clone(),
        );
        registry.register(
            "vecshard_router_partial_results",
            "Searches answered without some shards (allow_partial)",
            partial_results.clone(),
        );
        registry.register(
            "vecshard_replicated_records",
            "Records copied from peer replicas (log catch-up, partition copies, repairs)",
            replicated_records.clone(),
        );
        let dead_slots = Gauge::default();
        let slot_compactions = Counter::default();
        let graph_saves = Counter::default();
        let graph_saved_timestamp = Gauge::default();
        let graph_points_loaded = Gauge::default();
        registry.register(
            "vecshard_graph_points_loaded",
            "Points whose graph node came from the saved graph at start (0: the graph was rebuilt)",
            graph_points_loaded.clone(),
        );
        registry.register(
            "vecshard_dead_slots",
            "Slots of replaced or deleted points whose memory awaits compaction",
            dead_slots.clone(),
        );
        registry.register(
            "vecshard_slot_compactions",
            "Compactions of the slots of replaced and deleted points",
            slot_compactions.clone(),
        );
        registry.register(
            "vecshard_graph_saves",
            "Saves of the HNSW graph for the next start",
            graph_saves.clone(),
        );
        registry.register(
            "vecshard_graph_saved_timestamp_seconds",
            "Unix time of the last successful graph save (0: none since the start)",
            graph_saved_timestamp.clone(),
        );
        let search_plans = Family::<PlanLabels, Counter>::default();
        let value_graphs = Gauge::default();
        let value_graph_points = Gauge::default();
        registry.register(
            "vecshard_search_plans",
            "Searches by plan: exact (scan of the matching points), graph (the full HNSW graph), value_graph (the graphs of the filter's keyword values)",
            search_plans.clone(),
        );
        registry.register(
            "vecshard_value_graphs",
            "Graphs of frequent keyword values held for filtered search",
            value_graphs.clone(),
        );
        registry.register(
            "vecshard_value_graph_points",
            "Points held in all value graphs together",
            value_graph_points.clone(),
        );
        let snapshot_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 16));
        let snapshot_last_success = Gauge::default();
        registry.register(
            "vecshard_shard_snapshot_duration_seconds",
            "Time this replica took to write a shard snapshot",
            snapshot_seconds.clone(),
        );
        registry.register(
            "vecshard_snapshot_last_success_timestamp_seconds",
            "Unix time of the last shard snapshot this replica wrote (0: none since the start)",
            snapshot_last_success.clone(),
        );
        Metrics {
            snapshot_seconds,
            snapshot_last_success,
            search_plans,
            value_graphs,
            value_graph_points,
            dead_slots,
            slot_compactions,
            graph_saves,
            graph_saved_timestamp,
            graph_points_loaded,
            hedged_reads,
            partial_results,
            stale_map_retries,
            replicated_records,
            cache_lookups,
            registry,
            search_duration,
            upsert_duration,
            requests,
            points,
            pending_points,
            queued_reads,
            index_memory_bytes,
            wal_sequence,
            resident_memory_bytes,
            gpu_available,
            gpu_memory_bytes,
            gpu_batch_size,
            gpu_kernel_seconds,
            gpu_search_results,
        }
    }

    /// The counter of GPU searches with `result` (`gpu` or `cpu_fallback`).
    pub fn gpu_searches(&self, result: &'static str) -> Counter {
        self.gpu_search_results
            .get_or_create(&CacheLabels { result })
            .clone()
    }

    pub fn count(&self, op: &'static str, code: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { op, code })
            .inc();
    }

    pub fn count_plan(&self, plan: &'static str) {
        self.search_plans.get_or_create(&PlanLabels { plan }).inc();
    }

    pub fn count_cache(&self, hits: usize, misses: usize) {
        self.cache_lookups
            .get_or_create(&CacheLabels { result: "hit" })
            .inc_by(hits as u64);
        self.cache_lookups
            .get_or_create(&CacheLabels { result: "miss" })
            .inc_by(misses as u64);
    }

    pub fn render(&self) -> String {
        self.resident_memory_bytes
            .set(resident_memory_bytes() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
