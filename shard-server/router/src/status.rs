//! The cluster as the router sees it: every replica of every shard asked for its state and
//! per-partition fingerprints, and the partitions on which replicas of a shard disagree.
//! I/O: one Info (`Points`) and one PartitionStats (`PointsInternal`) call per replica, all at
//! once.

use std::time::Duration;

use futures::future::join_all;
use vecshard_proto::v1 as pb;

use crate::replicas::Replica;
use crate::Topology;
use vecshard_core::partitions::{diverged, total_checksum};

/// Asks every replica in parallel; a replica that does not answer within `timeout` is reported
/// unreachable with the reason.
pub(super) async fn cluster_status(
    topology: &Topology,
    collection: &str,
    timeout: Duration,
) -> pb::ClusterStatus {
    let partition_count = topology.map.partitions;
    let shards = join_all(topology.shards.iter().map(|route| async move {
        let replies = join_all(
            route
                .replicas
                .iter()
                .chain(&route.joining)
                .map(|r| replica_status(r, collection, partition_count, timeout)),
        )
        .await;
        let mut replies = replies;
        let serving = route.replicas.len();
        for (status, _) in &mut replies[serving..] {
            if status.reachable {
                status.status = format!("joining ({})", status.status);
            }
        }
        // Joining replicas are still catching up: their differences are expected.
        let reachable: Vec<&Vec<pb::PartitionStat>> = replies[..serving]
            .iter()
            .filter_map(|(_, stats)| stats.as_ref())
            .collect();
        let mut diverged_partitions: Vec<u32> = reachable
            .iter()
            .skip(1)
            .flat_map(|other| diverged(reachable[0], other))
            .collect();
        diverged_partitions.sort_unstable();
        diverged_partitions.dedup();
        pb::ShardStatus {
            name: route.name.clone(),
            replicas: replies.into_iter().map(|(status, _)| status).collect(),
            diverged_partitions,
        }
    }))
    .await;
    pb::ClusterStatus {
        collection: collection.to_string(),
        map_version: topology.map.version,
        partitions: partition_count,
        shards,
        moves: topology
            .map
            .moves
            .iter()
            .map(|m| pb::PartitionMove {
                partitions: m.partitions.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                phase: m.phase.as_str().into(),
            })
            .collect(),
    }
}

async fn replica_status(
    replica: &Replica,
    collection: &str,
    partition_count: u32,
    timeout: Duration,
) -> (pb::ReplicaStatus, Option<Vec<pb::PartitionStat>>) {
    let mut client = replica.client.clone();
    let ask = async {
        let info = client
            .info(pb::InfoRequest {
                collection: collection.to_string(),
            })
            .await?
            .into_inner();
        let stats = replica
            .internal
            .clone()
            .partition_stats(pb::PartitionStatsRequest {
                collection: collection.to_string(),
                partition_count,
            })
            .await?
            .into_inner();
        Ok::<_, tonic::Status>((info, stats))
    };
    let mut status = pb::ReplicaStatus {
        address: replica.addr.clone(),
        ..Default::default()
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(Ok((info, stats))) => {
            status.reachable = true;
            status.points = info.points;
            status.wal_sequence = info.wal_sequence;
            status.status = info.status;
            status.map_version = info.map_version;
            status.checksum = total_checksum(&stats.partitions);
            (status, Some(stats.partitions))
        }
        Ok(Err(e)) => {
            status.error = e.message().to_string();
            (status, None)
        }
        Err(_) => {
            status.error = format!("no answer within {timeout:?}");
            (status, None)
        }
    }
}
