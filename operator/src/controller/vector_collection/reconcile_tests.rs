//! The VectorCollection reconcile against a mocked API server, one scenario per test: the
//! calls it makes (and does not make) for a new collection, an update, an unbuildable spec and
//! a collection being deleted.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::controller::fake_api::{self, Call};
use crate::metrics::Metrics;

const NS: &str = "search";

fn collection(spec: Value) -> VectorCollection {
    let mut vc: VectorCollection = serde_json::from_value(json!({
        "apiVersion": "vecshard.io/v1alpha1",
        "kind": "VectorCollection",
        "metadata": {"name": "docs", "namespace": NS, "uid": "vc-uid", "generation": 1},
        "spec": {"dimension": 384, "shards": 2, "replicas": 2},
    }))
    .unwrap();
    let mut merged = serde_json::to_value(&vc.spec).unwrap();
    for (k, v) in spec.as_object().unwrap() {
        merged[k] = v.clone();
    }
    vc.spec = serde_json::from_value(merged).unwrap();
    vc
}

fn path(group_version: &str, plural: &str, name: &str) -> String {
    let base = if group_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group_version}")
    };
    format!("{base}/namespaces/{NS}/{plural}/{name}")
}

/// Runs one reconcile against the fake holding `objects`; returns the result and the calls.
async fn reconcile_with(
    vc: VectorCollection,
    mut objects: BTreeMap<String, Value>,
) -> (Result<Action>, Vec<Call>) {
    objects.insert(
        path("vecshard.io/v1alpha1", "vectorcollections", "docs"),
        serde_json::to_value(&vc).unwrap(),
    );
    let (client, calls) = fake_api::start(objects);
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        Some("test".into()),
    ));
    let result = reconcile(Arc::new(vc), ctx).await;
    (result, calls.await.unwrap())
}

fn shorts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::short).collect()
}

fn applied<'a>(calls: &'a [Call], short: &str) -> &'a Value {
    calls
        .iter()
        .find(|c| c.short() == short)
        .and_then(|c| c.body.as_ref())
        .unwrap_or_else(|| panic!("no {short} in {:#?}", shorts(calls)))
}

