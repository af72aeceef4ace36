//! ShardSet → StatefulSet, headless Service, PodDisruptionBudget and (with autoscaling) an HPA.
//! Pure: every function takes the ShardSet as read from the API and returns the object to apply;
//! `children` puts them together. The ShardSet is already the validated view: the collection's
//! controller built it from a `ValidatedCollection`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::controller::apply::Desired;
use crate::controller::meta::child_meta;
use crate::controller::pod::{
    api_ports, container_security_context, extend, latency_hpa, pod_security_context, probes,
    scrape_annotations, security_wiring, typed,
};
use crate::crd::{Device, IndexedField, ShardRestore, ShardSet, VolumeRetention};
use crate::error::Result;
use crate::names::{self, DATA_DIR, DATA_VOLUME, GRPC_PORT, HTTP_PORT};

/// The children of a ShardSet, in the order they are applied.
#[derive(Clone, Debug)]
pub struct Children {
    pub statefulset: StatefulSet,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub hpa: Desired<HorizontalPodAutoscaler>,
}

pub fn children(ss: &ShardSet) -> Result<Children> {
    Ok(Children {
        statefulset: build_statefulset(ss)?,
        service: build_headless_service(ss)?,
        pdb: build_pdb(ss)?,
        hpa: match build_hpa(ss)? {
            Some(hpa) => Desired::Present(hpa),
            None => Desired::Absent {
                name: ss.name_any(),
            },
        },
    })
}

/// Seconds a shard server may take to open its store and load its index before it is restarted.
const STARTUP_SECONDS: i32 = 600;
/// Extended resource of the NVIDIA device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

fn selector(ss: &ShardSet) -> std::collections::BTreeMap<String, String> {
    names::shard_selector(&ss.spec.collection, &ss.name_any())
}

fn labels(ss: &ShardSet) -> std::collections::BTreeMap<String, String> {
    names::labels(selector(ss), &ss.spec.collection)
}

