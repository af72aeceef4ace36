//! Transport layers. Handlers are thin: convert (`vecshard_core::convert`) → call the backend
//! → convert back; errors leave through `status`. A backend is a shard (`shard_backend.rs`) or
//! a router (`router_backend.rs`): clients never need to know which one they talk to.

pub mod grpc;
pub mod grpc_qdrant;
pub mod http;
mod http_collections;
mod http_payload;
mod http_points;
pub mod internal;
pub mod qdrant;
mod qdrant_pb;
mod router_backend;
mod shard_backend;
pub mod status;

use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::metrics::Metrics;
use vecshard_core::model::{Metric, Point, PointId};
use vecshard_core::request::{
    DeleteTarget, ReadOptions, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest,
    SearchResults, WriteOutcome,
};
use vecshard_proto::v1 as pb;

/// What the transports serve. A shard implements it; a router in front of many shards can
/// implement the same operations, so clients never need to know which one they talk to.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The collection served.
    fn collection(&self) -> &str;
    /// Shards behind this server: a router's, 1 for a shard.
    fn shard_count(&self) -> usize {
        1
    }
    /// Its similarity measure (how scores compare: Qdrant's `score_threshold`, MMR).
    fn metric(&self) -> Metric;
    fn metrics(&self) -> &Metrics;
    /// Largest request body or message accepted.
    fn max_request_bytes(&self) -> usize;
    /// Ready to serve searches with full recall (`/readyz`, gRPC health).
    fn is_ready(&self) -> bool;
    /// Updates state-mirroring gauges just before a scrape.
    fn refresh_gauges(&self) {}
    /// Releases resources after the listeners have drained (blocking).
    fn close(&self) {}
    /// `map_version`: the shard map a router routed the write with (0: not routed), checked
    /// by a shard against its partition ownership (a router ignores it).
    async fn upsert(
        &self,
        points: Vec<Point>,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome>;
    async fn delete(
        &self,
        target: DeleteTarget,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome>;
    /// A read routed with shard map `map_version` (0: not routed) may be answered here. A shard
    /// checks before and after each routed read, so a read that overlapped an ownership change
    /// is refused and retried by its router rather than answered from a mix of two views.
    fn check_route(&self, _map_version: u64) -> Result<()> {
        Ok(())
    }
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
    /// A page of points in id order (`ScrollRequest`).
    async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage>;
    async fn info(&self) -> Result<pb::CollectionInfo>;
    /// The replica-to-replica service this backend serves beside `Points` (a shard's
    /// `PointsInternal`); a router serves none.
    fn internal(&self) -> Option<internal::InternalApi> {
        None
    }
    /// Replicas as this server sees them: a shard reports itself, a router every replica.
    async fn cluster(&self) -> Result<pb::ClusterStatus>;
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

/// Runs a read routed with `map_version` between two `check_route`s.
pub async fn routed_read<T>(
    backend: &dyn Backend,
    map_version: u64,
    read: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    backend.check_route(map_version)?;
    let answer = read.await?;
    backend.check_route(map_version)?;
    Ok(answer)
}

/// The shard-map version a router sent with a request (`vecshard-map-version`); 0 if none.
pub fn map_version_of(metadata: &tonic::metadata::MetadataMap) -> u64 {
    metadata
        .get(vecshard_proto::MAP_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Counts a finished request in `vecshard_requests_total{op,code}`.
pub fn observe<T>(metrics: &Metrics, op: &'static str, result: &Result<T>) {
    let code = match result {
        Ok(_) => "OK",
        Err(e) => e.code(),
    };
    metrics.count(op, code);
}
