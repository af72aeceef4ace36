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
use crate::replicas::{with_map_version, Replica, ShardRoute};
use crate::{Router, Topology};
use vecshard_proto::shard_map::partition_of;

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
        let outcome = self
            .on_current_map(|| async {
                let topology = self.topology();
                let requests = write_groups(&points, |p| &p.id, &topology)
                    .into_iter()
                    .map(|(shard, members, counted)| {
                        let points = members
                            .into_iter()
                            .map(|i| pb::Point::from(points[i].clone()))
                            .collect();
                        let request = WriteRequest::Upsert(pb::UpsertRequest {
                            collection: self.config.name.clone(),
                            points,
                            version,
                        });
                        (shard, request, counted)
                    })
                    .collect();
                self.write_grouped(&topology, requests, version).await
            })
            .await;
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
        match &target {
            DeleteTarget::Ids(ids) => {
                self.check_batch(ids.len())?;
                ids.iter().try_for_each(PointId::validate)?;
            }
            DeleteTarget::Filter(filter) => filter.check(&self.config)?,
        }
        let collection = &self.config.name;
        self.on_current_map(|| async {
            let topology = self.topology();
            let requests = match &target {
                DeleteTarget::Ids(ids) => write_groups(ids, |i| i, &topology)
                    .into_iter()
                    .map(|(shard, members, counted)| {
                        let ids = members.into_iter().map(|i| ids[i].clone().into()).collect();
                        let request = WriteRequest::Delete(pb::DeleteRequest {
                            collection: collection.clone(),
                            ids,
                            filter_json: String::new(),
                            version,
                        });
                        (shard, request, counted)
                    })
                    .collect(),
                // Every shard, including one that receives a moving partition: it deletes
                // its copy too, as the source does.
                DeleteTarget::Filter(filter) => {
                    let filter_json = filter.to_json().to_string();
                    (0..topology.shards.len())
                        .map(|shard| {
                            let request = WriteRequest::Delete(pb::DeleteRequest {
                                collection: collection.clone(),
                                ids: vec![],
                                filter_json: filter_json.clone(),
                                version,
                            });
                            (shard, request, true)
                        })
                        .collect()
                }
            };
            self.write_grouped(&topology, requests, version).await
        })
        .await
    }

    /// Sends one write to every replica of a shard, joining ones included; succeeds once
    /// `required` serving replicas acknowledge. The other calls continue in the background.
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
            let map_version = shard.map_version;
            tokio::spawn(async move {
                let result = request.send_until(&replica, map_version, give_up).await;
                let _ = tx.send((replica.addr.clone(), result)).await;
            });
        }
        drop(tx);
        // A joining replica gets the write too (retried while unreachable, as for the others:
        // it may serve soon), but nobody waits for its answer. What it still misses it copies
        // from its peers.
        for replica in &shard.joining {
            let (replica, request) = (replica.clone(), request.clone());
            let map_version = shard.map_version;
            tokio::spawn(async move {
                let _ = request.send_until(&replica, map_version, give_up).await;
            });
        }
        let (mut acks, mut failures) = (Vec::new(), Vec::new());
        let mut stale = false;
        let mut map_changes = self.map_version.subscribe();
        map_changes.mark_unchanged();
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                // A replica waited on may have stopped: when the operator publishes a map
                // that counts it as joining (or drops it), the write runs again on that map
                // (safe: it carries its version) instead of waiting out the timeout.
                Ok(()) = map_changes.changed(), if acks.len() < required => {
                    return Err(Error::stale_map(format!(
                        "shard {}: the shard map changed while {} of {required} acknowledgements were in",
                        shard.name,
                        acks.len()
                    )));
                }
            };
            let Some((addr, result)) = next else { break };
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
                Err(status) => {
                    stale |= status.code() == tonic::Code::FailedPrecondition;
                    failures.push(format!("{addr}: {}", status.message()));
                }
            }
        }
        if acks.len() >= required {
            let affected = acks.iter().map(|a| a.affected).max().unwrap_or(0);
            let mut best = acks.swap_remove(0);
            best.affected = affected;
            return Ok(best);
        }
        let message = format!(
            "shard {}: {} of {n} replicas acknowledged, write consistency {:?} needs {required} ({})",
            shard.name,
            acks.len(),
            self.options.write_consistency,
            failures.join("; ")
        );
        // Refused for the map it was routed with: the caller reloads the map and retries.
        Err(if stale {
            Error::stale_map(message)
        } else {
            Error::unavailable(message)
        })
    }

    /// Sends every shard its part of a write; all must meet the write consistency. `counted`
    /// parts (those of the shards that own the points' partitions) make up `affected`; the
    /// copies sent to the receiver of a moving partition do not.
    async fn write_grouped(
        &self,
        topology: &Topology,
        groups: Vec<(usize, WriteRequest, bool)>,
        version: u64,
    ) -> Result<WriteOutcome> {
        let calls = groups
            .into_iter()
            .map(|(shard, request, counted)| async move {
                let response = self.write_to_shard(&topology.shards[shard], request).await;
                (response, counted)
            });
        let results = join_all(calls).await;
        // Even a failed write may have reached some replicas: cached results may be stale.
        self.cache.invalidate();
        let mut affected = 0;
        for (r, counted) in results {
            let response = r?;
            if counted {
                affected += response.affected;
            }
        }
        Ok(WriteOutcome {
            sequence: 0,
            affected,
            version,
        })
    }
}

/// Indexes of `items` per shard that must take them: the owner of each item's partition
/// (`counted`), and the second writer of a moving partition (not counted).
fn write_groups<T>(
    items: &[T],
    id: impl Fn(&T) -> &PointId,
    topology: &Topology,
) -> Vec<(usize, Vec<usize>, bool)> {
    let owners = group_by_shard(items, &id, &topology.owners);
    let mut out: Vec<(usize, Vec<usize>, bool)> = owners
        .into_iter()
        .map(|(shard, members)| (shard, members, true))
        .collect();
    if topology.second_writers.iter().any(Option::is_some) {
        let mut seconds: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, item) in items.iter().enumerate() {
            let p = partition_of(&id(item).to_bytes(), topology.map.partitions);
            if let Some(second) = topology.second_writers[p as usize] {
                seconds.entry(second).or_default().push(i);
            }
        }
        out.extend(
            seconds
                .into_iter()
                .map(|(shard, members)| (shard, members, false)),
        );
    }
    out
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
        map_version: u64,
        give_up: std::time::Instant,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut pause = Duration::from_millis(20);
        loop {
            let result = self.send(replica, map_version).await;
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
        map_version: u64,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut client = replica.client.clone();
        let started = std::time::Instant::now();
        let result = match self {
            WriteRequest::Upsert(r) => {
                client
                    .upsert(with_map_version(r.clone(), map_version))
                    .await
            }
            WriteRequest::Delete(r) => {
                client
                    .delete(with_map_version(r.clone(), map_version))
                    .await
            }
        };
        replica.observe(&result, started.elapsed());
        result.map(tonic::Response::into_inner)
    }
}
