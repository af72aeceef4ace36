//! `spec.restoreFrom`: resolved once, when the collection is created (the snapshot id, its
//! shard map, checked against the spec), and recorded in `status.restore`; the ShardSets then
//! tell their pods where to fill their empty volumes from. A collection that already has
//! shards is never restored into (a restore only builds a new collection).

use kube::ResourceExt;
use vecshard_proto::shard_map::ShardMap;
use vecshard_snapshot::{catalog, Repository};

use crate::controller::apply::get_opt;
use crate::controller::snapshot_store::store_config;
use crate::crd::{
    PartitionRange, RestoreSpec, RestoreStatus, S3Spec, ShardRestore, VectorCollection,
    VectorSnapshot,
};

/// The resolved restore: where the snapshot is, and what the status records.
#[derive(Clone, Debug, PartialEq)]
pub struct Restore {
    pub s3: S3Spec,
    pub status: RestoreStatus,
}

impl Restore {
    /// What the ShardSet of shard `ordinal` tells its pods.
    pub fn for_shard(&self, ordinal: u32) -> ShardRestore {
        ShardRestore {
            s3: self.s3.clone(),
            collection: self.status.source_collection.clone(),
            snapshot: self.status.snapshot_id.clone(),
            shard: self
                .status
                .shard_names
                .get(ordinal as usize)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The partitions shard `ordinal` starts with (the snapshot's shard's).
    pub fn partitions(&self, ordinal: u32) -> Option<Vec<PartitionRange>> {
        self.status.partitions.get(ordinal as usize).cloned()
    }
}

/// The restore of `vc`: `None` without `spec.restoreFrom`; the recorded one; or, for a new
/// collection (`is_new`), resolved now. `Err`: why it cannot be used (the collection is then
/// refused, and nothing starts empty).
pub async fn resolve(
    client: &kube::Client,
    vc: &VectorCollection,
    shard_sets: &[crate::crd::ShardSet],
) -> Option<Result<Restore, String>> {
    let spec = vc.spec.restore_from.as_ref()?;
    let recorded = vc.status.as_ref().and_then(|s| s.restore.clone());
    // ShardSets built from a restore carry it: a reconcile that reads a collection whose
    // status write (with `status.restore`) it has not seen yet resolves the same snapshot again
    // rather than taking the restore for one added after creation.
    let built_from = shard_sets.iter().find_map(|ss| ss.spec.restore.clone());
    Some(match (recorded, built_from) {
        (Some(status), _) => Ok(Restore {
            s3: status.s3.clone(),
            status,
        }),
        (None, Some(r)) => {
            let same = RestoreSpec {
                from: None,
                collection: Some(r.collection),
                snapshot: r.snapshot,
                s3: Some(r.s3),
            };
            resolve_new(client, vc, &same).await
        }
        (None, None) if !shard_sets.is_empty() => Err(
            "spec.restoreFrom was set after the collection was created: a restore only builds a \
             new collection (create one with restoreFrom, or remove the field)"
                .into(),
        ),
        (None, None) => resolve_new(client, vc, spec).await,
    })
}

async fn resolve_new(
    client: &kube::Client,
    vc: &VectorCollection,
    spec: &RestoreSpec,
) -> Result<Restore, String> {
    let ns = vc.namespace().unwrap_or_default();
    let (s3, collection, snapshot) = match (&spec.from, &spec.s3) {
        (Some(name), _) => {
            let vs = get_opt::<VectorSnapshot>(client, &ns, name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("spec.restoreFrom.from: VectorSnapshot {ns}/{name} does not exist")
                })?;
            let status = vs.status.clone().unwrap_or_default();
            if status.phase.as_deref() != Some("Succeeded") {
                return Err(format!(
                    "spec.restoreFrom.from: VectorSnapshot {name} has not succeeded (phase {})",
                    status.phase.as_deref().unwrap_or("none")
                ));
            }
            let s3 = match vs.spec.s3.clone() {
                Some(s3) => s3,
                None => get_opt::<VectorCollection>(client, &ns, &vs.spec.collection)
                    .await
                    .map_err(|e| e.to_string())?
                    .and_then(|c| c.spec.snapshots.and_then(|s| s.s3))
                    .ok_or_else(|| {
                        format!(
                            "spec.restoreFrom.from: VectorSnapshot {name} names no bucket and its \
                             collection {} has no spec.snapshots.s3",
                            vs.spec.collection
                        )
                    })?,
            };
            (
                s3,
                vs.spec.collection.clone(),
                status.snapshot_id.unwrap_or_default(),
            )
        }
        (None, Some(s3)) => (
            s3.clone(),
            spec.collection.clone().unwrap_or_else(|| vc.name_any()),
            spec.snapshot.clone(),
        ),
        (None, None) => return Err("spec.restoreFrom needs from or s3".into()),
    };
    let store = store_config(client, &ns, &s3).await?;
    let found = async {
        let repo = Repository::open(&store)?;
        let id = catalog::resolve(&repo, &collection, &snapshot).await?;
        catalog::read_manifest(&repo, &collection, &id).await
    }
    .await
    .map_err(|e| format!("spec.restoreFrom: {e}"))?;
    let map: ShardMap = serde_json::from_value(found.shard_map.clone())
        .map_err(|e| format!("spec.restoreFrom: the snapshot's shard map: {e}"))?;
    check_compatible(vc, &found.collection, map.shards.len())?;
    Ok(Restore {
        s3: s3.clone(),
        status: RestoreStatus {
            snapshot_id: found.snapshot_id.clone(),
            source_collection: collection.clone(),
            location: format!("{}/{collection}/{}", s3.url(), found.snapshot_id),
            vectors: found.points,
            shard_names: map.shards.iter().map(|s| s.name.clone()).collect(),
            partitions: map
                .shards
                .iter()
                .map(|s| super::build::partitions_in_map(&map, &s.name))
                .collect(),
            s3,
            completed_at: None,
        },
    })
}

/// The snapshot fits the collection: same dimension, metric and partitions, and as many shards.
pub fn check_compatible(
    vc: &VectorCollection,
    snap: &vecshard_snapshot::manifest::CollectionParams,
    shards: usize,
) -> Result<(), String> {
    let s = &vc.spec;
    let metric = serde_json::to_value(s.metric)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut wrong = Vec::new();
    if snap.dimension != s.dimension {
        wrong.push(format!(
            "spec.dimension is {}, the snapshot's {}",
            s.dimension, snap.dimension
        ));
    }
    if snap.metric != metric {
        wrong.push(format!(
            "spec.metric is {metric}, the snapshot's {}",
            snap.metric
        ));
    }
    if snap.partitions != s.partitions {
        wrong.push(format!(
            "spec.partitions is {}, the snapshot's {}",
            s.partitions, snap.partitions
        ));
    }
    if shards != s.shards as usize {
        wrong.push(format!(
            "spec.shards is {}, the snapshot has {shards} shards (restore with the same count, \
             then change spec.shards)",
            s.shards
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "spec.restoreFrom: the snapshot does not fit: {}",
            wrong.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vecshard_snapshot::manifest::CollectionParams;

    fn vc() -> VectorCollection {
        serde_yaml::from_str(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs, namespace: search}
spec: {dimension: 384, shards: 2, partitions: 16}
",
        )
        .unwrap()
    }

    fn params(dimension: u32, metric: &str, partitions: u32) -> CollectionParams {
        CollectionParams {
            name: "docs".into(),
            dimension,
            metric: metric.into(),
            partitions,
            quantization: "f16".into(),
            hnsw_m: 16,
            hnsw_ef_construction: 128,
        }
    }

    #[test]
    fn a_snapshot_must_fit_the_spec_and_every_mismatch_is_named() {
        check_compatible(&vc(), &params(384, "cosine", 16), 2).unwrap();
        let err = check_compatible(&vc(), &params(768, "l2", 64), 3).unwrap_err();
        for says in [
            "spec.dimension is 384, the snapshot's 768",
            "spec.metric is cosine, the snapshot's l2",
            "spec.partitions is 16, the snapshot's 64",
            "spec.shards is 2, the snapshot has 3 shards",
        ] {
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn each_shard_restores_the_snapshot_shard_at_its_ordinal_with_its_partitions() {
        let s3: S3Spec = serde_yaml::from_str("{bucket: backups, credentialsSecret: c}").unwrap();
        let r = Restore {
            s3: s3.clone(),
            status: RestoreStatus {
                snapshot_id: "s1".into(),
                source_collection: "old".into(),
                location: "s3://backups/old/s1".into(),
                vectors: 10,
                shard_names: vec!["old-0".into(), "old-1".into()],
                partitions: vec![
                    vec![PartitionRange { start: 0, end: 4 }],
                    vec![PartitionRange { start: 5, end: 15 }],
                ],
                s3,
                completed_at: None,
            },
        };
        let one = r.for_shard(1);
        assert_eq!(
            (
                one.shard.as_str(),
                one.snapshot.as_str(),
                one.collection.as_str()
            ),
            ("old-1", "s1", "old")
        );
        assert_eq!(
            r.partitions(1),
            Some(vec![PartitionRange { start: 5, end: 15 }])
        );
        assert_eq!(r.partitions(2), None);
    }
}
