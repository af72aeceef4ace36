//! `VectorCollection`: what a platform team applies. One collection of vectors with a fixed
//! dimension, metric and partition count, split into `shards` shards of `replicas` pods each,
//! with a router in front. The operator derives one `ShardSet` per shard from it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A collection of vectors served by sharded, replicated shard servers behind a router.
// kube's printcolumn(...) repeats `type_ = ...` by design; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "vecshard.io",
    version = "v1alpha1",
    kind = "VectorCollection",
    namespaced,
    shortname = "vc",
    category = "vecshard",
    doc = "A collection of vectors served by sharded, replicated shard servers behind a router.",
    status = "VectorCollectionStatus",
    printcolumn(name = "Dimension", type_ = "integer", json_path = ".spec.dimension"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "Ready replicas / desired replicas, over all shards"
    ),
    printcolumn(name = "Vectors", type_ = "integer", json_path = ".status.vectors"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Rebalance",
        type_ = "string",
        json_path = ".status.rebalance.summary",
        description = "Shard-count change in progress: from → to shards, batch, step"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.shards <= self.partitions").message("spec.shards must not exceed spec.partitions (every shard owns at least one partition)"))]
pub struct VectorCollectionSpec {
    /// Number of components of every vector (e.g. 384 for MiniLM, 1536 for OpenAI
    /// text-embedding-3-small). Fixed for the life of the collection.
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.dimension is immutable"))]
    pub dimension: u32,

    /// Similarity metric: `cosine`, `dot` (inner product) or `l2` (Euclidean distance).
    /// Fixed for the life of the collection.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.metric is immutable"))]
    pub metric: Metric,

    /// Hash partitions (`xxh3_64(id) % partitions`): the unit that shards own and that moves
    /// when the shard count changes. Fixed for the life of the collection; choose it well above
    /// the largest shard count you expect.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.partitions is immutable"))]
    pub partitions: u32,

    /// Number of shards the partitions are spread over. Changing it rebalances online: new
    /// shards are created and become Ready, then partitions move in batches (dual writes,
    /// backfill, verification, read and write switches) while the collection serves; shards
    /// left without partitions are deleted. While a change runs, only setting the previous
    /// count back is accepted (it abandons the batch in progress if its reads have not
    /// switched yet, else completes it first). See docs/operations.md.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 1024))]
    pub shards: u32,

    /// Pods per shard (identical copies). A write is acknowledged per `writeConsistency`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas: u32,

    /// Replicas of a shard that must acknowledge a write: `one`, `quorum` (a majority) or
    /// `all`.
    #[serde(default)]
    pub write_consistency: WriteConsistency,

    /// The search index of every shard.
    #[serde(default)]
    pub index: IndexSpec,

    /// How vectors are stored in the index: `f32`, `f16`, `i8` or `b1` (1 bit per component).
    /// `i8` and `b1` rescore candidates with full-precision vectors to keep recall high.
    #[serde(default)]
    pub quantization: Quantization,

    /// Payload fields indexed for filtering. Filters may only use these fields.
    #[serde(default)]
    pub indexed_fields: Vec<IndexedField>,

    /// Where shard pods run: `cpu`, or `gpu` (each pod gets one `nvidia.com/gpu`, the GPU
    /// taint's toleration and a GPU node selector, and runs with `--device gpu`: exact
    /// searches, filtered scans and large search batches on the GPU; a pod that finds no
    /// usable GPU refuses to start). See docs/operations.md, "GPU search".
    #[serde(default)]
    pub device: Device,

    /// Container image of the shard servers and the router.
    #[serde(default = "default_image")]
    pub image: String,

    /// CPU and memory of each shard server pod.
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume of each shard server pod.
    #[serde(default)]
    pub storage: StorageSpec,

    /// The router Deployment in front of the shards.
    #[serde(default)]
    pub router: RouterSpec,

    /// Scheduled snapshots of every shard to an S3-compatible bucket, with retention. Each
    /// tick creates a `VectorSnapshot`; on-demand snapshots are `VectorSnapshot`s applied by
    /// hand (they use this bucket unless they name their own). See docs/operations.md.
    #[serde(default)]
    pub snapshots: Option<SnapshotSpec>,

    /// Build this new collection from a snapshot instead of starting empty: every shard pod
    /// fills its empty volume from the snapshot (every object's SHA-256 verified first) before
    /// it serves. Only read when the collection is created; dimension, metric and partitions
    /// must match the snapshot's, and `shards` must equal its shard count.
    #[serde(default)]
    pub restore_from: Option<RestoreSpec>,

    /// HorizontalPodAutoscalers on each shard's replicas, driven by search latency.
    #[serde(default)]
    pub autoscaling: Option<AutoscalingSpec>,

    /// TLS on every port of the collection's routers and shards, and mutual TLS between them
    /// (and the operator). Absent: plaintext. See docs/operations.md "Security".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// API keys required by the routers and shards (read-write and read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// NetworkPolicies that limit who reaches the shard and router pods (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// Where the collection's certificates come from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewBeforeDays < self.certificateDays").message("tls.renewBeforeDays must be less than tls.certificateDays"))]
pub struct TlsSpec {
    /// A Secret with `tls.crt`, `tls.key` and `ca.crt` (what cert-manager's `Certificate`
    /// writes), used by every router and shard pod, as server and as client certificate; its
    /// CA must be dedicated to this collection. Absent: the operator creates a CA for the
    /// collection (Secret `<name>-ca`) and the certificate (Secret `<name>-tls`), and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Validity of a certificate the operator issues, in days.
    #[serde(default = "default_certificate_days")]
    #[schemars(range(min = 2, max = 825))]
    pub certificate_days: u32,
    /// The operator renews its certificate when fewer days than this remain.
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1, max = 824))]
    pub renew_before_days: u32,
}

