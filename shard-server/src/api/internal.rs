//! gRPC transport of `vecshard.v1.PointsInternal`: what replicas of a shard call on each other
//! (log catch-up, partition copies, fingerprints for repair and the cluster view). Served by
//! shard servers only (`Backend::internal`); a router never serves it, so a client that can
//! reach a router cannot copy a shard through it.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vecshard_core::convert::record_to_pb;
use vecshard_core::error::{Error, Result};
use vecshard_engine::shard::Shard;
use vecshard_proto::shard_map::Ownership;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_internal_server::PointsInternal;

use super::status::grpc_status;
use super::{check_collection, observe, Backend};

/// Largest page a peer may ask for in one ReadLog or ScanPoints call.
const MAX_REPLICATION_PAGE: usize = 10_000;

#[derive(Clone)]
pub struct InternalApi {
    shard: Arc<Shard>,
    /// One snapshot at a time per replica; a second waits for the first.
    snapshots: Arc<tokio::sync::Mutex<()>>,
}

impl InternalApi {
    pub fn new(shard: Arc<Shard>) -> Self {
        InternalApi {
            shard,
            snapshots: Arc::default(),
        }
    }

    fn finish<T>(&self, op: &'static str, result: Result<T>) -> Result<Response<T>, Status> {
        observe(self.shard.metrics(), op, &result);
        result.map(Response::new).map_err(grpc_status)
    }

    async fn read_log(&self, r: pb::ReadLogRequest) -> Result<pb::ReadLogResponse> {
        let max = (r.max_records as usize).clamp(1, MAX_REPLICATION_PAGE);
        let page = self
            .shard
            .read_log(r.after_version, r.after_sequence, max)
            .await?;
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
        let page = self.shard.scan(r.after, max, partitions).await?;
        Ok(pb::ScanPointsResponse {
            records: page.records.into_iter().map(record_to_pb).collect(),
            next_after: page.next_after,
            done: page.done,
        })
    }

    async fn partition_stats(&self, partition_count: u32) -> Result<pb::PartitionStatsResponse> {
        let n = if partition_count == 0 {
            self.shard.options().partitions
        } else {
            partition_count
        };
        let (partitions, wal_sequence) = self.shard.partition_stats(n).await?;
        Ok(pb::PartitionStatsResponse {
            partitions,
            wal_sequence,
        })
    }

    async fn set_ownership(&self, r: pb::SetOwnershipRequest) -> Result<pb::SetOwnershipResponse> {
        let o = r
            .ownership
            .ok_or_else(|| Error::invalid("ownership is required"))?;
        let (now, dropped) = self.shard.set_ownership(ownership_from_pb(o)).await?;
        Ok(pb::SetOwnershipResponse {
            ownership: Some(ownership_to_pb(now)),
            dropped,
        })
    }

    async fn pull_partitions(
        &self,
        r: pb::PullPartitionsRequest,
    ) -> Result<pb::PullPartitionsResponse> {
        let n = self.shard.options().partitions;
        if r.partition_count != n {
            return Err(Error::invalid(format!(
                "partition_count is {}, the collection has {n} partitions",
                r.partition_count
            )));
        }
        if let Some(p) = r.partitions.iter().find(|p| **p >= n) {
            return Err(Error::invalid(format!(
                "partitions lists {p}; partitions are 0-{}",
                n - 1
            )));
        }
        let mut total = crate::replication::CopyStats::default();
        for source in &r.sources {
            let client = crate::replication::internal_client(source)?;
            let stats = crate::replication::copy_partitions(
                &self.shard,
                client,
                Some(r.partitions.clone()),
            )
            .await
            .map_err(|e| Error::unavailable(format!("copying from {source}: {e}")))?;
            total.scanned += stats.scanned;
            total.applied += stats.applied;
            total.bytes += stats.bytes;
        }
        Ok(pb::PullPartitionsResponse {
            scanned: total.scanned,
            applied: total.applied,
            bytes: total.bytes,
        })
    }
}

pub fn ownership_from_pb(o: pb::Ownership) -> Ownership {
    Ownership {
        map_version: o.map_version,
        partitions: o.partition_count,
        readable: o.readable,
        writable: o.writable,
    }
}

pub fn ownership_to_pb(o: Ownership) -> pb::Ownership {
    pb::Ownership {
        map_version: o.map_version,
        partition_count: o.partitions,
        readable: o.readable,
        writable: o.writable,
    }
}

#[tonic::async_trait]
impl PointsInternal for InternalApi {
    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => {
                let _one = self.snapshots.lock().await;
                let started = std::time::Instant::now();
                let result = crate::snapshot::create(&self.shard, r).await;
                let metrics = self.shard.metrics();
                match &result {
                    Ok(_) => {
                        metrics
                            .snapshot_seconds
                            .observe(started.elapsed().as_secs_f64());
                        metrics
                            .snapshot_last_success
                            .set((vecshard_core::model::unix_millis() / 1000) as i64);
                    }
                    Err(e) => tracing::warn!(error = %e, "shard snapshot failed"),
                }
                result
            }
            Err(e) => Err(e),
        };
        self.finish("create_snapshot", result)
    }

    async fn set_ownership(
        &self,
        request: Request<pb::SetOwnershipRequest>,
    ) -> Result<Response<pb::SetOwnershipResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => InternalApi::set_ownership(self, r).await,
            Err(e) => Err(e),
        };
        self.finish("set_ownership", result)
    }

    async fn pull_partitions(
        &self,
        request: Request<pb::PullPartitionsRequest>,
    ) -> Result<Response<pb::PullPartitionsResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => InternalApi::pull_partitions(self, r).await,
            Err(e) => Err(e),
        };
        self.finish("pull_partitions", result)
    }

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::ReadLogResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => InternalApi::read_log(self, r).await,
            Err(e) => Err(e),
        };
        self.finish("read_log", result)
    }

    async fn scan_points(
        &self,
        request: Request<pb::ScanPointsRequest>,
    ) -> Result<Response<pb::ScanPointsResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => InternalApi::scan_points(self, r).await,
            Err(e) => Err(e),
        };
        self.finish("scan_points", result)
    }

    async fn partition_stats(
        &self,
        request: Request<pb::PartitionStatsRequest>,
    ) -> Result<Response<pb::PartitionStatsResponse>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&self.shard, &r.collection) {
            Ok(()) => InternalApi::partition_stats(self, r.partition_count).await,
            Err(e) => Err(e),
        };
        self.finish("partition_stats", result)
    }
}
