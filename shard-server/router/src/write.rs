//! The router's writes: each point goes to every replica of the shard that owns its
//! partition, with a router-assigned version, and is acknowledged once the write consistency
//! is met; the other replicas' calls finish in the background.

use std::time::Duration;

use futures::future::join_all;
use tokio::sync::mpsc;
use vecshard_core::error::{Error, Result};
use vecshard_core::model::{Point, PointId};
use vecshard_core::request::{DeleteTarget, WriteOutcome};
use vecshard_proto::v1 as pb;

use crate::merge::group_by_shard;
use crate::replicas::{Replica, ShardRoute};
use crate::Router;

impl Router {
    pub async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome> {
        let started = std::time::Instant::now();
        self.check_batch(points.len())?;
        for (i, p) in points.iter().enumerate() {
            p.id.validate()
                .map_err(|e| Error::invalid(format!("points[{i}]: {e}")))?;
            self.config
                .check_vector("vector", &p.vector)
                .map_err(|e| Error::invalid(format!("points[{i}] (id {}): {e}", p.id)))?;
        }
        let version = if version == 0 {
            self.next_version()
        } else {
            version
        };
        let topology = self.topology();
        let groups = group_by_shard(&points, |p| &p.id, &topology.owners);
        let mut slots: Vec<Option<Point>> = points.into_iter().map(Some).collect();
        let requests = groups
            .into_iter()
            .map(|(shard, members)| {
                let points = members
                    .into_iter()
                    .filter_map(|i| slots[i].take())
                    .map(pb::Point::from)
                    .collect();
                (
                    shard,
                    WriteRequest::Upsert(pb::UpsertRequest {
                        collection: self.config.name.clone(),
                        points,
                        version,
                    }),
                )
            })
            .collect();
        let outcome = self.write_grouped(requests, version).await;
        self.metrics
            .upsert_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    pub async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome> {
        let version = if version == 0 {
            self.next_version()
        } else {
            version
        };
        let topology = self.topology();
        let collection = self.config.name.clone();
        let requests = match target {
            DeleteTarget::Ids(ids) => {
                self.check_batch(ids.len())?;
                ids.iter().try_for_each(PointId::validate)?;
                group_by_shard(&ids, |i| i, &topology.owners)
                    .into_iter()
                    .map(|(shard, members)| {
                        let ids = members.into_iter().map(|i| ids[i].clone().into()).collect();
                        (
                            shard,
                            WriteRequest::Delete(pb::DeleteRequest {
                                collection: collection.clone(),
                                ids,
                                filter_json: String::new(),
                                version,
                            }),
                        )
                    })
                    .collect()
            }
            DeleteTarget::Filter(filter) => {
                filter.check(&self.config)?;
                let filter_json = filter.to_json().to_string();
                (0..topology.shards.len())
                    .map(|shard| {
                        (
                            shard,
                            WriteRequest::Delete(pb::DeleteRequest {
                                collection: collection.clone(),
                                ids: vec![],
                                filter_json: filter_json.clone(),
                                version,
                            }),
                        )
                    })
                    .collect()
            }
        };
        self.write_grouped(requests, version).await
    }

    /// Sends one write to every replica of a shard; succeeds once `required` acknowledge.
    /// The other replicas' calls continue in the background.
    async fn write_to_shard(
        &self,
        shard: &ShardRoute,
        request: WriteRequest,
    ) -> Result<pb::WriteResponse> {
        let n = shard.replicas.len();
        let required = self.options.write_consistency.required(n);
        let (tx, mut rx) = mpsc::channel(n);
        let give_up = std::time::Instant::now() + self.options.request_timeout;
        for replica in &shard.replicas {
            let (replica, request, tx) = (replica.clone(), request.clone(), tx.clone());
            tokio::spawn(async move {
                let result = request.send_until(&replica, give_up).await;
                let _ = tx.send((replica.addr.clone(), result)).await;
            });
        }
        drop(tx);
        let (mut acks, mut failures) = (Vec::new(), Vec::new());
        while let Some((addr, result)) = rx.recv().await {
            match result {
                Ok(resp) => {
                    acks.push(resp);
                    if acks.len() >= required {
                        break;
                    }
                }
                // A replica refusing the input refuses it for all: report it as is.
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(Error::invalid(status.message()))
                }
                Err(status) => failures.push(format!("{addr}: {}", status.message())),
            }
        }
        if acks.len() >= required {
            let affected = acks.iter().map(|a| a.affected).max().unwrap_or(0);
            let mut best = acks.swap_remove(0);
            best.affected = affected;
            return Ok(best);
        }
        Err(Error::unavailable(format!(
            "shard {}: {} of {n} replicas acknowledged, write consistency {:?} needs {required} ({})",
            shard.name,
            acks.len(),
            self.options.write_consistency,
            failures.join("; ")
        )))
    }

    async fn write_grouped(
        &self,
        groups: Vec<(usize, WriteRequest)>,
        version: u64,
    ) -> Result<WriteOutcome> {
        let topology = self.topology();
        let calls = groups.into_iter().map(|(shard, request)| {
            let topology = topology.clone();
            async move { self.write_to_shard(&topology.shards[shard], request).await }
        });
        let results = join_all(calls).await;
        // Even a failed write may have reached some replicas: cached results may be stale.
        self.cache.invalidate();
        let mut affected = 0;
        for r in results {
            affected += r?.affected;
        }
        Ok(WriteOutcome {
            sequence: 0,
            affected,
            version,
        })
    }
}

/// One write, ready to send to any replica of a shard.
#[derive(Clone)]
enum WriteRequest {
    Upsert(pb::UpsertRequest),
    Delete(pb::DeleteRequest),
}

impl WriteRequest {
    /// Sends the write, and sends it again while the replica is unreachable (UNAVAILABLE: no
    /// connection, its name not resolvable yet, the connection lost), with growing pauses,
    /// until `give_up`. A replica that is restarting, or whose DNS record is still being
    /// published, then delays writes instead of failing them. Safe to repeat: the write
    /// carries its router-assigned version, and a replica applies a version once (a repeat
    /// of a write that did arrive changes nothing).
    async fn send_until(
        &self,
        replica: &Replica,
        give_up: std::time::Instant,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut pause = Duration::from_millis(20);
        loop {
            let result = self.send(replica).await;
            match &result {
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() + pause < give_up =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                _ => return result,
            }
        }
    }

    async fn send(
        &self,
        replica: &Replica,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut client = replica.client.clone();
        let started = std::time::Instant::now();
        let result = match self {
            WriteRequest::Upsert(r) => client.upsert(r.clone()).await,
            WriteRequest::Delete(r) => client.delete(r.clone()).await,
        };
        replica.observe(&result, started.elapsed());
        result.map(tonic::Response::into_inner)
    }
}
