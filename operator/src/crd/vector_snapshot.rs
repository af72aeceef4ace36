//! `VectorSnapshot`: one snapshot of a collection, on demand (`kubectl apply`) or created by
//! the collection's schedule. The operator takes it once and records the result in its status;
//! deleting the resource does not delete the snapshot's objects (retention does, for scheduled
//! ones).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::vector_collection::S3Spec;

/// A snapshot of every shard of a VectorCollection to an S3-compatible bucket.
// kube's printcolumn(...) repeats `type_ = ...` by design; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vecshard.io",
    version = "v1alpha1",
    kind = "VectorSnapshot",
    namespaced,
    shortname = "vsnap",
    category = "vecshard",
    doc = "A snapshot of every shard of a VectorCollection to an S3-compatible bucket, taken once by the operator.",
    status = "VectorSnapshotStatus",
    printcolumn(name = "Collection", type_ = "string", json_path = ".spec.collection"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Snapshot", type_ = "string", json_path = ".status.snapshotId"),
    printcolumn(name = "Vectors", type_ = "integer", json_path = ".status.vectors"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(name = "Duration", type_ = "string", json_path = ".status.duration"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VectorSnapshotSpec {
    /// The VectorCollection (in this namespace) to snapshot.
    #[schemars(length(min = 1))]
    pub collection: String,
    /// Where to store it; default: the collection's `spec.snapshots.s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

/// What happened to the snapshot.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VectorSnapshotStatus {
    /// `Pending` (waiting for the collection, e.g. a rebalance to finish), `Running`,
    /// `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The snapshot's id in the bucket (chosen before it starts, so a restarted operator
    /// takes the same one again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// `s3://bucket/prefix/<collection>/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Vectors in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<u64>,
    /// Bytes stored (every object, manifests included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// RFC 3339 time it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 time it succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// How long it took, e.g. `12.3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Per shard: the replica that wrote it and what it holds.
    #[serde(default)]
    pub shards: Vec<SnapshotShardStatus>,
    /// Why it failed or waits (the store's error, a missing Secret...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotShardStatus {
    /// The shard (its ShardSet's name).
    pub name: String,
    /// The replica (gRPC address) that wrote the shard's snapshot.
    pub replica: String,
    /// Vectors in the shard's snapshot.
    pub vectors: u64,
    /// Bytes of the shard's objects.
    pub bytes: u64,
}
