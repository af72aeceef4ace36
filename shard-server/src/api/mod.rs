//! Transport layers. Handlers are thin: validate → convert → call the shard → convert back.
//! Both transports share the conversions and the request accounting defined here.

pub mod grpc;
pub mod http;

use std::sync::Arc;

use serde_json::{Map, Value};
use vecshard_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::metrics::{Metrics, ShardLabels};
use crate::model::{Point, PointId};
use crate::shard::{DeleteTarget, ScoredPoint, SearchRequest, Shard, WriteOutcome};

/// How a read may be answered: partially (some shards missing) or not, and by when.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// With every replica of a shard down, answer from the others instead of failing.
    pub allow_partial: bool,
    /// The caller's deadline (gRPC `grpc-timeout`, HTTP `?timeout=`); calls to shards get the
    /// time that remains.
    pub timeout: Option<std::time::Duration>,
}

/// Results of a batch of searches, one list per query, and the shards missing from them.
#[derive(Debug, Default)]
pub struct SearchResults {
    pub results: Vec<Vec<ScoredPoint>>,
    /// Shards that could not answer (only with `allow_partial`).
    pub unavailable_shards: Vec<String>,
}

/// What the transports serve. A shard implements it; a router in front of many shards can
/// implement the same operations, so clients never need to know which one they talk to.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The collection served.
    fn collection(&self) -> &str;
    fn metrics(&self) -> &Metrics;
    /// Largest request body or message accepted.
    fn max_request_bytes(&self) -> usize;
    /// Ready to serve searches with full recall (`/readyz`, gRPC health).
    fn is_ready(&self) -> bool;
    /// Updates state-mirroring gauges just before a scrape.
    fn refresh_gauges(&self) {}
    /// Releases resources after the listeners have drained (blocking).
    fn close(&self) {}
    async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome>;
    async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome>;
    async fn get(
        &self,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>>;
    async fn search_batch(
        &self,
        reqs: Vec<SearchRequest>,
        options: ReadOptions,
    ) -> Result<SearchResults>;
    async fn count(&self, filter: Option<Filter>) -> Result<u64>;
    async fn info(&self) -> Result<pb::CollectionInfo>;
    /// Replication source: records above a version watermark (shards only).
    async fn read_log(&self, _request: pb::ReadLogRequest) -> Result<pb::ReadLogResponse> {
        Err(replica_only("ReadLog"))
    }
    /// Replication source: stored records of some partitions (shards only).
    async fn scan_points(&self, _request: pb::ScanPointsRequest) -> Result<pb::ScanPointsResponse> {
        Err(replica_only("ScanPoints"))
    }
    /// Per-partition fingerprints (shards only).
    async fn partition_stats(&self, _partition_count: u32) -> Result<pb::PartitionStatsResponse> {
        Err(replica_only("PartitionStats"))
    }
    /// Replicas as this server sees them: a shard reports itself, a router every replica.
    async fn cluster(&self) -> Result<pb::ClusterStatus>;
}

fn replica_only(op: &str) -> Error {
    Error::invalid(format!(
        "{op} is served by shard replicas, not by the router"
    ))
}

/// Largest page a peer may ask for in one ReadLog or ScanPoints call.
const MAX_REPLICATION_PAGE: usize = 10_000;

#[tonic::async_trait]
impl Backend for Arc<Shard> {
    fn collection(&self) -> &str {
        &self.config().name
    }
    fn metrics(&self) -> &Metrics {
        Shard::metrics(self)
    }
    fn max_request_bytes(&self) -> usize {
        self.options().max_batch_bytes
    }
    fn is_ready(&self) -> bool {
        Shard::is_ready(self)
    }
    fn refresh_gauges(&self) {
        let info = Shard::info(self);
        let m = Shard::metrics(self);
        let labels = ShardLabels {
            collection: self.config().name.clone(),
            shard: self.options().shard_name.clone(),
        };
        m.points.get_or_create(&labels).set(info.points as i64);
        m.pending_points.set(info.pending_points as i64);
        m.dead_slots.set(info.dead_slots as i64);
        m.queued_reads.set(info.queued_reads as i64);
        m.index_memory_bytes.set(info.index_memory_bytes as i64);
        m.value_graphs.set(info.value_graphs as i64);
        m.value_graph_points.set(info.value_graph_points as i64);
        m.wal_sequence.set(info.wal_sequence as i64);
    }
    fn close(&self) {
        Shard::close(self)
    }
    async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome> {
        Shard::upsert(self, points, version).await
    }
    async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome> {
        Shard::delete(self, target, version).await
    }
    async fn get(
        &self,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        Shard::get(self, ids, with_vector, with_payload).await
    }
    async fn search_batch(
        &self,
        mut reqs: Vec<SearchRequest>,
        _options: ReadOptions,
    ) -> Result<SearchResults> {
        let results = if reqs.len() == 1 {
            let req = reqs.pop().expect("one search");
            vec![Shard::search(self, req).await?]
        } else {
            Shard::search_batch(self, reqs).await?
        };
        Ok(SearchResults {
            results,
            unavailable_shards: Vec::new(),
        })
    }
    async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        Shard::count(self, filter).await
    }
    async fn info(&self) -> Result<pb::CollectionInfo> {
        Ok(shard_info(self))
    }
    async fn read_log(&self, r: pb::ReadLogRequest) -> Result<pb::ReadLogResponse> {
        let max = (r.max_records as usize).clamp(1, MAX_REPLICATION_PAGE);
        let page = Shard::read_log(self, r.after_version, r.after_sequence, max).await?;
        Ok(pb::ReadLogResponse {
            records: page.records.into_iter().map(record_to_pb).collect(),
            more: page.more,
            truncated: page.truncated,
            next_sequence: page.next_sequence,
        })
    }
    async fn scan_points(&self, r: pb::ScanPointsRequest) -> Result<pb::ScanPointsResponse> {
        let max = (r.max_records as usize).clamp(1, MAX_REPLICATION_PAGE);
        let partitions = if r.partitions.is_empty() {
            None
        } else if r.partition_count == 0 {
            return Err(Error::invalid(
                "partition_count must be set when partitions are listed",
            ));
        } else {
            Some((r.partition_count, r.partitions))
        };
        let page = Shard::scan(self, r.after, max, partitions).await?;
        Ok(pb::ScanPointsResponse {
            records: page.records.into_iter().map(record_to_pb).collect(),
            next_after: page.next_after,
            done: page.done,
        })
    }
    async fn partition_stats(&self, partition_count: u32) -> Result<pb::PartitionStatsResponse> {
        let n = if partition_count == 0 {
            self.options().partitions
        } else {
            partition_count
        };
        let (partitions, wal_sequence) = Shard::partition_stats(self, n).await?;
        Ok(pb::PartitionStatsResponse {
            partitions,
            wal_sequence,
        })
    }
    async fn cluster(&self) -> Result<pb::ClusterStatus> {
        let stats = Backend::partition_stats(self, 0).await?;
        let info = shard_info(self);
        Ok(pb::ClusterStatus {
            collection: info.name.clone(),
            map_version: 0,
            partitions: self.options().partitions,
            shards: vec![pb::ShardStatus {
                name: self.options().shard_name.clone(),
                replicas: vec![pb::ReplicaStatus {
                    address: "self".into(),
                    reachable: true,
                    error: String::new(),
                    points: info.points,
                    wal_sequence: info.wal_sequence,
                    checksum: crate::partitions::total_checksum(&stats.partitions),
                    status: info.status,
                }],
                diverged_partitions: Vec::new(),
            }],
        })
    }
}

