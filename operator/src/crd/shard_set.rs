//! `ShardSet`: one shard of one collection, created by the VectorCollection controller and
//! reconciled into a StatefulSet. It has a scale subresource so that a HorizontalPodAutoscaler
//! can set its replicas.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::vector_collection::{
    AutoscalingSpec, Device, IndexSpec, IndexedField, Metric, Quantization, S3Spec, StorageSpec,
};

/// One shard of a VectorCollection: the partitions it owns and the pods that serve them.
// kube's printcolumn(...) repeats `type_ = ...` by design; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "vecshard.io",
    version = "v1alpha1",
    kind = "ShardSet",
    namespaced,
    category = "vecshard",
    doc = "One shard of a VectorCollection, created by the operator: the partitions it owns and the pods that serve them.",
    status = "ShardSetStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Collection", type_ = "string", json_path = ".spec.collection"),
    printcolumn(name = "Shard", type_ = "integer", json_path = ".spec.shard"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Vectors", type_ = "integer", json_path = ".status.vectors"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ShardSetSpec {
    /// The VectorCollection this shard belongs to.
    pub collection: String,
    /// Ordinal of the shard within the collection, from 0.
    pub shard: u32,
    /// Pods serving this shard (set by the collection, or by an autoscaler through `/scale`).
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Partitions this shard owns, as inclusive ranges.
    pub partitions: Vec<PartitionRange>,
    /// Hash partitions of the collection.
    pub partition_count: u32,
    /// Vector dimension (copied from the collection).
    pub dimension: u32,
    /// Similarity metric (copied from the collection).
    pub metric: Metric,
    /// In-memory vector encoding of the index (copied from the collection).
    pub quantization: Quantization,
    /// HNSW parameters (copied from the collection).
    pub index: IndexSpec,
    /// Payload fields indexed for filtering (copied from the collection).
    #[serde(default)]
    pub indexed_fields: Vec<IndexedField>,
    /// Where search runs: `cpu`, or `gpu` (adds the `nvidia.com/gpu` limit and runs the
    /// servers with `--device gpu`).
    pub device: Device,
    /// Container image of `vecshard-server`.
    pub image: String,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    pub storage: StorageSpec,
    /// HorizontalPodAutoscaler of this shard's replicas (copied from the collection).
    #[serde(default)]
    pub autoscaling: Option<AutoscalingSpec>,
    /// The snapshot a pod fills its empty volume from before it serves (the collection's
    /// `spec.restoreFrom`, resolved). Pods whose volume holds data ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<ShardRestore>,
    /// TLS and API keys of the pods (from the collection's `tls` and `auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<PodSecurity>,
}

/// What a pod's TLS and API keys come from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    /// Secret with `tls.crt`, `tls.key`, `ca.crt`, mounted at /etc/vecshard/tls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    /// Secret with the API keys (`read-write`, `read-only`), mounted at /etc/vecshard/api-keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// `/metrics` needs a key or the collection's client certificate.
    #[serde(default)]
    pub metrics_need_key: bool,
}

/// Where a shard's pods restore from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardRestore {
    /// The bucket and its Secrets.
    pub s3: S3Spec,
    /// The collection the snapshot was taken of.
    pub collection: String,
    /// The snapshot id.
    pub snapshot: String,
    /// The snapshot's shard this shard restores.
    pub shard: String,
}

/// An inclusive range of partitions.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct PartitionRange {
    /// First partition of the range.
    pub start: u32,
    /// Last partition of the range (inclusive).
    pub end: u32,
}

/// What the operator observed of the shard's StatefulSet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardSetStatus {
    /// Pods that exist (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, as a string (for the scale subresource and HPAs).
    #[serde(default)]
    pub selector: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with reasons and messages.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Live vectors in the shard, when known.
    #[serde(default)]
    pub vectors: Option<u64>,
    /// Ordinals of the pods that are ready, i.e. have caught up with their peers: the shard
    /// map lists them as serving replicas and the others as joining (they receive writes but
    /// answer no reads and do not count toward the write consistency).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_ordinals: Vec<u32>,
}
