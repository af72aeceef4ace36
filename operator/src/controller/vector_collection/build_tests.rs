use super::*;
use crate::controller::vector_collection::validate::validate;
use crate::crd::VectorCollection;

fn raw(extra: &str) -> VectorCollection {
    serde_yaml::from_str(&format!(
        "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {{name: docs, namespace: search, uid: 77aa-uid, generation: 2}}
spec:
  dimension: 384
  shards: 3
  partitions: 256
  replicas: 2
  indexedFields: [{{name: pos, type: keyword}}]
{extra}"
    ))
    .unwrap()
}

/// The collection as `validate` hands it to the builders.
fn collection(extra: &str) -> ValidatedCollection {
    validate(&raw(extra), &[]).unwrap()
}

#[test]
fn partitions_are_split_into_contiguous_ranges_that_cover_all() {
    let ranges: Vec<_> = (0..3).map(|i| partition_range(256, 3, i)).collect();
    assert_eq!(
        ranges,
        [
            PartitionRange { start: 0, end: 84 },
            PartitionRange {
                start: 85,
                end: 169
            },
            PartitionRange {
                start: 170,
                end: 255
            },
        ]
    );
    // The same split as the local cluster's shard map.
    let even = ShardMap::even("docs", 256, vec![vec!["a".into()]; 3]);
    for (i, shard) in even.shards.iter().enumerate() {
        assert_eq!(shard.partitions[0].start, ranges[i].start);
        assert_eq!(shard.partitions[0].end, ranges[i].end);
    }
}

#[test]
fn each_shard_set_copies_the_collection_and_is_owned_by_it() {
    let vc = collection("  quantization: i8\n  image: registry.example/vecshard:1.2\n");
    let ss = build_shard_set(&vc, 2, 2).unwrap();
    assert_eq!(ss.name_any(), "docs-2");
    assert_eq!(ss.namespace().as_deref(), Some("search"));
    assert_eq!(
        ss.spec.partitions,
        [PartitionRange {
            start: 170,
            end: 255
        }]
    );
    assert_eq!(ss.spec.partition_count, 256);
    assert_eq!(ss.spec.image, "registry.example/vecshard:1.2");
    assert_eq!(ss.spec.indexed_fields[0].name, "pos");
    let owner = &ss.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("VectorCollection", "docs")
    );
    assert_eq!(ss.labels()["vecshard.io/shard"], "docs-2");
}

#[test]
fn an_autoscaled_shard_keeps_the_replicas_its_autoscaler_chose() {
    let plain = collection("");
    let scaled =
        collection("  autoscaling: {minReplicas: 2, maxReplicas: 5, targetP95LatencyMs: 20}\n");
    let mut live = build_shard_set(&scaled, 0, 4).unwrap();
    assert_eq!(
        shard_replicas(&plain, Some(&live)),
        2,
        "no autoscaler: the spec rules"
    );
    assert_eq!(shard_replicas(&scaled, Some(&live)), 4);
    assert_eq!(
        shard_replicas(&scaled, None),
        2,
        "a new shard starts at spec.replicas"
    );
    live.spec.replicas = 9;
    assert_eq!(
        shard_replicas(&scaled, Some(&live)),
        5,
        "clamped to the autoscaler's range"
    );
}

/// `n` ShardSets of 2 replicas each.
fn shard_sets(vc: &ValidatedCollection, n: u32) -> Vec<ShardSet> {
    (0..n).map(|i| build_shard_set(vc, i, 2).unwrap()).collect()
}

