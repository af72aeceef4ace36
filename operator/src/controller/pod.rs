//! Pieces shared by the shard StatefulSet and the router Deployment: pod and container
//! security, probes, the latency-driven HPA, and `typed`, which turns the JSON the builders
//! write (it reads like the YAML users know) into Kubernetes types. Pure.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::crd::{AutoscalingSpec, PodSecurity};
use crate::names::HTTP_PORT;

/// The custom metric the HPAs read (per-pod p95 search latency, in seconds), served by
/// prometheus-adapter from `vecshard_search_duration_seconds`.
pub const LATENCY_METRIC: &str = "vecshard_search_p95_seconds";
/// Non-root user of the vecshard image.
pub const RUN_AS_USER: i64 = 65532;

/// Deserializes builder JSON into a Kubernetes type. In debug builds (tests) it also checks
/// that nothing was dropped on the way, so a misspelt field fails a test instead of vanishing.
pub fn typed<T: DeserializeOwned + Serialize>(value: Value) -> T {
    let object: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| {
        panic!(
            "builder JSON does not fit {}: {e}",
            std::any::type_name::<T>()
        )
    });
    if cfg!(debug_assertions) {
        let back = serde_json::to_value(&object).expect("serializes");
        if let Some(path) = dropped(&value, &back, String::new()) {
            panic!(
                "{} has no field {path} (misspelt?)",
                std::any::type_name::<T>()
            );
        }
    }
    object
}

/// The first path present (and not null) in `source` but missing from `parsed`.
fn dropped(source: &Value, parsed: &Value, path: String) -> Option<String> {
    match (source, parsed) {
        (Value::Object(s), Value::Object(p)) => s.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match p.get(k) {
                _ if v.is_null() => None,
                None => Some(here),
                Some(pv) => dropped(v, pv, here),
            }
        }),
        (Value::Array(s), Value::Array(p)) => s
            .iter()
            .zip(p)
            .enumerate()
            .find_map(|(i, (sv, pv))| dropped(sv, pv, format!("{path}[{i}]"))),
        _ => None,
    }
}

pub fn pod_security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

pub fn container_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    })
}

/// Startup (generous: a large shard loads its index first), liveness and readiness probes;
/// over HTTPS when the pod serves TLS (kubelet does not check the certificate).
pub fn probes(startup_seconds: i32, https: bool) -> Value {
    let scheme = if https { "HTTPS" } else { "HTTP" };
    let get = |path: &str| json!({"path": path, "port": "http", "scheme": scheme});
    json!({
        "startupProbe": {"httpGet": get("/healthz"), "periodSeconds": 5, "failureThreshold": startup_seconds / 5},
        "livenessProbe": {"httpGet": get("/healthz"), "periodSeconds": 10, "failureThreshold": 6},
        "readinessProbe": {"httpGet": get("/readyz"), "periodSeconds": 5, "failureThreshold": 2},
    })
}

pub fn api_ports() -> Value {
    json!([
        {"name": "grpc", "containerPort": crate::names::GRPC_PORT, "protocol": "TCP"},
        {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
    ])
}

/// Pod annotations for Prometheus' common pod-scrape configuration.
pub fn scrape_annotations(https: bool) -> Value {
    let mut annotations = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": HTTP_PORT.to_string(),
        "prometheus.io/path": "/metrics",
    });
    if https {
        annotations["prometheus.io/scheme"] = json!("https");
    }
    annotations
}

/// Where pods find their certificate and API keys.
pub const TLS_DIR: &str = "/etc/vecshard/tls";
pub const API_KEYS_DIR: &str = "/etc/vecshard/api-keys";

/// A pod's TLS and API-key wiring: the environment of `vecshard-server`, the Secret volumes
/// and their mounts. Shards serve the collection's components only (`components_only`).
pub struct SecurityWiring {
    pub env: Vec<Value>,
    pub volumes: Vec<Value>,
    pub mounts: Vec<Value>,
    pub https: bool,
}

/// Appends `items` to the JSON array at `array`.
pub fn extend(array: &mut Value, items: Vec<Value>) {
    array.as_array_mut().expect("array").extend(items);
}

