use super::*;
use crate::crd::{IndexKind, ShardSet};

fn shard_set(extra: &str) -> ShardSet {
    serde_yaml::from_str(&format!(
        "
apiVersion: vecshard.io/v1alpha1
kind: ShardSet
metadata: {{name: docs-1, namespace: search, uid: 5f0c-uid, generation: 3}}
spec:
  collection: docs
  shard: 1
  replicas: 3
  partitions: [{{start: 128, end: 255}}]
  partitionCount: 256
  dimension: 384
  metric: cosine
  quantization: i8
  index: {{type: hnsw, m: 16, efConstruction: 128, efSearch: 64}}
  indexedFields: [{{name: pos, type: keyword}}, {{name: year, type: integer}}]
  device: cpu
  image: vecshard/vecshard-server:0.1.0
  storage: {{size: 20Gi, storageClassName: fast, whenDeleted: Delete}}
{extra}"
    ))
    .unwrap()
}

fn env(sts: &StatefulSet) -> std::collections::BTreeMap<String, String> {
    let c = &sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    c.env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

#[test]
fn the_statefulset_runs_the_shard_with_the_collection_settings() {
    let sts = build_statefulset(&shard_set("")).unwrap();
    let env = env(&sts);
    assert_eq!(env["VECSHARD_COLLECTION"], "docs");
    assert_eq!(env["VECSHARD_SHARD_NAME"], "docs-1");
    assert_eq!(env["VECSHARD_DIMENSION"], "384");
    assert_eq!(env["VECSHARD_QUANTIZATION"], "i8");
    assert_eq!(env["VECSHARD_PARTITIONS"], "256");
    assert_eq!(env["VECSHARD_DEVICE"], "cpu");
    assert_eq!(env["VECSHARD_INDEX"], "hnsw");
    assert_eq!(env["VECSHARD_INDEX_FIELD"], "pos:keyword,year:integer");
    assert_eq!(env["VECSHARD_PEER_SERVICE"], "docs-1.search.svc:6334");
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("docs-1"));
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("ShardSet", "5f0c-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(sts.metadata.namespace.as_deref(), Some("search"));
}

#[test]
fn the_pod_is_probed_drained_and_locked_down() {
    let sts = build_statefulset(&shard_set("")).unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
            .unwrap()
    };
    assert_eq!(path(&c.readiness_probe), "/readyz");
    assert_eq!(path(&c.liveness_probe), "/healthz");
    assert_eq!(path(&c.startup_probe), "/healthz");
    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 5);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let spread: Vec<_> = pod
        .topology_spread_constraints
        .unwrap()
        .into_iter()
        .map(|t| t.topology_key)
        .collect();
    assert_eq!(
        spread,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    assert!(pod.tolerations.is_none() && pod.node_selector.is_none());
}

#[test]
fn volumes_come_from_the_storage_spec_and_follow_its_retention() {
    let sts = build_statefulset(&shard_set("")).unwrap();
    let spec = sts.spec.unwrap();
    let claim = &spec.volume_claim_templates.unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "20Gi"
    );
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
}

#[test]
fn flat_shards_run_without_a_graph_and_keep_the_hnsw_settings() {
    let mut ss = shard_set("");
    ss.spec.index.kind = IndexKind::Flat;
    let env = env(&build_statefulset(&ss).unwrap());
    assert_eq!(env["VECSHARD_INDEX"], "flat");
    assert_eq!(env["VECSHARD_HNSW_M"], "16");
}

