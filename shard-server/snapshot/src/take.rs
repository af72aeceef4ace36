//! Taking a collection's snapshot: for each shard, the most caught-up reachable replica
//! (highest record version) writes its shard snapshot (`CreateSnapshot`, all shards at once);
//! then the collection manifest is written, last. Any failure leaves no manifest: the objects
//! already written are orphans for `catalog::prune` to collect.
//!
//! Each shard is a consistent cut of its own; shards are not cut at one instant together (no
//! cross-shard point in time). Every write acknowledged before the snapshot started is in it.

use std::time::Duration;

use futures::future::try_join_all;
use vecshard_core::error::{Error, Result};
use vecshard_core::model::unix_millis;
use vecshard_proto::shard_map::{ShardAssignment, ShardMap};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::points_internal_client::PointsInternalClient;
use vecshard_security::{current_client, SecureChannel};

use crate::manifest::{self, CollectionManifest, ShardEntry, ShardManifest, FORMAT, MANIFEST};
use crate::objects::put_bytes;
use crate::store::{Repository, StoreConfig};

/// How long one shard may take to write its snapshot.
pub const SHARD_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);

/// A channel to a replica, with the caller's TLS and key (`current_client`).
fn endpoint(addr: &str, timeout: Duration) -> Result<SecureChannel> {
    current_client()
        .channel(addr, Duration::from_secs(3), Some(timeout))
        .map_err(|e| Error::invalid(format!("replica address {addr:?}: {e}")))
}

fn remote(addr: &str, what: &str, status: tonic::Status) -> Error {
    let message = format!("{addr}: {what}: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument => Error::invalid(message),
        tonic::Code::NotFound => Error::not_found(message),
        _ => Error::unavailable(message),
    }
}