/// The live ShardSets of a 2-shard collection, as the API would list them.
fn live_shard_sets(vc: &VectorCollection, replicas: i32) -> BTreeMap<String, Value> {
    let valid = validate::validate(vc, &[]).unwrap();
    (0..vc.spec.shards)
        .map(|i| {
            let mut ss = build::build_shard_set(&valid, i, replicas).unwrap();
            ss.metadata.uid = Some(format!("ss-{i}"));
            (
                path("vecshard.io/v1alpha1", "shardsets", &ss.name_any()),
                serde_json::to_value(ss).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_new_collection_gets_shard_sets_a_shard_map_and_a_router_in_that_order() {
    let (result, calls) = reconcile_with(collection(json!({})), BTreeMap::new()).await;
    result.unwrap();
    let order = shorts(&calls);
    let position = |s: &str| {
        order
            .iter()
            .position(|c| c == s)
            .unwrap_or_else(|| panic!("no {s} in {order:#?}"))
    };
    assert!(position("PATCH shardsets/docs-0") < position("PATCH configmaps/docs-shard-map"));
    assert!(position("PATCH shardsets/docs-1") < position("PATCH configmaps/docs-shard-map"));
    assert!(
        position("PATCH configmaps/docs-shard-map") < position("PATCH deployments/docs-router")
    );
    for s in [
        "PATCH serviceaccounts/docs-router",
        "PATCH roles/docs-router",
        "PATCH rolebindings/docs-router",
        "PATCH services/docs-router",
        "PATCH poddisruptionbudgets/docs-router",
        "DELETE horizontalpodautoscalers/docs-router",
        "PATCH vectorcollections/docs/status",
    ] {
        position(s);
    }
    let apply = calls
        .iter()
        .find(|c| c.short() == "PATCH shardsets/docs-0")
        .unwrap();
    assert!(
        apply.query.contains("fieldManager=vecshard-operator")
            && apply.query.contains("force=true"),
        "{}",
        apply.query
    );

    let map: vecshard_proto::shard_map::ShardMap = serde_json::from_str(
        applied(&calls, "PATCH configmaps/docs-shard-map")["data"]["shard-map.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(map.version, 1);
    assert_eq!(map.shards.len(), 2);
    let status = &applied(&calls, "PATCH vectorcollections/docs/status")["status"];
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["ready"], "0/4");
    let event = calls
        .iter()
        .find(|c| c.method == http::Method::POST && c.path.ends_with("/events"))
        .expect("an Event");
    assert_eq!(event.body.as_ref().unwrap()["reason"], "Progressing");
}

#[tokio::test]
async fn an_update_reaches_the_shard_sets_and_bumps_the_shard_map_version() {
    let old = collection(json!({}));
    let mut objects = live_shard_sets(&old, 2);
    let old = validate::validate(&old, &[]).unwrap();
    let old_map = build::build_shard_map(
        &old,
        &[
            build::build_shard_set(&old, 0, 2).unwrap(),
            build::build_shard_set(&old, 1, 2).unwrap(),
        ],
        None,
        0,
    );
    objects.insert(
        path("v1", "configmaps", "docs-shard-map"),
        serde_json::to_value(build::build_shard_map_config_map(&old, &old_map).unwrap()).unwrap(),
    );
    let new = collection(json!({
        "replicas": 3,
        "image": "vecshard/vecshard-server:0.2.0",
        "resources": {"limits": {"memory": "4Gi"}},
    }));
    let (result, calls) = reconcile_with(new, objects).await;
    result.unwrap();
    let ss = applied(&calls, "PATCH shardsets/docs-1");
    assert_eq!(ss["spec"]["replicas"], 3);
    assert_eq!(ss["spec"]["image"], "vecshard/vecshard-server:0.2.0");
    assert_eq!(ss["spec"]["resources"]["limits"]["memory"], "4Gi");
    let map: vecshard_proto::shard_map::ShardMap = serde_json::from_str(
        applied(&calls, "PATCH configmaps/docs-shard-map")["data"]["shard-map.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(map.version, 2, "3 replicas per shard is a new map");
    assert_eq!(map.shards[0].replicas.len(), 3);
    assert_eq!(
        applied(&calls, "PATCH deployments/docs-router")["spec"]["template"]["spec"]["containers"]
            [0]["image"],
        "vecshard/vecshard-server:0.2.0"
    );
}

#[tokio::test]
async fn an_unbuildable_spec_touches_no_workload_and_reports_degraded() {
    let old = collection(json!({}));
    let objects = live_shard_sets(&old, 2);
    let bad = collection(json!({"storage": {"size": "ten gigs"}, "replicas": 5}));
    let (result, calls) = reconcile_with(bad, objects).await;
    result.unwrap();
    let writes: Vec<String> = shorts(&calls)
        .into_iter()
        .filter(|c| c.starts_with("PATCH") || c.starts_with("DELETE"))
        .collect();
    assert_eq!(
        writes,
        ["PATCH vectorcollections/docs/status"],
        "only the status is written"
    );
    let status = &applied(&calls, "PATCH vectorcollections/docs/status")["status"];
    assert_eq!(status["phase"], "Degraded");
    let degraded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("spec.storage.size"),
        "{degraded}"
    );
    let event = calls
        .iter()
        .find(|c| c.method == http::Method::POST)
        .expect("an Event");
    assert_eq!(event.body.as_ref().unwrap()["type"], "Warning");
}

#[tokio::test]
async fn a_collection_being_deleted_is_left_to_the_garbage_collector() {
    let mut vc = collection(json!({}));
    vc.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let (result, calls) = reconcile_with(vc.clone(), live_shard_sets(&vc, 2)).await;
    result.unwrap();
    assert!(calls.is_empty(), "{:#?}", shorts(&calls));
}