#[test]
fn gpu_shards_ask_for_a_gpu_and_tolerate_gpu_nodes() {
    let mut ss = shard_set("  resources: {limits: {memory: 8Gi}, requests: {cpu: '2'}}\n");
    ss.spec.device = Device::Gpu;
    let sts = build_statefulset(&ss).unwrap();
    assert_eq!(
        env(&sts)["VECSHARD_DEVICE"],
        "gpu",
        "no GPU: the pod refuses to start"
    );
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let limits = pod.containers[0]
        .resources
        .as_ref()
        .unwrap()
        .limits
        .clone()
        .unwrap();
    assert_eq!(limits[GPU_RESOURCE].0, "1");
    assert_eq!(limits["memory"].0, "8Gi", "the spec's own limits are kept");
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some(GPU_RESOURCE)
    );
    assert_eq!(pod.node_selector.unwrap()["nvidia.com/gpu.present"], "true");
}

#[test]
fn the_headless_service_publishes_replicas_before_they_are_ready() {
    let svc = build_headless_service(&shard_set("")).unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector.unwrap()["vecshard.io/shard"], "docs-1");
}

#[test]
fn the_pdb_lets_one_replica_go_at_a_time() {
    let pdb = build_pdb(&shard_set("")).unwrap();
    let spec = pdb.spec.unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
}

#[test]
fn autoscaling_targets_the_shard_set_scale_subresource_on_p95_latency() {
    assert!(build_hpa(&shard_set("")).unwrap().is_none());
    let ss = shard_set(
        "  autoscaling: {minReplicas: 2, maxReplicas: 6, targetP95LatencyMs: 25, scaleUpStabilizationSeconds: 30}\n",
    );
    let hpa = build_hpa(&ss).unwrap().unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(spec.scale_target_ref.kind, "ShardSet");
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("vecshard.io/v1alpha1")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
    let metric = spec.metrics.unwrap()[0].pods.clone().unwrap();
    assert_eq!(metric.metric.name, "vecshard_search_p95_seconds");
    assert_eq!(metric.target.average_value.unwrap().0, "25m");
    let behavior = spec.behavior.unwrap();
    assert_eq!(
        behavior.scale_up.unwrap().stabilization_window_seconds,
        Some(30)
    );
    assert_eq!(
        behavior.scale_down.unwrap().stabilization_window_seconds,
        Some(300)
    );
}

#[test]
fn a_restoring_shard_points_its_pods_at_the_snapshot_without_copying_the_credentials() {
    let ss = shard_set(
        "  restore:
    s3: {bucket: backups, prefix: p, endpoint: 'http://minio:9000', region: eu-west-1, credentialsSecret: s3-creds, caSecret: s3-ca}
    collection: old
    snapshot: 20261206T031502Z-9c1e
    shard: old-1
",
    );
    let sts = build_statefulset(&ss).unwrap();
    let vars = env(&sts);
    assert_eq!(vars["VECSHARD_RESTORE_FROM"], "s3://backups/p");
    assert_eq!(vars["VECSHARD_RESTORE_COLLECTION"], "old");
    assert_eq!(vars["VECSHARD_RESTORE_SNAPSHOT"], "20261206T031502Z-9c1e");
    assert_eq!(vars["VECSHARD_RESTORE_SHARD"], "old-1");
    assert_eq!(vars["VECSHARD_S3_ENDPOINT"], "http://minio:9000");
    assert_eq!(vars["VECSHARD_S3_ALLOW_HTTP"], "true");
    assert_eq!(vars["VECSHARD_S3_CA_FILE"], "/etc/vecshard/s3-ca/ca.crt");
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let var = c.env.iter().flatten().find(|e| e.name == key).unwrap();
        assert!(var.value.is_none(), "{key} is copied into the pod spec");
        let by_ref = var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (by_ref.name.as_str(), by_ref.key.as_str()),
            ("s3-creds", key)
        );
    }
    let startup = c.startup_probe.as_ref().unwrap();
    assert_eq!(startup.failure_threshold, Some(3600 / 5));
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    assert!(pod.volumes.iter().flatten().any(|v| v
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        == Some("s3-ca")));
    // Without a restore: no such variables, the usual startup probe.
    let plain = build_statefulset(&shard_set("")).unwrap();
    assert!(!env(&plain).contains_key("VECSHARD_RESTORE_FROM"));
}
