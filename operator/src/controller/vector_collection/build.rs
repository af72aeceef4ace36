//! VectorCollection → one ShardSet per shard, the shard-map ConfigMap, and the router
//! (ServiceAccount + Role + RoleBinding to read the map, Deployment, Service, PDB, HPA).
//! Pure: every function takes the `ValidatedCollection` (and, where it matters, what was read
//! from the API) and returns the object to apply; `plan.rs` puts them together.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use serde_json::{json, Value};
use vecshard_proto::shard_map::{self as map, ShardMap, CONFIGMAP_KEY};

use super::validated::ValidatedCollection;
use crate::controller::pod::{
    api_ports, container_security_context, cpu_hpa, extend, pod_security_context, probes,
    scrape_annotations, security_wiring, typed,
};
use crate::crd::{PartitionRange, ShardSet, ShardSetSpec, WriteConsistency};
use crate::error::Result;
use crate::names::{self, GRPC_PORT, HTTP_PORT};

/// Shard `ordinal`'s partitions out of `shards` contiguous, near-equal ranges (the same split
/// as `ShardMap::even`, so a local cluster and a Kubernetes one agree).
pub fn partition_range(partitions: u32, shards: u32, ordinal: u32) -> PartitionRange {
    let (p, n, i) = (
        u64::from(partitions),
        u64::from(shards.max(1)),
        u64::from(ordinal),
    );
    PartitionRange {
        start: (i * p / n) as u32,
        end: ((i + 1) * p / n) as u32 - 1,
    }
}

/// Replicas for a ShardSet: the collection's, unless an autoscaler owns the number, in which
/// case the live ShardSet's count is kept (so the operator and the HPA do not fight).
pub fn shard_replicas(vc: &ValidatedCollection, existing: Option<&ShardSet>) -> i32 {
    match (&vc.autoscaling, existing) {
        (Some(a), Some(ss)) => ss.spec.replicas.clamp(
            a.min_replicas as i32,
            a.max_replicas.max(a.min_replicas) as i32,
        ),
        _ => vc.replicas as i32,
    }
}

/// The ShardSet of a collection that never rebalanced: its even share of the partitions, with
/// the collection's autoscaling.
pub fn build_shard_set(vc: &ValidatedCollection, ordinal: u32, replicas: i32) -> Result<ShardSet> {
    let even = vec![partition_range(vc.partitions, vc.shards, ordinal)];
    build_shard_set_owning(vc, ordinal, replicas, even, true)
}

/// The ShardSet of shard `ordinal` owning `partitions` (as the shard map says); `autoscaled`
/// false pauses its HPA (while it gives partitions away or leaves the collection).
pub fn build_shard_set_owning(
    vc: &ValidatedCollection,
    ordinal: u32,
    replicas: i32,
    partitions: Vec<PartitionRange>,
    autoscaled: bool,
) -> Result<ShardSet> {
    let name = names::shard_set_name(&vc.name, ordinal);
    let mut ss = ShardSet::new(
        &name,
        ShardSetSpec {
            collection: vc.name.clone(),
            shard: ordinal,
            replicas,
            partitions,
            partition_count: vc.partitions,
            dimension: vc.dimension,
            metric: vc.metric,
            quantization: vc.quantization,
            index: vc.index.spec(),
            indexed_fields: vc.indexed_fields.clone(),
            device: vc.device,
            image: vc.image.clone(),
            resources: vc.resources.clone(),
            storage: vc.storage.clone(),
            autoscaling: vc.autoscaling.clone().filter(|_| autoscaled),
            restore: vc.restore.as_ref().map(|r| r.for_shard(ordinal)),
            security: vc.pod_security.clone(),
        },
    );
    let selector = names::shard_selector(&vc.name, &name);
    ss.metadata = vc.child_meta(name, names::labels(selector, &vc.name))?;
    Ok(ss)
}

/// A ShardSet's replica addresses split into serving (pods ready, hence caught up with their
/// peers: `status.readyOrdinals`) and joining (the others: starting, catching up, restarting).
/// When none is ready all serve, as before any was: a shard whose every pod fails its probe
/// (an overload, a new collection) is better served as it can be than not at all.
pub fn serving_and_joining(vc: &ValidatedCollection, ss: &ShardSet) -> (Vec<String>, Vec<String>) {
    let all = names::replica_addresses(&ss.name_any(), &vc.namespace, ss.spec.replicas);
    let ready: &[u32] = ss
        .status
        .as_ref()
        .map(|s| s.ready_ordinals.as_slice())
        .unwrap_or_default();
    if !ready.iter().any(|&o| (o as usize) < all.len()) {
        return (all, Vec::new());
    }
    let (mut serving, mut joining) = (Vec::new(), Vec::new());
    for (ordinal, addr) in all.into_iter().enumerate() {
        if ready.contains(&(ordinal as u32)) {
            serving.push(addr);
        } else {
            joining.push(addr);
        }
    }
    (serving, joining)
}