#[test]
fn the_shard_map_names_every_replica_and_bumps_its_version_only_on_change() {
    let vc = collection("");
    let sets = shard_sets(&vc, 3);
    let first = build_shard_map(&vc, &sets, None, 0);
    first.validate().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(
        first.shards[1].replicas,
        [
            "http://docs-1-0.docs-1.search.svc:6334",
            "http://docs-1-1.docs-1.search.svc:6334"
        ]
    );
    let same = build_shard_map(&vc, &sets, Some(&first), 1);
    assert_eq!(
        same.version, 1,
        "re-applying the same map keeps its version"
    );
    let mut grown = sets.clone();
    grown[0].spec.replicas = 3;
    let next = build_shard_map(&vc, &grown, Some(&same), 1);
    assert_eq!(next.version, 2);
    assert_eq!(next.shards[0].replicas.len(), 3);

    let cm = build_shard_map_config_map(&vc, &next).unwrap();
    assert_eq!(cm.name_any(), "docs-shard-map");
    assert_eq!(read_shard_map(&cm), Some(next));
}

#[test]
fn replicas_that_are_not_ready_join_the_map_without_serving_until_they_are() {
    let vc = collection("");
    let mut sets = shard_sets(&vc, 3);
    let status = |ordinals: Vec<u32>| {
        Some(crate::crd::ShardSetStatus {
            ready_ordinals: ordinals,
            ..Default::default()
        })
    };
    // Scaled from 1 to 3 replicas under load: only docs-0-0 has caught up.
    sets[0].spec.replicas = 3;
    sets[0].status = status(vec![0]);
    sets[1].status = status(vec![0, 1]);
    let map = build_shard_map(&vc, &sets, None, 0);
    map.validate().unwrap();
    assert_eq!(
        map.shards[0].replicas,
        ["http://docs-0-0.docs-0.search.svc:6334"]
    );
    assert_eq!(
        map.shards[0].joining,
        [
            "http://docs-0-1.docs-0.search.svc:6334",
            "http://docs-0-2.docs-0.search.svc:6334"
        ]
    );
    assert!(map.shards[1].joining.is_empty());
    // docs-0-1 caught up: it serves, in a newer map.
    sets[0].status = status(vec![0, 1]);
    let next = build_shard_map(&vc, &sets, Some(&map), 1);
    assert_eq!(next.version, 2);
    assert_eq!(next.shards[0].replicas.len(), 2);
    assert_eq!(
        next.shards[0].joining,
        ["http://docs-0-2.docs-0.search.svc:6334"]
    );
    // docs-0-0 restarts: it joins again until it has caught up.
    sets[0].status = status(vec![1]);
    let restarted = build_shard_map(&vc, &sets, Some(&next), 2);
    assert_eq!(
        restarted.shards[0].replicas,
        ["http://docs-0-1.docs-0.search.svc:6334"]
    );
    assert_eq!(restarted.shards[0].joining.len(), 2);
    // No pod ready (all restarting, or a new collection): every replica serves, as the map
    // must name at least one. A ready ordinal above spec.replicas (a pod being removed) does
    // not count.
    sets[0].status = status(vec![]);
    sets[1].status = status(vec![5]);
    let none = build_shard_map(&vc, &sets, Some(&restarted), 3);
    none.validate().unwrap();
    assert_eq!(none.shards[0].replicas.len(), 3);
    assert_eq!(none.shards[1].replicas.len(), 2);
    assert!(none.shards.iter().all(|s| s.joining.is_empty()));
}

#[test]
fn a_lost_shard_map_is_recreated_above_the_last_published_version() {
    let vc = collection("");
    let sets = shard_sets(&vc, 2);
    // The ConfigMap was deleted after version 7 was published: running routers hold 7 and
    // ignore anything older, so the re-created map must be newer.
    let recreated = build_shard_map(&vc, &sets, None, 7);
    assert_eq!(recreated.version, 8);
    // A stored map behind the published version (restored from an old backup) also moves on.
    let mut old = recreated.clone();
    old.version = 3;
    let mut grown = sets.clone();
    grown[1].spec.replicas = 3;
    assert_eq!(build_shard_map(&vc, &grown, Some(&old), 8).version, 9);
}

