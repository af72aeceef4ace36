//! Names, labels and ports of everything the operator creates, in one place so that builders,
//! selectors, the shard map and the docs agree. Pure.

use std::collections::BTreeMap;

/// Port of the gRPC API on shard servers and routers.
pub const GRPC_PORT: i32 = 6334;
/// Port of the HTTP API (and `/metrics`, `/healthz`, `/readyz`).
pub const HTTP_PORT: i32 = 6333;
/// Where a shard server's persistent volume is mounted.
pub const DATA_DIR: &str = "/data";
/// The volumeClaimTemplate of shard StatefulSets (PVCs are named `data-<pod>`).
pub const DATA_VOLUME: &str = "data";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_COLLECTION: &str = "vecshard.io/collection";
pub const LABEL_SHARD: &str = "vecshard.io/shard";

/// The ShardSet (and its StatefulSet, headless Service, PDB, HPA) of shard `ordinal`.
pub fn shard_set_name(collection: &str, ordinal: u32) -> String {
    format!("{collection}-{ordinal}")
}

/// The router Deployment, Service, PDB, HPA, ServiceAccount, Role and RoleBinding.
pub fn router_name(collection: &str) -> String {
    format!("{collection}-router")
}

/// The ConfigMap holding the shard map the routers watch.
/// The operator-issued certificate of a collection's components (router and shards).
pub fn tls_secret_name(collection: &str) -> String {
    format!("{collection}-tls")
}

/// The collection's CA (certificate and key), which signs `tls_secret_name`.
pub fn ca_secret_name(collection: &str) -> String {
    format!("{collection}-ca")
}

pub fn shard_map_name(collection: &str) -> String {
    format!("{collection}-shard-map")
}

/// gRPC address of replica `ordinal` of a shard StatefulSet, through its headless Service
/// (stable across restarts, resolvable before the pod is ready).
pub fn replica_address(shard_set: &str, namespace: &str, ordinal: u32) -> String {
    format!("http://{shard_set}-{ordinal}.{shard_set}.{namespace}.svc:{GRPC_PORT}")
}

/// gRPC addresses of every replica of a shard StatefulSet with `replicas` pods, by ordinal.
pub fn replica_addresses(shard_set: &str, namespace: &str, replicas: i32) -> Vec<String> {
    (0..replicas.max(0) as u32)
        .map(|ordinal| replica_address(shard_set, namespace, ordinal))
        .collect()
}

/// Labels that select a collection's shard pods of one shard.
pub fn shard_selector(collection: &str, shard_set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "vecshard".into()),
        (LABEL_INSTANCE.into(), collection.into()),
        (LABEL_COMPONENT.into(), "shard".into()),
        (LABEL_SHARD.into(), shard_set.into()),
    ])
}

/// Labels that select a collection's router pods.
pub fn router_selector(collection: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.into(), "vecshard".into()),
        (LABEL_INSTANCE.into(), collection.into()),
        (LABEL_COMPONENT.into(), "router".into()),
    ])
}

/// Selector labels plus the ones that say who manages the object.
pub fn labels(selector: BTreeMap<String, String>, collection: &str) -> BTreeMap<String, String> {
    let mut labels = selector;
    labels.insert(LABEL_MANAGED_BY.into(), crate::crd::FIELD_MANAGER.into());
    labels.insert(LABEL_COLLECTION.into(), collection.into());
    labels
}

/// A label selector as the string the scale subresource and HPAs read.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