fn default_certificate_days() -> u32 {
    90
}

fn default_renew_before_days() -> u32 {
    30
}

/// API keys of the collection.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret with the key `read-write` (one API key per line, at least one) and optionally
    /// `read-only`. Edit it to rotate keys: pods re-read it without a restart.
    #[schemars(length(min = 1, max = 253))]
    pub api_key_secret: String,
    /// `/metrics` requires a key (or the collection's client certificate) like a read.
    #[serde(default)]
    pub metrics_need_key: bool,
}

/// Who may reach the collection's pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies `<name>-shards` and `<name>-router`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Namespace of the vecshard operator (it calls the shards: counts, rebalancing,
    /// snapshots).
    #[serde(default = "default_operator_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub operator_namespace: String,
    /// Namespaces whose pods may scrape `/metrics` (port 6333).
    #[serde(default = "default_metrics_namespaces")]
    pub metrics_namespaces: Vec<String>,
    /// Who may call the routers: pods of the collection's `Namespace`, or `Anywhere`.
    #[serde(default)]
    pub router_from: RouterFrom,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            operator_namespace: default_operator_namespace(),
            metrics_namespaces: default_metrics_namespaces(),
            router_from: RouterFrom::Namespace,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RouterFrom {
    #[default]
    Namespace,
    Anywhere,
}

fn default_true() -> bool {
    true
}

fn default_operator_namespace() -> String {
    "vecshard-system".into()
}

fn default_metrics_namespaces() -> Vec<String> {
    vec!["monitoring".into()]
}

fn default_partitions() -> u32 {
    256
}
fn default_shards() -> u32 {
    1
}
fn default_replicas() -> u32 {
    2
}
pub fn default_image() -> String {
    "vecshard/vecshard-server:0.1.0".into()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    #[default]
    Cosine,
    Dot,
    L2,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteConsistency {
    One,
    #[default]
    Quorum,
    All,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    #[default]
    F16,
    I8,
    B1,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Cpu,
    Gpu,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Graph index (approximate, fast).
    #[default]
    Hnsw,
    /// No graph: every search is an exact scan (recall 1.0; on the GPU with `device: gpu`),
    /// memory holds the vectors only and writes need no indexing.
    Flat,
}

/// The search index.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    /// `hnsw` or `flat`. A change restarts the shard pods one by one; a switch to `hnsw`
    /// builds each shard's graph from its stored points.
    #[serde(default, rename = "type")]
    pub kind: IndexKind,
    /// HNSW links per node: more links, better recall, more memory.
    #[serde(default = "default_m")]
    #[schemars(range(min = 2, max = 256))]
    pub m: u32,
    /// HNSW search breadth while building: higher builds a better graph, slower.
    #[serde(default = "default_ef_construction")]
    #[schemars(range(min = 1, max = 4096))]
    pub ef_construction: u32,
    /// Default HNSW search breadth (requests may override it): higher, better recall, slower.
    #[serde(default = "default_ef_search")]
    #[schemars(range(min = 1, max = 4096))]
    pub ef_search: u32,
}

impl Default for IndexSpec {
    fn default() -> Self {
        IndexSpec {
            kind: IndexKind::Hnsw,
            m: default_m(),
            ef_construction: default_ef_construction(),
            ef_search: default_ef_search(),
        }
    }
}

fn default_m() -> u32 {
    16
}
fn default_ef_construction() -> u32 {
    128
}
fn default_ef_search() -> u32 {
    64
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Keyword,
    Integer,
    Float,
}

