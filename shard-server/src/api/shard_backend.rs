//! A shard as a backend of the transports: each call goes to the engine's `Shard`, and the
//! shard's state becomes `CollectionInfo` and its Prometheus gauges here.

use std::sync::Arc;

use vecshard_core::error::Result;
use vecshard_core::filter::Filter;
use vecshard_core::metrics::{Metrics, ShardLabels};
use vecshard_core::model::{Metric, Point, PointId};
use vecshard_core::partitions::total_checksum;
use vecshard_core::request::{
    DeleteTarget, ReadOptions, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest,
    SearchResults, WriteOutcome,
};
use vecshard_engine::shard::Shard;
use vecshard_proto::v1 as pb;

use super::internal::InternalApi;
use super::Backend;

#[tonic::async_trait]
impl Backend for Arc<Shard> {
    fn collection(&self) -> &str {
        &self.config().name
    }
    fn metric(&self) -> Metric {
        self.config().metric
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
    async fn upsert(
        &self,
        points: Vec<Point>,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome> {
        Shard::upsert_routed(self, points, version, map_version).await
    }
    async fn delete(
        &self,
        target: DeleteTarget,
        version: u64,
        map_version: u64,
    ) -> Result<WriteOutcome> {
        Shard::delete_routed(self, target, version, map_version).await
    }
    fn check_route(&self, map_version: u64) -> Result<()> {
        Shard::check_route(self, map_version)
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
    async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage> {
        Shard::scroll(self, req).await
    }
    async fn info(&self) -> Result<pb::CollectionInfo> {
        Ok(shard_info(self))
    }
    fn internal(&self) -> Option<InternalApi> {
        Some(InternalApi::new(self.clone()))
    }
    async fn cluster(&self) -> Result<pb::ClusterStatus> {
        let (partitions, _) = Shard::partition_stats(self, self.options().partitions).await?;
        let info = shard_info(self);
        Ok(pb::ClusterStatus {
            collection: info.name.clone(),
            map_version: self.ownership().map_version(),
            partitions: self.options().partitions,
            shards: vec![pb::ShardStatus {
                name: self.options().shard_name.clone(),
                replicas: vec![pb::ReplicaStatus {
                    address: "self".into(),
                    reachable: true,
                    error: String::new(),
                    points: info.points,
                    wal_sequence: info.wal_sequence,
                    checksum: total_checksum(&partitions),
                    status: info.status,
                    map_version: info.map_version,
                }],
                diverged_partitions: Vec::new(),
            }],
            moves: Vec::new(),
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
        map_version: shard.ownership().map_version(),
        readable_partitions: shard.ownership().lists().readable.clone(),
        writable_partitions: shard.ownership().lists().writable.clone(),
        max_version: shard.max_version(),
        device: shard.device_description(),
        index_type: shard.index_kind().as_str().into(),
    }
}
