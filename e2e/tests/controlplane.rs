//! The operator against a real API server, controller manager and scheduler (no node: pods
//! stay Pending, and tests mark them ready by writing their status, as a kubelet would).
//! Run through `bash e2e/run.sh controlplane`.
#![cfg(feature = "e2e")]

use std::time::Duration;

use anyhow::{ensure, Result};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use vecshard_e2e::{
    client, collection, condition, create, env, eventually, get_vc, kubectl, kubectl_ok, names,
    namespace, patch_spec, phase, Operator,
};
use vecshard_operator::crd::{ShardSet, VectorCollection};

const WAIT: Duration = Duration::from_secs(60);

fn owned_by<K: Resource>(child: &K, kind: &str, name: &str) -> bool {
    child
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == kind && o.name == name && o.controller == Some(true))
}

/// Waits for an object the operator creates (controllers work concurrently, so children of
/// different parents appear in no fixed order).
async fn appears<K>(client: &Client, ns: &str, name: &str) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    eventually(&format!("{} {name}", K::kind(&())), WAIT, || async {
        api.get_opt(name).await.map_err(|e| e.to_string())
    })
    .await
}

/// What a kubelet would write for a running, ready pod.
async fn mark_pods_ready(client: &Client, ns: &str) -> Result<usize> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=vecshard"))
        .await?;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for pod in &list.items {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": "10.1.0.10",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            ],
        }});
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    }
    Ok(list.items.len())
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Result<Vec<(String, String)>> {
    use k8s_openapi::api::events::v1::Event;
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn crds_are_accepted_and_cel_rules_reject_what_the_schema_cannot() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "crd").await?;
    let api = Api::<VectorCollection>::namespaced(client.clone(), &ns);

    let mut too_many = collection("too-many", 300, 1);
    too_many.spec.partitions = 256;
    let err = api
        .create(&PostParams::default(), &too_many)
        .await
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("spec.shards must not exceed spec.partitions"),
        "{err}"
    );

    create(&client, &ns, &collection("docs", 1, 1)).await?;
    let err = api
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dimension": 768}})),
        )
        .await
        .unwrap_err()
        .to_string();
    ensure!(err.contains("spec.dimension is immutable"), "{err}");
    let err = api
        .patch("docs", &PatchParams::default(), &Patch::Merge(json!({"spec": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2, "targetP95LatencyMs": 20}}})))
        .await
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
        "{err}"
    );
    let err = api
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"snapshots": {"enabled": true}}})),
        )
        .await
        .unwrap_err()
        .to_string();
    ensure!(
        err.contains("snapshots.enabled needs snapshots.schedule and snapshots.s3"),
        "{err}"
    );

    let defaults = api.get("docs").await?;
    ensure!(
        defaults.spec.partitions == 256 && defaults.spec.index.m == 16,
        "{:?}",
        defaults.spec
    );

    let explain = kubectl_ok(&["explain", "vectorcollection.spec"])?;
    ensure!(
        explain.contains("Number of components of every vector"),
        "{explain}"
    );
    let explain = kubectl_ok(&["explain", "vc.spec.storage.whenDeleted"])?;
    ensure!(explain.contains("Retain"), "{explain}");
    Ok(())
}