/// The replica of `shard` that holds the newest record among those that answer.
pub async fn most_caught_up(collection: &str, shard: &ShardAssignment) -> Result<String> {
    let answers = futures::future::join_all(shard.replicas.iter().map(|addr| async move {
        let info = PointsClient::new(endpoint(addr, Duration::from_secs(5))?)
            .info(pb::InfoRequest {
                collection: collection.to_string(),
            })
            .await
            .map_err(|s| remote(addr, "reading its info", s))?
            .into_inner();
        Ok::<_, Error>((info.max_version, info.status != "loading", addr.clone()))
    }))
    .await;
    let mut errors = Vec::new();
    let mut best: Option<(u64, bool, String)> = None;
    for answer in answers {
        match answer {
            Ok(a) => {
                if best.as_ref().is_none_or(|b| (a.1, a.0) > (b.1, b.0)) {
                    best = Some(a);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    best.map(|(_, _, addr)| addr).ok_or_else(|| {
        Error::unavailable(format!(
            "no replica of shard {} answers: {}",
            shard.name,
            errors.join("; ")
        ))
    })
}

/// Has `replica` write its shard's snapshot; returns the shard's entry for the collection
/// manifest.
pub async fn snapshot_shard(
    collection: &str,
    id: &str,
    store: &StoreConfig,
    partitions: u32,
    shard: Option<&str>,
    replica: &str,
) -> Result<(ShardEntry, ShardManifest)> {
    let what = shard.unwrap_or("(single)");
    let reply = PointsInternalClient::new(endpoint(replica, SHARD_SNAPSHOT_TIMEOUT)?)
        .create_snapshot(pb::CreateSnapshotRequest {
            collection: collection.to_string(),
            snapshot_id: id.to_string(),
            store: Some(store.into()),
            partition_count: partitions,
        })
        .await
        .map_err(|s| remote(replica, &format!("snapshot of shard {what}"), s))?
        .into_inner();
    let m: ShardManifest = serde_json::from_slice(&reply.manifest)
        .map_err(|e| Error::internal(format!("{replica} sent an unreadable manifest: {e}")))?;
    if shard.is_some_and(|name| name != m.shard) {
        return Err(Error::internal(format!(
            "{replica} wrote its snapshot as shard {}, expected {what} (its --shard-name must \
             match the shard map)",
            m.shard
        )));
    }
    let bytes = reply.manifest_size + m.objects.iter().map(|o| o.size).sum::<u64>();
    Ok((
        ShardEntry {
            name: m.shard.clone(),
            replica: replica.to_string(),
            manifest: manifest::ObjectEntry {
                name: MANIFEST.to_string(),
                size: reply.manifest_size,
                sha256: reply.manifest_sha256,
            },
            points: m.points,
            bytes,
        },
        m,
    ))
}

/// Takes a snapshot of every shard of `map` and commits it with the collection manifest.
pub async fn take(
    store: &StoreConfig,
    map: &ShardMap,
    id: Option<String>,
) -> Result<CollectionManifest> {
    if !map.moves.is_empty() {
        return Err(Error::unavailable(format!(
            "collection {} is rebalancing (partitions moving between shards): take the \
             snapshot once the moves are done",
            map.collection
        )));
    }
    let started = unix_millis();
    let id = id.unwrap_or_else(|| manifest::new_snapshot_id(started));
    manifest::check_snapshot_id(&id)?;
    let repo = Repository::open(store)?;
    let collection = map.collection.as_str();
    let shards = try_join_all(map.shards.iter().map(|shard| {
        let id = id.clone();
        async move {
            let replica = most_caught_up(collection, shard).await?;
            snapshot_shard(
                collection,
                &id,
                store,
                map.partitions,
                Some(&shard.name),
                &replica,
            )
            .await
        }
    }))
    .await?;
    commit(&repo, map.clone(), &id, shards, started).await
}

/// Takes a snapshot of one shard server (not behind a router): its shard under its own name,
/// with every partition.
pub async fn take_single(
    store: &StoreConfig,
    collection: &str,
    addr: &str,
    id: Option<String>,
) -> Result<CollectionManifest> {
    let started = unix_millis();
    let id = id.unwrap_or_else(|| manifest::new_snapshot_id(started));
    manifest::check_snapshot_id(&id)?;
    let repo = Repository::open(store)?;
    let (entry, m) = snapshot_shard(collection, &id, store, 0, None, addr).await?;
    let mut map = ShardMap::even(
        collection,
        m.collection.partitions,
        vec![vec![addr.to_string()]],
    );
    map.shards[0].name = m.shard.clone();
    commit(&repo, map, &id, vec![(entry, m)], started).await
}

/// Writes the collection manifest: the commit point.
async fn commit(
    repo: &Repository,
    map: ShardMap,
    id: &str,
    shards: Vec<(ShardEntry, ShardManifest)>,
    started: u64,
) -> Result<CollectionManifest> {
    let collection = map.collection.clone();
    let params = shards
        .first()
        .map(|(_, m)| m.collection.clone())
        .ok_or_else(|| Error::invalid(format!("the shard map of {collection} has no shards")))?;
    for (_, m) in &shards {
        if (m.collection.dimension, &m.collection.metric) != (params.dimension, &params.metric) {
            return Err(Error::internal(format!(
                "shard {} holds dimension {} {}, shard {} dimension {} {}",
                m.shard,
                m.collection.dimension,
                m.collection.metric,
                shards[0].1.shard,
                params.dimension,
                params.metric
            )));
        }
    }
    let manifest = CollectionManifest {
        format: FORMAT,
        snapshot_id: id.to_string(),
        collection: params,
        shard_map: serde_json::to_value(&map)
            .map_err(|e| Error::internal(format!("shard map: {e}")))?,
        points: shards.iter().map(|(e, _)| e.points).sum(),
        bytes: shards.iter().map(|(e, _)| e.bytes).sum(),
        shards: shards.into_iter().map(|(e, _)| e).collect(),
        started_at: manifest::rfc3339(started),
        finished_at: manifest::rfc3339(unix_millis()),
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::internal(format!("manifest: {e}")))?;
    // The commit point: from here on the snapshot exists.
    put_bytes(
        repo,
        &repo.path(&[&collection, id, MANIFEST]),
        MANIFEST,
        bytes,
    )
    .await?;
    Ok(manifest)
}
