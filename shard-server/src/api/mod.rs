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
    async fn search(&self, req: SearchRequest) -> Result<Vec<ScoredPoint>>;
    async fn search_batch(&self, reqs: Vec<SearchRequest>) -> Result<Vec<Vec<ScoredPoint>>>;
    async fn count(&self, filter: Option<Filter>) -> Result<u64>;
    async fn info(&self) -> Result<pb::CollectionInfo>;
    /// Replication source: records above a version watermark (shards only).
    async fn read_log(&self, _request: pb::ReadLogRequest) -> Result<pb::ReadLogResponse> {
        Err(Error::invalid(
            "ReadLog is served by shard replicas, not by the router",
        ))
    }
}

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
        m.index_memory_bytes.set(info.index_memory_bytes as i64);
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
    async fn search(&self, req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        Shard::search(self, req).await
    }
    async fn search_batch(&self, reqs: Vec<SearchRequest>) -> Result<Vec<Vec<ScoredPoint>>> {
        Shard::search_batch(self, reqs).await
    }
    async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        Shard::count(self, filter).await
    }
    async fn info(&self) -> Result<pb::CollectionInfo> {
        Ok(shard_info(self))
    }
    async fn read_log(&self, r: pb::ReadLogRequest) -> Result<pb::ReadLogResponse> {
        let max = (r.max_records as usize).clamp(1, 10_000);
        let page = Shard::read_log(self, r.after_version, r.after_sequence, max).await?;
        let (more, truncated, next_sequence) = (page.more, page.truncated, page.next_sequence);
        let records = page
            .records
            .into_iter()
            .map(|(id, record)| pb::LogRecord {
                id: Some(grpc::id_to_pb(id)),
                version: record.version,
                deleted: record.vector.is_none(),
                vector: record.vector.unwrap_or_default(),
                payload_json: String::from_utf8_lossy(&record.payload).into_owned(),
            })
            .collect();
        Ok(pb::ReadLogResponse {
            records,
            more,
            truncated,
            next_sequence,
        })
    }
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