#[tokio::test]
async fn the_operator_service_account_may_do_what_it_needs_and_no_more() -> Result<()> {
    let sa = format!(
        "system:serviceaccount:{}:{}",
        env("VECSHARD_E2E_OPERATOR_NAMESPACE")?,
        env("VECSHARD_E2E_OPERATOR_SA")?
    );
    let can = |verb: &str, resource: &str| -> Result<bool> {
        let mut args = vec!["auth", "can-i", verb, "--as", &sa, "-n", "default"];
        match resource.split_once('/') {
            Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
            None => args.push(resource),
        }
        let out = kubectl(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    for (verb, resource) in [
        ("create", "statefulsets.apps"),
        ("patch", "deployments.apps"),
        ("watch", "shardsets.vecshard.io"),
        ("patch", "vectorcollections.vecshard.io/status"),
        ("create", "poddisruptionbudgets.policy"),
        ("create", "horizontalpodautoscalers.autoscaling"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("create", "events.events.k8s.io"),
        ("create", "vectorsnapshots.vecshard.io"),
        ("patch", "vectorsnapshots.vecshard.io/status"),
        // The snapshot bucket's credentials, by name.
        ("get", "secrets"),
        // Which shard pods are ready (serving) and which join.
        ("watch", "pods"),
    ] {
        ensure!(
            can(verb, resource)?,
            "the operator cannot {verb} {resource}"
        );
    }
    for (verb, resource) in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("create", "pods"),
        ("delete", "pods"),
        ("delete", "vectorcollections.vecshard.io"),
        ("patch", "vectorcollections.vecshard.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("delete", "nodes"),
    ] {
        ensure!(
            !can(verb, resource)?,
            "the operator may {verb} {resource}, more than it needs"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_collection_becomes_shards_and_a_router_that_turn_ready() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "ready").await?;
    let operator = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-a"))?;
    create(&client, &ns, &collection("docs", 2, 2)).await?;

    let sets = eventually("2 ShardSets", WAIT, || async {
        let list = Api::<ShardSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let n = list.items.len();
        if n == 2 {
            Ok(Some(list.items))
        } else {
            Err(format!("{n} ShardSets"))
        }
    })
    .await?;
    for ss in &sets {
        ensure!(
            owned_by(ss, "VectorCollection", "docs"),
            "{} has no owner",
            ss.name_any()
        );
    }
    for shard in ["docs-0", "docs-1"] {
        let sts: StatefulSet = appears(&client, &ns, shard).await?;
        ensure!(owned_by(&sts, "ShardSet", shard));
        ensure!(sts.spec.as_ref().unwrap().replicas == Some(2));
        let svc: Service = appears(&client, &ns, shard).await?;
        ensure!(owned_by(&svc, "ShardSet", shard));
        ensure!(svc.spec.unwrap().cluster_ip.as_deref() == Some("None"));
        let pdb: PodDisruptionBudget = appears(&client, &ns, shard).await?;
        ensure!(owned_by(&pdb, "ShardSet", shard));
    }
    let router: Deployment = appears(&client, &ns, "docs-router").await?;
    ensure!(owned_by(&router, "VectorCollection", "docs"));
    for found in [
        owned_by(
            &appears::<Service>(&client, &ns, "docs-router").await?,
            "VectorCollection",
            "docs",
        ),
        owned_by(
            &appears::<PodDisruptionBudget>(&client, &ns, "docs-router").await?,
            "VectorCollection",
            "docs",
        ),
        owned_by(
            &appears::<ServiceAccount>(&client, &ns, "docs-router").await?,
            "VectorCollection",
            "docs",
        ),
        owned_by(
            &appears::<Role>(&client, &ns, "docs-router").await?,
            "VectorCollection",
            "docs",
        ),
        owned_by(
            &appears::<RoleBinding>(&client, &ns, "docs-router").await?,
            "VectorCollection",
            "docs",
        ),
    ] {
        ensure!(found, "a router object lacks its owner reference");
    }
    let cm: ConfigMap = appears(&client, &ns, "docs-shard-map").await?;
    ensure!(owned_by(&cm, "VectorCollection", "docs"));
    let map: vecshard_proto::shard_map::ShardMap =
        serde_json::from_str(&cm.data.unwrap()["shard-map.json"])?;
    ensure!(
        map.shards.len() == 2 && map.shards.iter().all(|s| s.replicas.len() == 2),
        "{map:?}"
    );

    // The real StatefulSet controller creates the pods; without a node they stay Pending.
    let pods = eventually("4 shard pods and 2 router pods", WAIT, || async {
        let list = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/name=vecshard"))
            .await
            .map_err(|e| e.to_string())?;
        if list.items.len() == 6 {
            Ok(Some(list.items.len()))
        } else {
            Err(format!("{} pods", list.items.len()))
        }
    })
    .await?;
    ensure!(pods == 6);
    let vc = phase(&client, &ns, "docs", "Progressing", WAIT).await?;
    ensure!(vc.status.unwrap().ready.as_deref() == Some("0/4"));

    mark_pods_ready(&client, &ns).await?;
    let vc = phase(&client, &ns, "docs", "Ready", WAIT).await?;
    ensure!(condition(&vc, "Ready").unwrap().0 == "True");
    ensure!(condition(&vc, "Progressing").unwrap().0 == "False");
    ensure!(condition(&vc, "Degraded").unwrap().0 == "False");
    let status = vc.status.unwrap();
    ensure!(status.ready.as_deref() == Some("4/4"), "{status:?}");
    ensure!(status.observed_generation == vc.metadata.generation);

    let events = eventually("a Ready event", WAIT, || async {
        let ev = events_for(&client, &ns, "docs")
            .await
            .map_err(|e| e.to_string())?;
        if ev.iter().any(|(t, r)| t == "Normal" && r == "Ready") {
            Ok(Some(ev))
        } else {
            Err(format!("{ev:?}"))
        }
    })
    .await?;
    ensure!(events.iter().any(|(_, r)| r == "Progressing"), "{events:?}");

    let table = kubectl_ok(&["get", "vc", "-n", &ns])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header
            == [
                "NAME",
                "DIMENSION",
                "SHARDS",
                "REPLICAS",
                "READY",
                "VECTORS",
                "PHASE",
                "REBALANCE",
                "AGE"
            ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        row[..5] == ["docs", "384", "2", "2", "4/4"] && row.contains(&"Ready"),
        "{table}"
    );
    let all = kubectl_ok(&["get", "vecshard", "-n", &ns])?;
    ensure!(
        all.contains("vectorcollection.vecshard.io/docs")
            && all.contains("shardset.vecshard.io/docs-1"),
        "{all}"
    );

    let metrics = operator.metrics()?;
    ensure!(
        metrics.contains(
            "vecshard_operator_reconcile_duration_seconds_count{controller=\"vectorcollection\"}"
        ),
        "{metrics}"
    );
    ensure!(
        metrics.contains(
            "vecshard_operator_reconcile_duration_seconds_count{controller=\"shardset\"}"
        ),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_replica_joins_the_shard_map_until_its_pod_is_ready() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "joining").await?;
    let _operator = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-a"))?;
    create(&client, &ns, &collection("docs", 1, 2)).await?;
    let shard_pods = |n: usize| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            eventually(&format!("{n} shard pods"), WAIT, || async {
                let list = Api::<Pod>::namespaced(client.clone(), &ns)
                    .list(&ListParams::default().labels("app.kubernetes.io/component=shard"))
                    .await
                    .map_err(|e| e.to_string())?;
                match list.items.len() {
                    found if found == n => Ok(Some(())),
                    found => Err(format!("{found} pods")),
                }
            })
            .await
        }
    };
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let read_map = || async {
        let cm = maps
            .get("docs-shard-map")
            .await
            .map_err(|e| e.to_string())?;
        let json = cm
            .data
            .unwrap_or_default()
            .remove("shard-map.json")
            .unwrap_or_default();
        serde_json::from_str::<vecshard_proto::shard_map::ShardMap>(&json)
            .map_err(|e| e.to_string())
    };
    let address = |ordinal: u32| format!("http://docs-0-{ordinal}.docs-0.{ns}.svc:6334");
    // No pod ready yet (no kubelet): every replica serves, as the map must name one.
    shard_pods(2).await?;
    eventually("the map to serve from both replicas", WAIT, || async {
        let map = read_map().await?;
        match map.shards[0].replicas.len() {
            2 => Ok(Some(())),
            _ => Err(format!("{map:?}")),
        }
    })
    .await?;
    mark_pods_ready(&client, &ns).await?;

    // A third replica: its pod is not ready, so it joins without serving ...
    patch_spec(&client, &ns, "docs", json!({"replicas": 3})).await?;
    shard_pods(3).await?;
    eventually("the third replica to join the map", WAIT, || async {
        let map = read_map().await?;
        let s = &map.shards[0];
        if s.replicas == [address(0), address(1)] && s.joining == [address(2)] {
            Ok(Some(()))
        } else {
            Err(format!("{map:?}"))
        }
    })
    .await?;
    // ... until its pod is ready (a shard server is once it has caught up): then it serves.
    mark_pods_ready(&client, &ns).await?;
    eventually("the third replica to serve", WAIT, || async {
        let map = read_map().await?;
        let s = &map.shards[0];
        if s.replicas.len() == 3 && s.joining.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("{map:?}"))
        }
    })
    .await?;
    // A pod that stops being ready (its server restarts) joins again.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    pods.patch_status(
        "docs-0-0",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "ContainersReady", "status": "False"},
        ]}})),
    )
    .await?;
    eventually(
        "a replica whose pod is not ready to join again",
        WAIT,
        || async {
            let map = read_map().await?;
            let s = &map.shards[0];
            if s.replicas == [address(1), address(2)] && s.joining == [address(0)] {
                Ok(Some(()))
            } else {
                Err(format!("{map:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn spec_updates_roll_out_and_an_unbuildable_spec_degrades_without_touching_workloads(
) -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "update").await?;
    let _operator = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-a"))?;
    create(&client, &ns, &collection("docs", 1, 2)).await?;
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let _: StatefulSet = appears(&client, &ns, "docs-0").await?;

    patch_spec(
        &client,
        &ns,
        "docs",
        json!({
            "replicas": 3,
            "image": "vecshard/vecshard-server:0.2.0",
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        }),
    )
    .await?;
    let sts = eventually("the StatefulSet to follow the spec", WAIT, || async {
        let sts = sts_api.get("docs-0").await.map_err(|e| e.to_string())?;
        let spec = sts.spec.clone().unwrap();
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        let cpu = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| q.0.clone());
        if spec.replicas == Some(3)
            && c.image.as_deref() == Some("vecshard/vecshard-server:0.2.0")
            && cpu.as_deref() == Some("250m")
        {
            Ok(Some(sts))
        } else {
            Err(format!(
                "replicas {:?} image {:?} cpu {cpu:?}",
                spec.replicas, c.image
            ))
        }
    })
    .await?;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    // No pod is ready (no kubelet): every replica serves, the new one included.
    eventually("the shard map to list 3 replicas", WAIT, || async {
        let cm = maps
            .get("docs-shard-map")
            .await
            .map_err(|e| e.to_string())?;
        let json = cm
            .data
            .unwrap_or_default()
            .remove("shard-map.json")
            .unwrap_or_default();
        let map: vecshard_proto::shard_map::ShardMap =
            serde_json::from_str(&json).map_err(|e| e.to_string())?;
        if map.version >= 2 && map.shards[0].replicas.len() == 3 {
            Ok(Some(()))
        } else {
            Err(format!("{map:?}"))
        }
    })
    .await?;

    // Passes the schema, cannot be built: Degraded, and the StatefulSet stays as it is.
    let generation = sts.metadata.generation;
    patch_spec(
        &client,
        &ns,
        "docs",
        json!({"storage": {"size": "ten gigs"}, "replicas": 1}),
    )
    .await?;
    let vc = phase(&client, &ns, "docs", "Degraded", WAIT).await?;
    let (status, reason, message) = condition(&vc, "Degraded").unwrap();
    ensure!(
        status == "True" && reason == "InvalidSpec",
        "{reason}: {message}"
    );
    ensure!(
        message.contains("spec.storage.size") && message.contains("ten gigs"),
        "{message}"
    );
    eventually("a Warning event", WAIT, || async {
        let ev = events_for(&client, &ns, "docs")
            .await
            .map_err(|e| e.to_string())?;
        if ev.iter().any(|(t, r)| t == "Warning" && r == "Degraded") {
            Ok(Some(()))
        } else {
            Err(format!("{ev:?}"))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sts_api.get("docs-0").await?;
    ensure!(
        after.metadata.generation == generation,
        "the StatefulSet was changed"
    );
    ensure!(
        after.spec.unwrap().replicas == Some(3),
        "replicas changed despite the invalid spec"
    );

    // Fixing the spec recovers.
    patch_spec(
        &client,
        &ns,
        "docs",
        json!({"storage": {"size": "1Gi"}, "replicas": 3}),
    )
    .await?;
    phase(&client, &ns, "docs", "Progressing", WAIT).await?;
    // Changing the shard count starts a rebalance: the new shard's ShardSet is created owning
    // no partition, and nothing moves while its pods are not Ready (no node here), so the map
    // keeps one shard. Setting the count back cancels it and the new ShardSet goes.
    patch_spec(&client, &ns, "docs", json!({"shards": 2})).await?;
    let vc = phase(&client, &ns, "docs", "Rebalancing", WAIT).await?;
    let (status, reason, message) = condition(&vc, "Rebalancing").unwrap();
    ensure!(
        status == "True" && reason == "WaitingForShards",
        "{status} {reason} {message}"
    );
    let summary = vc.status.and_then(|s| s.rebalance).map(|r| r.summary);
    ensure!(
        summary.as_deref().is_some_and(|s| s.starts_with("1→2")),
        "status.rebalance.summary {summary:?}"
    );
    let shard_sets = Api::<ShardSet>::namespaced(client.clone(), &ns);
    let new = eventually("ShardSet docs-1", WAIT, || async {
        shard_sets
            .get_opt("docs-1")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "absent".to_string())
            .map(Some)
    })
    .await?;
    ensure!(new.spec.partitions.is_empty(), "{:?}", new.spec.partitions);
    let map = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("docs-shard-map")
        .await?;
    let map: vecshard_proto::shard_map::ShardMap = serde_json::from_str(
        &map.data.unwrap_or_default()[vecshard_proto::shard_map::CONFIGMAP_KEY],
    )?;
    ensure!(
        map.shards.len() == 1,
        "the map changed before the new shard was ready"
    );
    patch_spec(&client, &ns, "docs", json!({"shards": 1})).await?;
    eventually("ShardSet docs-1 deleted, no rebalance", WAIT, || async {
        let vc = get_vc(&client, &ns, "docs").await?;
        let gone = shard_sets
            .get_opt("docs-1")
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let moving = vc.status.and_then(|s| s.rebalance);
        (gone && moving.is_none())
            .then_some(Some(()))
            .ok_or(format!("docs-1 gone {gone}, rebalance {moving:?}"))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_collection_removes_everything_through_the_garbage_collector() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "delete").await?;
    let _operator = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-a"))?;
    create(&client, &ns, &collection("docs", 2, 1)).await?;
    eventually("both StatefulSets", WAIT, || async {
        let n = names::<StatefulSet>(&client, &ns, &ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .len();
        if n == 2 {
            Ok(Some(()))
        } else {
            Err(format!("{n}"))
        }
    })
    .await?;
    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .delete("docs", &DeleteParams::default())
        .await?;
    eventually(
        "every child to be collected",
        Duration::from_secs(90),
        || async {
            let lp = ListParams::default().labels("vecshard.io/collection=docs");
            let all = ListParams::default();
            let found = [
                ("ShardSets", names::<ShardSet>(&client, &ns, &lp).await),
                (
                    "StatefulSets",
                    names::<StatefulSet>(&client, &ns, &lp).await,
                ),
                ("Deployments", names::<Deployment>(&client, &ns, &lp).await),
                ("Services", names::<Service>(&client, &ns, &lp).await),
                ("ConfigMaps", names::<ConfigMap>(&client, &ns, &lp).await),
                (
                    "PDBs",
                    names::<PodDisruptionBudget>(&client, &ns, &lp).await,
                ),
                ("Pods", names::<Pod>(&client, &ns, &all).await),
            ];
            let mut left = String::new();
            for (what, found) in found {
                let n = found.map_err(|e| e.to_string())?.len();
                if n > 0 {
                    left += &format!("{n} {what} ");
                }
            }
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(left)
            }
        },
    )
    .await
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_converges_after_restart() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "restart").await?;
    let mut first = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-a"))?;
    create(&client, &ns, &collection("docs", 4, 1)).await?;
    let ss_api = Api::<ShardSet>::namespaced(client.clone(), &ns);
    let _: ShardSet = appears(&client, &ns, "docs-0").await?;
    first.kill();
    // The killed one held the Lease: the next one waits for it to expire, then converges.
    let _second = Operator::start(&ns, &format!("lease-{ns}"), &format!("{ns}-b"))?;
    eventually(
        "every child after the restart",
        Duration::from_secs(90),
        || async {
            let all = ListParams::default();
            let sets = names::<ShardSet>(&client, &ns, &all)
                .await
                .map_err(|e| e.to_string())?
                .len();
            let sts = names::<StatefulSet>(&client, &ns, &all)
                .await
                .map_err(|e| e.to_string())?
                .len();
            let router = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get_opt("docs-router")
                .await
                .map_err(|e| e.to_string())?;
            if sets == 4 && sts == 4 && router.is_some() {
                Ok(Some(()))
            } else {
                Err(format!(
                    "{sets} ShardSets, {sts} StatefulSets, router {}",
                    router.is_some()
                ))
            }
        },
    )
    .await?;
    phase(&client, &ns, "docs", "Progressing", WAIT).await?;
    // A ShardSet deleted by hand is re-created (not mistaken for a shard-count change).
    let uid = ss_api.get("docs-2").await?.uid();
    ss_api.delete("docs-2", &DeleteParams::default()).await?;
    eventually("docs-2 to be re-created", WAIT, || async {
        let now = ss_api.get_opt("docs-2").await.map_err(|e| e.to_string())?;
        match now {
            Some(ss) if ss.uid() != uid => Ok(Some(())),
            other => Err(format!("uid {:?}", other.map(|s| s.uid()))),
        }
    })
    .await?;
    phase(&client, &ns, "docs", "Progressing", WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn two_operators_elect_one_leader_and_the_standby_takes_over() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "leader").await?;
    let lease_name = format!("lease-{ns}");
    let mut ops = [
        Operator::start(&ns, &lease_name, &format!("{ns}-a"))?,
        Operator::start(&ns, &lease_name, &format!("{ns}-b"))?,
    ];
    let leases = Api::<Lease>::namespaced(client.clone(), &env("VECSHARD_E2E_OPERATOR_NAMESPACE")?);
    let holder = eventually("one leader", WAIT, || async {
        let lease = leases
            .get_opt(&lease_name)
            .await
            .map_err(|e| e.to_string())?;
        let holder = lease.and_then(|l| l.spec?.holder_identity);
        let leading: Vec<&str> = ops
            .iter()
            .filter(|o| o.is_leader())
            .map(|o| o.identity.as_str())
            .collect();
        match (&holder, leading.as_slice()) {
            (Some(h), [one]) if h == one => Ok(Some(h.clone())),
            _ => Err(format!("lease holder {holder:?}, leading {leading:?}")),
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leading = ops.iter().filter(|o| o.is_leader()).count();
    ensure!(leading == 1, "{leading} leaders after 3 s");

    let (dead, alive): (Vec<_>, Vec<_>) = ops.iter_mut().partition(|o| o.identity == holder);
    dead.into_iter().for_each(|o| o.kill());
    let survivor = alive[0].identity.clone();
    eventually(
        "the standby to take over",
        Duration::from_secs(30),
        || async {
            let lease = leases
                .get_opt(&lease_name)
                .await
                .map_err(|e| e.to_string())?;
            let h = lease.and_then(|l| l.spec?.holder_identity);
            if h.as_deref() == Some(survivor.as_str()) {
                Ok(Some(()))
            } else {
                Err(format!("holder {h:?}"))
            }
        },
    )
    .await?;
    create(&client, &ns, &collection("docs", 1, 1)).await?;
    // The new leader reconciles.
    let _: StatefulSet = appears(&client, &ns, "docs-0").await?;
    Ok(())
}

#[tokio::test]
async fn the_install_bundle_and_every_sample_pass_server_side_dry_run() -> Result<()> {
    let client = client().await?;
    let ns = namespace(&client, "dryrun").await?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        &format!("{root}/manifests/install.yaml"),
    ])?;
    kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-n",
        &ns,
        "-f",
        &format!("{root}/manifests/samples/"),
    ])?;
    // The bundle is what the chart renders (same command as `bash manifests/render.sh`).
    let rendered = std::process::Command::new("bash")
        .arg(format!("{root}/manifests/render.sh"))
        .arg("--stdout")
        .output()?;
    ensure!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let on_disk = std::fs::read_to_string(format!("{root}/manifests/install.yaml"))?;
    ensure!(
        String::from_utf8_lossy(&rendered.stdout) == on_disk,
        "manifests/install.yaml is out of date: run `bash manifests/render.sh`"
    );
    Ok(())
}