/// The shard map the routers watch. Partition ownership (and moves in progress) come from the
/// stored map, which only rebalancing changes; replicas come from the ShardSets (their stable
/// DNS names). Without a stored map (a new collection, or the ConfigMap was lost) it is built
/// from the ShardSets' partitions, which mirror the map. The version goes up only when the
/// content changes, so routers can ignore re-applies and never go back; `published` (the
/// collection status's last version) keeps it going up when the stored map was lost.
pub fn build_shard_map(
    vc: &ValidatedCollection,
    shard_sets: &[ShardSet],
    previous: Option<&ShardMap>,
    published: u64,
) -> ShardMap {
    let replicas_of = |ss: &ShardSet| serving_and_joining(vc, ss).0;
    let mut next = match previous {
        Some(prev) => {
            let mut next = prev.clone();
            for shard in &mut next.shards {
                if let Some(ss) = shard_sets.iter().find(|ss| ss.name_any() == shard.name) {
                    (shard.replicas, shard.joining) = serving_and_joining(vc, ss);
                }
            }
            next
        }
        None => {
            let mut sorted: Vec<&ShardSet> = shard_sets
                .iter()
                .filter(|ss| !ss.spec.partitions.is_empty())
                .collect();
            sorted.sort_by_key(|ss| ss.spec.shard);
            ShardMap {
                version: 1,
                collection: vc.name.clone(),
                partitions: vc.partitions,
                shards: sorted
                    .into_iter()
                    .map(|ss| map::ShardAssignment {
                        name: ss.name_any(),
                        partitions: ss
                            .spec
                            .partitions
                            .iter()
                            .map(|r| map::PartitionRange {
                                start: r.start,
                                end: r.end,
                            })
                            .collect(),
                        replicas: replicas_of(ss),
                        joining: serving_and_joining(vc, ss).1,
                    })
                    .collect(),
                moves: Vec::new(),
            }
        }
    };
    match previous {
        Some(prev) => {
            next.version = prev.version;
            if *prev != next {
                next.version = prev.version.max(published) + 1;
            }
        }
        None => next.version = published + 1,
    }
    next
}

/// Shard `name`'s partitions in `map`, as ShardSet ranges.
pub fn partitions_in_map(map: &ShardMap, name: &str) -> Vec<PartitionRange> {
    map.shard(name)
        .map(|s| {
            s.partitions
                .iter()
                .map(|r| PartitionRange {
                    start: r.start,
                    end: r.end,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The shard map as stored in its ConfigMap; `None` when the stored JSON is unreadable.
pub fn read_shard_map(cm: &ConfigMap) -> Option<ShardMap> {
    let json = cm.data.as_ref()?.get(CONFIGMAP_KEY)?;
    serde_json::from_str(json).ok()
}

pub fn build_shard_map_config_map(vc: &ValidatedCollection, map: &ShardMap) -> Result<ConfigMap> {
    let name = names::shard_map_name(&vc.name);
    Ok(ConfigMap {
        metadata: vc.child_meta(name, collection_labels(vc))?,
        data: Some(BTreeMap::from([(
            CONFIGMAP_KEY.to_string(),
            serde_json::to_string_pretty(map).expect("serializes"),
        )])),
        ..ConfigMap::default()
    })
}

fn collection_labels(vc: &ValidatedCollection) -> BTreeMap<String, String> {
    names::labels(
        BTreeMap::from([
            (names::LABEL_NAME.to_string(), "vecshard".to_string()),
            (names::LABEL_INSTANCE.to_string(), vc.name.clone()),
        ]),
        &vc.name,
    )
}

fn router_labels(vc: &ValidatedCollection) -> BTreeMap<String, String> {
    names::labels(names::router_selector(&vc.name), &vc.name)
}

/// The routers' identity: they may read (and watch) their own shard-map ConfigMap, nothing
/// else.
pub fn build_router_rbac(vc: &ValidatedCollection) -> Result<(ServiceAccount, Role, RoleBinding)> {
    let name = names::router_name(&vc.name);
    let labels = router_labels(vc);
    let account = ServiceAccount {
        metadata: vc.child_meta(name.clone(), labels.clone())?,
        ..ServiceAccount::default()
    };
    let mut role: Role = typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "rules": [{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [names::shard_map_name(&vc.name)],
            "verbs": ["get", "list", "watch"],
        }],
    }));
    role.metadata = vc.child_meta(name.clone(), labels.clone())?;
    let mut binding: RoleBinding = typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": vc.owner().namespace()}],
    }));
    binding.metadata = vc.child_meta(name, labels)?;
    Ok((account, role, binding))
}

