//! The snapshots of a collection in a repository: which exist (their collection manifest is
//! there), pruning beyond a retain count (manifest first, so a half-deleted snapshot is an
//! orphan and never looks complete), orphan collection (objects of snapshots that never got a
//! manifest: failed or killed uploads), and verification of every checksum.

use std::collections::BTreeSet;

use object_store::{ObjectStore, ObjectStoreExt};
use vecshard_core::error::Result;

use crate::manifest::{self, CollectionManifest, ShardManifest, MANIFEST};
use crate::objects::{delete_prefix, get_json, verify_object};
use crate::store::{store_error, Repository};

/// Snapshot ids under `<root>/<collection>/`, complete or not, sorted (oldest first for ids
/// made by `new_snapshot_id`).
pub async fn snapshot_ids(repo: &Repository, collection: &str) -> Result<Vec<String>> {
    let prefix = repo.path(&[collection]);
    let listed = repo
        .store
        .list_with_delimiter(Some(&prefix))
        .await
        .map_err(|e| store_error("listing", &prefix, e))?;
    let ids: BTreeSet<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect();
    Ok(ids.into_iter().collect())
}

/// Whether the collection manifest of `id` exists.
pub async fn is_complete(repo: &Repository, collection: &str, id: &str) -> Result<bool> {
    let path = repo.path(&[collection, id, MANIFEST]);
    match repo.store.head(&path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_error("reading", &path, e)),
    }
}

/// The complete snapshots of a collection, oldest first.
pub async fn list(repo: &Repository, collection: &str) -> Result<Vec<CollectionManifest>> {
    let mut out = Vec::new();
    for id in snapshot_ids(repo, collection).await? {
        if is_complete(repo, collection, &id).await? {
            out.push(read_manifest(repo, collection, &id).await?);
        }
    }
    Ok(out)
}

pub async fn read_manifest(
    repo: &Repository,
    collection: &str,
    id: &str,
) -> Result<CollectionManifest> {
    manifest::check_snapshot_id(id)?;
    let path = repo.path(&[collection, id, MANIFEST]);
    let m: CollectionManifest = get_json(repo, &path, None).await?;
    manifest::check_format(m.format, &format!("snapshot {id}"))?;
    Ok(m)
}

/// The newest complete snapshot's id (`latest`), or `id` itself when it is complete.
pub async fn resolve(repo: &Repository, collection: &str, id: &str) -> Result<String> {
    if id != "latest" {
        manifest::check_snapshot_id(id)?;
        if !is_complete(repo, collection, id).await? {
            return Err(vecshard_core::error::Error::not_found(format!(
                "snapshot {id} of collection {collection} does not exist in {} (no {}/{id}/{MANIFEST}: \
                 never taken, still running, failed, or deleted)",
                repo.url, collection
            )));
        }
        return Ok(id.to_string());
    }
    for id in snapshot_ids(repo, collection).await?.into_iter().rev() {
        if is_complete(repo, collection, &id).await? {
            return Ok(id);
        }
    }
    Err(vecshard_core::error::Error::not_found(format!(
        "collection {collection} has no complete snapshot in {}",
        repo.url
    )))
}

/// Deletes one snapshot: its collection manifest first (from then on it no longer exists),
/// then every other object. Returns the objects deleted.
pub async fn delete(repo: &Repository, collection: &str, id: &str) -> Result<usize> {
    manifest::check_snapshot_id(id)?;
    let path = repo.path(&[collection, id, MANIFEST]);
    match repo.store.delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(store_error("deleting", &path, e)),
    }
    Ok(1 + delete_prefix(repo, &repo.path(&[collection, id])).await?)
}

/// What `prune` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Complete snapshots deleted because more than `retain` newer ones exist.
    pub expired: Vec<String>,
    /// Incomplete snapshots (no collection manifest) whose objects were deleted.
    pub orphans: Vec<String>,
    pub objects: usize,
}

/// Keeps the newest `retain` complete snapshots and deletes the older ones; deletes the
/// objects of incomplete snapshots too, except those in `running` (a snapshot in progress has
/// no manifest yet). With `only`, retention counts and deletes only those complete snapshots
/// (a schedule's own), leaving the others (taken on demand) alone.
pub async fn prune(
    repo: &Repository,
    collection: &str,
    retain: usize,
    running: &[String],
    only: Option<&[String]>,
) -> Result<Pruned> {
    let mut complete = Vec::new();
    let mut out = Pruned::default();
    for id in snapshot_ids(repo, collection).await? {
        if is_complete(repo, collection, &id).await? {
            if only.is_none_or(|ids| ids.contains(&id)) {
                complete.push(id);
            }
        } else if !running.contains(&id) && manifest::check_snapshot_id(&id).is_ok() {
            out.objects += delete_prefix(repo, &repo.path(&[collection, &id])).await?;
            out.orphans.push(id);
        }
    }
    let expired = complete.len().saturating_sub(retain);
    for id in complete.into_iter().take(expired) {
        out.objects += delete(repo, collection, &id).await?;
        out.expired.push(id);
    }
    Ok(out)
}

/// Reads every object of a snapshot and checks its size and SHA-256 against the manifests.
/// Returns the bytes checked.
pub async fn verify(repo: &Repository, collection: &str, id: &str) -> Result<u64> {
    let m = read_manifest(repo, collection, id).await?;
    let mut bytes = 0;
    for shard in &m.shards {
        let path = repo.path(&[collection, id, &shard.name, MANIFEST]);
        let sm: ShardManifest = get_json(repo, &path, Some(&shard.manifest)).await?;
        bytes += shard.manifest.size;
        for object in &sm.objects {
            let path = repo.path(&[collection, id, &shard.name, &object.name]);
            verify_object(repo, &path, object).await?;
            bytes += object.size;
        }
    }
    Ok(bytes)
}