/// A stored record as replication sends it.
fn record_to_pb((id, record): (PointId, crate::storage::Record)) -> pb::LogRecord {
    pb::LogRecord {
        id: Some(grpc::id_to_pb(id)),
        version: record.version,
        deleted: record.vector.is_none(),
        vector: record.vector.unwrap_or_default(),
        payload_json: String::from_utf8_lossy(&record.payload).into_owned(),
    }
}

/// A replicated record as the shard applies it.
pub fn record_from_pb(r: pb::LogRecord) -> Result<(PointId, crate::storage::Record)> {
    let id = grpc::id_from_pb(r.id, "log record id")?;
    Ok((
        id,
        crate::storage::Record {
            version: r.version,
            vector: (!r.deleted).then_some(r.vector),
            payload: r.payload_json.into_bytes(),
        },
    ))
}

/// The collection's parameters and this shard's state.
fn shard_info(shard: &Shard) -> pb::CollectionInfo {
    let c = shard.config();
    let info = shard.info();
    let status = if !info.ready {
        "loading"
    } else if info.pending_points > 0 {
        "yellow"
    } else {
        "green"
    };
    pb::CollectionInfo {
        name: c.name.clone(),
        dimension: c.dimension as u32,
        metric: c.metric.as_str().into(),
        points: info.points,
        indexed_points: info.points.saturating_sub(info.pending_points),
        pending_points: info.pending_points,
        hnsw_m: c.hnsw.m as u32,
        hnsw_ef_construction: c.hnsw.ef_construction as u32,
        hnsw_ef_search: c.hnsw.ef_search as u32,
        quantization: c.quantization.as_str().into(),
        indexed_fields: c
            .indexed_fields
            .iter()
            .map(|f| pb::IndexedField {
                name: f.name.clone(),
                kind: f.kind.as_str().into(),
            })
            .collect(),
        status: status.into(),
        wal_sequence: info.wal_sequence,
        index_memory_bytes: info.index_memory_bytes,
    }
}

/// Answers NOT_FOUND unless `name` is the collection served (empty means it).
pub fn check_collection(backend: &dyn Backend, name: &str) -> Result<()> {
    let served = backend.collection();
    if name.is_empty() || name == served {
        Ok(())
    } else {
        Err(Error::not_found(format!(
            "collection {name:?} not found; this server serves {served:?}"
        )))
    }
}

/// A point id from JSON: an unsigned integer or a non-empty string.
pub fn id_from_json(value: &Value, path: &str) -> Result<PointId> {
    let id = match value {
        Value::Number(n) => n.as_u64().map(PointId::Num),
        Value::String(s) => Some(PointId::Str(s.clone())),
        _ => None,
    }
    .ok_or_else(|| {
        Error::invalid(format!(
            "{path} must be an unsigned integer or a string, got {value}"
        ))
    })?;
    id.validate()
        .map_err(|e| Error::invalid(format!("{path}: {e}")))?;
    Ok(id)
}

pub fn id_to_json(id: &PointId) -> Value {
    match id {
        PointId::Num(n) => Value::from(*n),
        PointId::Str(s) => Value::from(s.clone()),
    }
}

/// A payload from JSON text (gRPC): empty is `{}`, anything but an object is refused.
pub fn payload_from_text(text: &str, path: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid(format!("{path} must be a JSON object"))),
        Err(e) => Err(Error::invalid(format!("{path} is not valid JSON: {e}"))),
    }
}

/// Counts a finished request in `vecshard_requests_total{op,code}`.
pub fn observe<T>(metrics: &Metrics, op: &'static str, result: &Result<T>) {
    let code = match result {
        Ok(_) => "OK",
        Err(e) => e.code(),
    };
    metrics.count(op, code);
}