pub fn security_wiring(security: Option<&PodSecurity>, components_only: bool) -> SecurityWiring {
    let var = |name: &str, value: String| json!({"name": name, "value": value});
    let mut wiring = SecurityWiring {
        env: Vec::new(),
        volumes: Vec::new(),
        mounts: Vec::new(),
        https: false,
    };
    let Some(security) = security else {
        return wiring;
    };
    if let Some(secret) = &security.tls_secret {
        wiring.https = true;
        wiring.env.extend([
            var("VECSHARD_TLS_CERT", format!("{TLS_DIR}/tls.crt")),
            var("VECSHARD_TLS_KEY", format!("{TLS_DIR}/tls.key")),
            var("VECSHARD_TLS_CA", format!("{TLS_DIR}/ca.crt")),
        ]);
        if components_only {
            wiring
                .env
                .push(var("VECSHARD_COMPONENTS_ONLY", "true".into()));
        }
        // The key is readable by the pod's user only (fsGroup makes it group-readable).
        wiring
            .volumes
            .push(json!({"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}}));
        wiring
            .mounts
            .push(json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}));
    }
    if let Some(secret) = &security.api_key_secret {
        wiring
            .env
            .push(var("VECSHARD_API_KEYS_DIR", API_KEYS_DIR.into()));
        wiring.volumes.push(
            json!({"name": "api-keys", "secret": {"secretName": secret, "defaultMode": 0o440}}),
        );
        wiring
            .mounts
            .push(json!({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": true}));
    }
    if security.metrics_need_key {
        wiring
            .env
            .push(var("VECSHARD_METRICS_NEED_KEY", "true".into()));
    }
    wiring
}

/// An `autoscaling/v2` HPA that keeps each pod's p95 search latency at the target.
pub fn latency_hpa(
    meta: ObjectMeta,
    target: Value,
    min_replicas: u32,
    max_replicas: u32,
    spec: &AutoscalingSpec,
) -> HorizontalPodAutoscaler {
    let metric = json!({
        "type": "Pods",
        "pods": {
            "metric": {"name": LATENCY_METRIC},
            // Milli-units of seconds: 50 ms is "50m".
            "target": {"type": "AverageValue", "averageValue": format!("{}m", spec.target_p95_latency_ms)},
        },
    });
    hpa(meta, target, (min_replicas, max_replicas), metric, spec)
}

/// An `autoscaling/v2` HPA that keeps the pods' average CPU use at `percent` of their request.
pub fn cpu_hpa(
    meta: ObjectMeta,
    target: Value,
    min_replicas: u32,
    max_replicas: u32,
    percent: u32,
    spec: &AutoscalingSpec,
) -> HorizontalPodAutoscaler {
    let metric = json!({
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}},
    });
    hpa(meta, target, (min_replicas, max_replicas), metric, spec)
}

/// An HPA on one metric with the collection's stabilization windows.
fn hpa(
    meta: ObjectMeta,
    target: Value,
    (min_replicas, max_replicas): (u32, u32),
    metric: Value,
    spec: &AutoscalingSpec,
) -> HorizontalPodAutoscaler {
    let window = |seconds: Option<u32>| seconds.map(|s| json!({"stabilizationWindowSeconds": s}));
    let mut hpa: HorizontalPodAutoscaler = typed(json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas.max(min_replicas),
            "metrics": [metric],
            "behavior": {
                "scaleUp": window(spec.scale_up_stabilization_seconds),
                "scaleDown": window(Some(spec.scale_down_stabilization_seconds.unwrap_or(300))),
            },
        },
    }));
    hpa.metadata = meta;
    hpa
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    #[should_panic(expected = "has no field .spec.clusterIp")]
    fn a_misspelt_field_fails_instead_of_vanishing() {
        let _: Service = typed(json!({"spec": {"clusterIp": "None"}}));
    }

    #[test]
    fn the_latency_target_is_written_in_milliseconds_of_seconds() {
        let spec: AutoscalingSpec = serde_json::from_value(
            json!({"minReplicas": 1, "maxReplicas": 3, "targetP95LatencyMs": 120}),
        )
        .unwrap();
        let hpa = latency_hpa(
            ObjectMeta::default(),
            json!({"kind": "ShardSet", "name": "x"}),
            1,
            3,
            &spec,
        );
        let target = &hpa.spec.unwrap().metrics.unwrap()[0];
        assert_eq!(
            target
                .pods
                .as_ref()
                .unwrap()
                .target
                .average_value
                .as_ref()
                .unwrap()
                .0,
            "120m"
        );
    }
}