#[test]
fn the_router_reads_its_map_from_the_config_map_with_least_privilege() {
    let vc = collection("  writeConsistency: all\n");
    let d = build_router_deployment(&vc).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("docs-router"));
    let env: BTreeMap<_, _> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["VECSHARD_SHARD_MAP_CONFIGMAP"], "search/docs-shard-map");
    assert_eq!(env["VECSHARD_WRITE_CONSISTENCY"], "all");
    assert_eq!(env["VECSHARD_CACHE_TTL_MS"], "60000");

    let (account, role, binding) = build_router_rbac(&vc).unwrap();
    assert_eq!(account.name_any(), "docs-router");
    let rule = &role.rules.unwrap()[0];
    assert_eq!(
        rule.resource_names.as_deref(),
        Some(&["docs-shard-map".to_string()][..])
    );
    assert_eq!(rule.verbs, ["get", "list", "watch"]);
    assert_eq!(
        binding.subjects.unwrap()[0].namespace.as_deref(),
        Some("search")
    );
}

#[test]
fn the_router_service_and_pdb_select_router_pods_only() {
    let vc = collection("");
    let svc = build_router_service(&vc).unwrap();
    let selector = svc.spec.unwrap().selector.unwrap();
    assert_eq!(selector["app.kubernetes.io/component"], "router");
    let pdb = build_router_pdb(&vc).unwrap();
    assert_eq!(
        pdb.spec.unwrap().selector.unwrap().match_labels.unwrap(),
        selector
    );
}

#[test]
fn with_autoscaling_the_router_hpa_owns_the_router_replicas() {
    assert!(build_router_hpa(&collection("")).unwrap().is_none());
    let vc =
        collection("  autoscaling: {minReplicas: 2, maxReplicas: 8, targetP95LatencyMs: 15}\n");
    let d = build_router_deployment(&vc).unwrap();
    assert_eq!(d.spec.unwrap().replicas, None);
    let hpa = build_router_hpa(&vc).unwrap().unwrap().spec.unwrap();
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 8));
}

/// The router HPA's CPU utilization target.
fn router_cpu_target(vc: &ValidatedCollection) -> Option<i32> {
    let metrics = build_router_hpa(vc)
        .unwrap()
        .unwrap()
        .spec
        .unwrap()
        .metrics
        .unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].type_, "Resource");
    let resource = metrics[0].resource.as_ref().unwrap();
    assert_eq!(resource.name, "cpu");
    resource.target.average_utilization
}

/// The router container's CPU request, if any.
fn router_cpu_request(vc: &ValidatedCollection) -> Option<String> {
    let d = build_router_deployment(vc).unwrap();
    let container = &d.spec.unwrap().template.spec.unwrap().containers[0];
    container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .map(|q| q.0.clone())
}

#[test]
fn routers_scale_on_their_cpu_not_on_the_shards_latency() {
    let vc =
        collection("  autoscaling: {minReplicas: 1, maxReplicas: 4, targetP95LatencyMs: 15}\n");
    assert_eq!(router_cpu_target(&vc), Some(70));
    // A utilization needs a request to divide by: the router gets one when it has none.
    assert_eq!(router_cpu_request(&vc).as_deref(), Some("250m"));

    let tuned = collection(
        "  autoscaling: {minReplicas: 1, maxReplicas: 4, targetP95LatencyMs: 15, \
         routerTargetCpuUtilizationPercent: 50}\n  router: {resources: {requests: {cpu: 1}}}\n",
    );
    assert_eq!(router_cpu_target(&tuned), Some(50));
    assert_eq!(
        router_cpu_request(&tuned).as_deref(),
        Some("1"),
        "the user's request is kept"
    );
    // Without autoscaling, nothing is added.
    assert_eq!(router_cpu_request(&collection("")), None);
}

#[test]
fn children_of_an_object_never_read_from_the_api_are_refused() {
    let mut vc = raw("");
    vc.metadata.uid = None;
    assert!(build_router_service(&validate(&vc, &[]).unwrap()).is_err());
}