/// A payload field indexed for filters.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct IndexedField {
    /// Field name in the payload JSON object (no `,` or `:`).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^,:]+$"))]
    pub name: String,
    /// `keyword` (exact match, `any`), `integer` or `float` (match and ranges).
    #[serde(rename = "type")]
    pub kind: FieldKind,
}

/// Persistent volume of each shard server pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// StorageClass of the volumes; empty uses the cluster's default.
    #[serde(default)]
    pub storage_class_name: Option<String>,
    /// What happens to the volumes when the collection is deleted: `Retain` (default: the data
    /// outlives the collection) or `Delete`.
    #[serde(default)]
    pub when_deleted: VolumeRetention,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
            when_deleted: VolumeRetention::default(),
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeRetention {
    #[default]
    Retain,
    Delete,
}

/// The router Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouterSpec {
    /// Router pods (stateless; any number serves the same data).
    #[serde(default = "default_router_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: u32,
    /// Search results each router caches (LRU); 0 disables the cache.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: u32,
    /// Seconds a cached result may be served (any write empties the cache at once).
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_seconds: u32,
    /// CPU and memory of each router pod.
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RouterSpec {
    fn default() -> Self {
        RouterSpec {
            replicas: default_router_replicas(),
            cache_entries: default_cache_entries(),
            cache_ttl_seconds: default_cache_ttl(),
            resources: None,
        }
    }
}

fn default_router_replicas() -> u32 {
    2
}
fn default_cache_entries() -> u32 {
    10_000
}
fn default_cache_ttl() -> u32 {
    60
}

/// An S3-compatible bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Bucket name (S3 naming rules: 3 to 63 characters).
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix of the snapshots in the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph); empty for AWS S3.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region of the bucket (default `us-east-1`; most S3-compatible servers ignore it).
    #[serde(default = "default_region")]
    pub region: String,
    /// Secret in the collection's namespace with keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
    /// Secret in the collection's namespace whose key `ca.crt` holds the CA bundle (PEM) that
    /// signed the endpoint's certificate, for a store with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
}

