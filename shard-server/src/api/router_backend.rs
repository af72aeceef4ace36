//! A router as a backend of the transports: every call goes to the router crate's `Router`,
//! which fans it out to the shards. A router serves no `PointsInternal`.

use vecshard_core::error::Result;
use vecshard_core::filter::Filter;
use vecshard_core::metrics::Metrics;
use vecshard_core::model::{Metric, Point, PointId};
use vecshard_core::request::{
    DeleteTarget, ReadOptions, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest,
    SearchResults, WriteOutcome,
};
use vecshard_proto::v1 as pb;
use vecshard_router::Router;

use super::Backend;

#[tonic::async_trait]
impl Backend for Router {
    fn collection(&self) -> &str {
        Router::collection(self)
    }
    fn metric(&self) -> Metric {
        Router::metric(self)
    }
    fn shard_count(&self) -> usize {
        Router::shard_count(self)
    }
    fn metrics(&self) -> &Metrics {
        Router::metrics(self)
    }
    fn max_request_bytes(&self) -> usize {
        Router::max_request_bytes(self)
    }
    /// A router holds no data: it is ready once it has a shard map and the collection's
    /// parameters, which `Router::open` waits for.
    fn is_ready(&self) -> bool {
        true
    }
    async fn upsert(&self, points: Vec<Point>, version: u64, _: u64) -> Result<WriteOutcome> {
        Router::upsert(self, points, version).await
    }
    async fn delete(&self, target: DeleteTarget, version: u64, _: u64) -> Result<WriteOutcome> {
        Router::delete(self, target, version).await
    }
    async fn get(
        &self,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        Router::get(self, ids, with_vector, with_payload).await
    }
    async fn search_batch(
        &self,
        reqs: Vec<SearchRequest>,
        options: ReadOptions,
    ) -> Result<SearchResults> {
        Router::search_batch(self, reqs, options).await
    }
    async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        Router::count(self, filter).await
    }
    async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage> {
        Router::scroll(self, req).await
    }
    async fn info(&self) -> Result<pb::CollectionInfo> {
        Router::info(self).await
    }
    async fn cluster(&self) -> Result<pb::ClusterStatus> {
        Router::cluster(self).await
    }
}