pub fn build_router_deployment(vc: &ValidatedCollection) -> Result<Deployment> {
    let name = names::router_name(&vc.name);
    let router = &vc.router;
    let consistency = match vc.write_consistency {
        WriteConsistency::One => "one",
        WriteConsistency::Quorum => "quorum",
        WriteConsistency::All => "all",
    };
    let var = |name: &str, value: String| json!({"name": name, "value": value});
    let mut container = json!({
        "name": "router",
        "image": vc.image,
        "args": ["router"],
        "env": [
            var(
                "VECSHARD_SHARD_MAP_CONFIGMAP",
                format!("{}/{}", vc.namespace, names::shard_map_name(&vc.name)),
            ),
            var("VECSHARD_GRPC_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
            var("VECSHARD_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
            var("VECSHARD_WRITE_CONSISTENCY", consistency.into()),
            var("VECSHARD_CACHE_ENTRIES", router.cache_entries.to_string()),
            var("VECSHARD_CACHE_TTL_MS", (u64::from(router.cache_ttl_seconds) * 1000).to_string()),
            var("RUST_LOG", "info".into()),
        ],
        "ports": api_ports(),
        "resources": router_resources(vc),
        "securityContext": container_security_context(),
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    });
    let security = security_wiring(vc.pod_security.as_ref(), false);
    for (k, v) in probes(60, security.https).as_object().expect("object") {
        container[k] = v.clone();
    }
    extend(&mut container["env"], security.env);
    if !security.mounts.is_empty() {
        container["volumeMounts"] = Value::Array(security.mounts);
    }
    let selector = names::router_selector(&vc.name);
    let mut spec = json!({
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": router_labels(vc), "annotations": scrape_annotations(security.https)},
            "spec": {
                "serviceAccountName": name,
                "volumes": (!security.volumes.is_empty()).then_some(security.volumes),
                "securityContext": pod_security_context(),
                "terminationGracePeriodSeconds": 30,
                "containers": [container],
            },
        },
    });
    // With an autoscaler the HPA owns the replica count.
    if vc.autoscaling.is_none() {
        spec["replicas"] = json!(router.replicas);
    }
    let mut deployment: Deployment =
        typed(json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": spec}));
    deployment.metadata = vc.child_meta(name, router_labels(vc))?;
    Ok(deployment)
}

/// The collection's address for applications: `<collection>-router:6334` (gRPC) and `:6333`.
pub fn build_router_service(vc: &ValidatedCollection) -> Result<Service> {
    let mut svc: Service = typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {
            "selector": names::router_selector(&vc.name),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }));
    svc.metadata = vc.child_meta(names::router_name(&vc.name), router_labels(vc))?;
    Ok(svc)
}

pub fn build_router_pdb(vc: &ValidatedCollection) -> Result<PodDisruptionBudget> {
    let mut pdb: PodDisruptionBudget = typed(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names::router_selector(&vc.name)}},
    }));
    pdb.metadata = vc.child_meta(names::router_name(&vc.name), router_labels(vc))?;
    Ok(pdb)
}

/// Routers scale on their own CPU use (`autoscaling.routerTargetCpuUtilizationPercent`,
/// default 70 % of their request), between `router.replicas` and `autoscaling.maxReplicas`.
/// Not on search latency, as the shards do: a router's latency is mostly the shards' time, so
/// a latency HPA on the routers would add routers whenever the shards are slow, which lowers
/// nothing, and the two autoscalers would chase the same number. A router's own work (fan-out,
/// merging, TLS and protocol handling) shows in its CPU.
pub fn build_router_hpa(vc: &ValidatedCollection) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(spec) = &vc.autoscaling else {
        return Ok(None);
    };
    let name = names::router_name(&vc.name);
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": name});
    let meta = vc.child_meta(name, router_labels(vc))?;
    let min = vc.router.replicas;
    Ok(Some(cpu_hpa(
        meta,
        target,
        min,
        spec.max_replicas.max(min),
        spec.router_target_cpu_utilization_percent
            .unwrap_or(DEFAULT_ROUTER_CPU_UTILIZATION),
        spec,
    )))
}

/// The routers' CPU target when `routerTargetCpuUtilizationPercent` is unset.
pub const DEFAULT_ROUTER_CPU_UTILIZATION: u32 = 70;

/// The CPU request a router gets under autoscaling when `router.resources` names none: a CPU
/// utilization target is a share of the request, so without one the HPA has nothing to divide
/// by and reports `FailedGetResourceMetric`.
pub const DEFAULT_ROUTER_CPU_REQUEST: &str = "250m";

/// The router container's resources: the user's, plus a CPU request under autoscaling when
/// they set none.
fn router_resources(vc: &ValidatedCollection) -> Value {
    let mut resources =
        serde_json::to_value(vc.router.resources.clone().unwrap_or_default()).expect("serializes");
    let has_cpu_request = resources
        .pointer("/requests/cpu")
        .is_some_and(|v| !v.is_null());
    if vc.autoscaling.is_some() && !has_cpu_request {
        let requests = &mut resources["requests"];
        if !requests.is_object() {
            *requests = json!({});
        }
        requests["cpu"] = json!(DEFAULT_ROUTER_CPU_REQUEST);
    }
    resources
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