impl S3Spec {
    /// `s3://bucket[/prefix]`.
    pub fn url(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Scheduled snapshots.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || (has(self.schedule) && has(self.s3))").message("snapshots.enabled needs snapshots.schedule and snapshots.s3 (bucket and credentialsSecret)"))]
pub struct SnapshotSpec {
    /// Take snapshots on `schedule` (false: only on-demand `VectorSnapshot`s, which still use
    /// `s3`).
    #[serde(default)]
    pub enabled: bool,
    /// Cron schedule in UTC, five fields (minute hour day-of-month month day-of-week), e.g.
    /// `0 3 * * *`. A tick while a snapshot of the collection runs is skipped.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Complete scheduled snapshots kept in the bucket; older ones are deleted (manifest first,
    /// then data) after each scheduled snapshot succeeds, with the objects of failed ones.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 1000))]
    pub retain: u32,
    #[serde(default)]
    pub s3: Option<S3Spec>,
}

fn default_retain() -> u32 {
    7
}

/// Where to restore from: a `VectorSnapshot` of this namespace (`from`), or a location in a
/// bucket (`s3`, `collection`, `snapshot`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.from) != has(self.s3)").message("restoreFrom needs exactly one of from (a VectorSnapshot) and s3 (a bucket)"))]
pub struct RestoreSpec {
    /// A succeeded `VectorSnapshot` in this namespace: its bucket, collection and snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Collection whose snapshot to restore (defaults to this collection's name).
    #[serde(default)]
    pub collection: Option<String>,
    /// Snapshot id, or `latest` (resolved once, when the collection is created).
    #[serde(default = "default_snapshot")]
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

fn default_snapshot() -> String {
    "latest".into()
}

/// Latency-driven autoscaling of each shard's replicas.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest pods per shard the autoscaler may leave.
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: u32,
    /// Most pods per shard the autoscaler may create.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: u32,
    /// Target p95 search latency per pod (metric `vecshard_search_p95_seconds`), at most
    /// 1000 ms (the latency histogram's resolution ends near 1.6 s).
    #[schemars(range(min = 1, max = 1000))]
    pub target_p95_latency_ms: u32,
    /// Seconds of sustained high latency before scaling up (at most 3600, the HPA's limit).
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub scale_up_stabilization_seconds: Option<u32>,
    /// Seconds of sustained low latency before scaling down (default 300; at most 3600, the
    /// HPA's limit).
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub scale_down_stabilization_seconds: Option<u32>,
    /// The routers' HPA keeps their average CPU use at this percentage of their CPU request
    /// (default 70). Routers scale on their own CPU, not on search latency: latency measured at
    /// a router is mostly the shards' time, and adding routers does not lower it.
    #[serde(default)]
    #[schemars(range(min = 10, max = 100))]
    pub router_target_cpu_utilization_percent: Option<u32>,
}

/// What the operator observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VectorCollectionStatus {
    /// `Progressing` (replicas starting or rolling), `Ready`, or `Degraded` (the spec cannot be
    /// built; the previous workloads keep serving).
    #[serde(default)]
    pub phase: Option<String>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, with reasons and messages.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Ready replicas / desired replicas over all shards, e.g. `4/4`.
    #[serde(default)]
    pub ready: Option<String>,
    /// Live vectors over all shards.
    #[serde(default)]
    pub vectors: Option<u64>,
    /// Per shard: readiness and vector count.
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// The most recent succeeded snapshots of the collection (scheduled and on demand), newest
    /// first, at most ten.
    #[serde(default)]
    pub last_snapshots: Vec<SnapshotRecord>,
    /// The schedule's last tick and the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schedule: Option<ScheduleStatus>,
    /// The restore this collection was created from (`spec.restoreFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// Version of the shard map last published to the routers. A shard-map ConfigMap that was
    /// deleted is re-created above it, so running routers (which ignore older versions)
    /// accept it.
    #[serde(default)]
    pub shard_map_version: Option<u64>,
    /// The shard-count change in progress (absent when the partitions are balanced over
    /// `spec.shards`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
}

/// Progress of a shard-count change. Each step is recorded here before it runs, so an operator
/// that restarts continues (or safely repeats) the step it was in.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// e.g. `2→3 batch 1/2 Backfill`: the `kubectl get vc` column.
    pub summary: String,
    /// Shards before the change.
    pub from_shards: u32,
    /// Shards after it (`spec.shards` when it started).
    pub to_shards: u32,
    /// The batch in progress (1-based).
    pub batch: u32,
    /// Batches in the plan.
    pub batches: u32,
    /// `WaitingForShards`, `DualWrite`, `Backfill`, `Verify`, `ReadsSwitch`, `WritesSwitch`.
    pub step: String,
    /// Partitions of the batch in progress, and the shards they move between.
    #[serde(default)]
    pub moving_partitions: Vec<u32>,
    /// The shard the batch in progress moves away from.
    #[serde(default)]
    pub moving_from: String,
    /// The shard the batch in progress moves to.
    #[serde(default)]
    pub moving_to: String,
    /// Version of the shard map the last step published.
    pub map_version: u64,
    /// RFC 3339 time the change started.
    pub started_at: String,
    /// Points copied to receiving shards so far.
    pub points_moved: u64,
    /// Vector and payload bytes copied to receiving shards so far.
    pub bytes_moved: u64,
    /// The last step failure, retried (empty when the last step succeeded).
    #[serde(default)]
    pub last_error: String,
    /// The full plan and position (JSON of `vecshard_rebalance::Progress`); the operator's
    /// record, not meant to be edited.
    pub record: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// ShardSet name.
    pub name: String,
    /// Pods the shard should have.
    pub replicas: u32,
    /// Pods that pass their readiness probe.
    pub ready_replicas: u32,
    /// Live vectors in the shard, when known.
    #[serde(default)]
    pub vectors: Option<u64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// Snapshot identifier (the object-store prefix under the bucket).
    pub id: String,
    /// RFC 3339 time the snapshot completed.
    pub completed_at: String,
    /// Vectors the snapshot holds.
    #[serde(default)]
    pub vectors: Option<u64>,
    /// The `VectorSnapshot` that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Where it is: `s3://bucket/prefix/<collection>/<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Bytes stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The snapshot schedule's position.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// RFC 3339 time of the last tick handled (a snapshot created, or skipped because one
    /// was running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<String>,
    /// RFC 3339 time of the next tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_tick: Option<String>,
}

/// The snapshot a collection is restored from, resolved once at creation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// The snapshot id (`latest` resolved).
    pub snapshot_id: String,
    /// The collection the snapshot was taken of.
    pub source_collection: String,
    /// `s3://bucket/prefix/<collection>/<id>`.
    pub location: String,
    /// Vectors in the snapshot.
    #[serde(default)]
    pub vectors: u64,
    /// Per shard ordinal, the snapshot's shard it restores.
    #[serde(default)]
    pub shard_names: Vec<String>,
    /// Per shard ordinal, the partitions the snapshot's shard held (the new collection's
    /// initial shard map).
    #[serde(default)]
    pub partitions: Vec<Vec<super::PartitionRange>>,
    /// The bucket (its Secrets are read by the pods).
    pub s3: S3Spec,
    /// RFC 3339 time every shard had restored and was ready (absent while restoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}