/// `pos:keyword,year:integer`, as `--index-field` takes it.
fn index_fields_arg(fields: &[IndexedField]) -> String {
    fields
        .iter()
        .map(|f| {
            let kind = serde_json::to_value(f.kind).expect("serializes");
            format!("{}:{}", f.name, kind.as_str().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn enum_str<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The shard server container's environment: every setting as the `VECSHARD_…` variable the
/// server reads, so the pod spec shows the whole configuration.
fn shard_env(ss: &ShardSet) -> Value {
    let s = &ss.spec;
    let ns = ss.namespace().unwrap_or_default();
    let var = |name: &str, value: String| json!({"name": name, "value": value});
    let mut env = vec![
        var("VECSHARD_COLLECTION", s.collection.clone()),
        var("VECSHARD_SHARD_NAME", ss.name_any()),
        var("VECSHARD_DIMENSION", s.dimension.to_string()),
        var("VECSHARD_METRIC", enum_str(s.metric)),
        var("VECSHARD_QUANTIZATION", enum_str(s.quantization)),
        var("VECSHARD_HNSW_M", s.index.m.to_string()),
        var(
            "VECSHARD_HNSW_EF_CONSTRUCTION",
            s.index.ef_construction.to_string(),
        ),
        var("VECSHARD_HNSW_EF_SEARCH", s.index.ef_search.to_string()),
        var("VECSHARD_PARTITIONS", s.partition_count.to_string()),
        var("VECSHARD_DEVICE", enum_str(s.device)),
        var("VECSHARD_INDEX", enum_str(s.index.kind)),
        var("VECSHARD_DATA_DIR", DATA_DIR.to_string()),
        var("VECSHARD_GRPC_LISTEN", format!("0.0.0.0:{GRPC_PORT}")),
        var("VECSHARD_HTTP_LISTEN", format!("0.0.0.0:{HTTP_PORT}")),
        // The headless Service resolves to every replica, ready or not: the peers to catch up
        // from, found again each round as pods come and go.
        var(
            "VECSHARD_PEER_SERVICE",
            format!("{}.{ns}.svc:{GRPC_PORT}", ss.name_any()),
        ),
        json!({"name": "VECSHARD_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        var("RUST_LOG", "info".into()),
    ];
    if !s.indexed_fields.is_empty() {
        env.push(var(
            "VECSHARD_INDEX_FIELD",
            index_fields_arg(&s.indexed_fields),
        ));
    }
    if let Some(r) = &s.restore {
        env.extend(restore_env(r));
    }
    Value::Array(env)
}

/// Where an empty volume is filled from (`vecshard-server shard --restore-from`): the bucket,
/// the snapshot, and the credentials as references to their Secret (never copied).
fn restore_env(r: &ShardRestore) -> Vec<Value> {
    let var = |name: &str, value: String| json!({"name": name, "value": value});
    let secret = |name: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": r.s3.credentials_secret, "key": name}}});
    let endpoint = r.s3.endpoint.clone().unwrap_or_default();
    let mut env = vec![
        var("VECSHARD_RESTORE_FROM", r.s3.url()),
        var("VECSHARD_RESTORE_COLLECTION", r.collection.clone()),
        var("VECSHARD_RESTORE_SNAPSHOT", r.snapshot.clone()),
        var("VECSHARD_RESTORE_SHARD", r.shard.clone()),
        var("VECSHARD_S3_REGION", r.s3.region.clone()),
        var(
            "VECSHARD_S3_ALLOW_HTTP",
            endpoint.starts_with("http://").to_string(),
        ),
        var("VECSHARD_S3_ENDPOINT", endpoint),
        secret("AWS_ACCESS_KEY_ID"),
        secret("AWS_SECRET_ACCESS_KEY"),
    ];
    if r.s3.ca_secret.is_some() {
        env.push(var("VECSHARD_S3_CA_FILE", format!("{S3_CA_DIR}/ca.crt")));
    }
    env
}

/// Where the restore's CA Secret is mounted.
const S3_CA_DIR: &str = "/etc/vecshard/s3-ca";
/// A restore downloads and verifies the whole shard before the server listens: the startup
/// probe allows an hour for it.
const RESTORE_STARTUP_SECONDS: i32 = 3600;

/// The spec's resources, plus one GPU when the shard runs on GPUs.
fn resources(ss: &ShardSet) -> Value {
    let mut r =
        serde_json::to_value(ss.spec.resources.clone().unwrap_or_default()).expect("serializes");
    if ss.spec.device == Device::Gpu {
        r["limits"][GPU_RESOURCE] = json!("1");
    }
    r
}

fn spread(selector: &Value) -> Value {
    let by = |key: &str| {
        json!({
            "maxSkew": 1,
            "topologyKey": key,
            // Spread when the cluster allows it; a one-node cluster still runs every replica.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        })
    };
    json!([
        by("kubernetes.io/hostname"),
        by("topology.kubernetes.io/zone")
    ])
}

pub fn build_statefulset(ss: &ShardSet) -> Result<StatefulSet> {
    let selector = json!(selector(ss));
    let gpu = ss.spec.device == Device::Gpu;
    let security = security_wiring(ss.spec.security.as_ref(), true);
    let mut pod_spec = json!({
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": 60,
        "topologySpreadConstraints": spread(&selector),
        "containers": [{
            "name": "shard",
            "image": ss.spec.image,
            "args": ["shard"],
            "env": shard_env(ss),
            "ports": api_ports(),
            "resources": resources(ss),
            "securityContext": container_security_context(),
            "volumeMounts": [
                {"name": DATA_VOLUME, "mountPath": DATA_DIR},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            // Endpoints drop the pod before it stops accepting requests; the server then
            // drains in-flight requests on SIGTERM.
            "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        }],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    });
    let startup = match ss.spec.restore {
        Some(_) => RESTORE_STARTUP_SECONDS,
        None => STARTUP_SECONDS,
    };
    for (k, v) in probes(startup, security.https).as_object().expect("object") {
        pod_spec["containers"][0][k] = v.clone();
    }
    extend(&mut pod_spec["containers"][0]["env"], security.env);
    extend(
        &mut pod_spec["containers"][0]["volumeMounts"],
        security.mounts,
    );
    extend(&mut pod_spec["volumes"], security.volumes);
    // A failed restore (a corrupt object, a missing snapshot) shows in the pod's status.
    pod_spec["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    if let Some(ca) = ss
        .spec
        .restore
        .as_ref()
        .and_then(|r| r.s3.ca_secret.as_ref())
    {
        pod_spec["volumes"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": "s3-ca", "secret": {"secretName": ca}}));
        pod_spec["containers"][0]["volumeMounts"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": "s3-ca", "mountPath": S3_CA_DIR, "readOnly": true}));
    }
    if gpu {
        pod_spec["tolerations"] =
            json!([{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]);
        pod_spec["nodeSelector"] = json!({"nvidia.com/gpu.present": "true"});
    }
    let storage = &ss.spec.storage;
    let mut claim = json!({
        "metadata": {"name": DATA_VOLUME, "labels": labels(ss)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": storage.size}},
        },
    });
    if let Some(class) = &storage.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let when_deleted = match storage.when_deleted {
        VolumeRetention::Retain => "Retain",
        VolumeRetention::Delete => "Delete",
    };
    let mut sts: StatefulSet = typed(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "spec": {
            "replicas": ss.spec.replicas,
            "serviceName": ss.name_any(),
            // Replicas are peers, not a chain: start and replace them in parallel.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels(ss), "annotations": scrape_annotations(security.https)},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [claim],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
        },
    }));
    sts.metadata = child_meta(ss, ss.name_any(), labels(ss))?;
    Ok(sts)
}

/// Headless: gives every replica a stable DNS name (the router's shard map uses them) and lets
/// replicas find each other before they are ready.
pub fn build_headless_service(ss: &ShardSet) -> Result<Service> {
    let mut svc: Service = typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": selector(ss),
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }));
    svc.metadata = child_meta(ss, ss.name_any(), labels(ss))?;
    Ok(svc)
}

/// One replica of a shard down at a time during drains and upgrades.
pub fn build_pdb(ss: &ShardSet) -> Result<PodDisruptionBudget> {
    let mut pdb: PodDisruptionBudget = typed(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(ss)}},
    }));
    pdb.metadata = child_meta(ss, ss.name_any(), labels(ss))?;
    Ok(pdb)
}

/// The HPA on the ShardSet's scale subresource, when the collection autoscales.
pub fn build_hpa(ss: &ShardSet) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(spec) = &ss.spec.autoscaling else {
        return Ok(None);
    };
    let target =
        json!({"apiVersion": "vecshard.io/v1alpha1", "kind": "ShardSet", "name": ss.name_any()});
    let meta = child_meta(ss, ss.name_any(), labels(ss))?;
    Ok(Some(latency_hpa(
        meta,
        target,
        spec.min_replicas,
        spec.max_replicas,
        spec,
    )))
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
