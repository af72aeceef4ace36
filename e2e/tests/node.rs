//! vecshard on a real node: shard servers, routers and the operator run as pods from
//! vecshard's own images (containerd + runc, CNI bridge, kube-proxy, CoreDNS). One scenario,
//! in order, as an operator of the database would live it: create, load, crash, scale,
//! upgrade, delete; then the snapshot scenario (node/snapshots.rs) and the autoscaling one
//! (node/autoscale.rs). Run through `bash e2e/run.sh node`, which sets:
//! - `VECSHARD_E2E_CONTAINERD_SOCK`: the node's containerd (to SIGKILL a container's process);
//! - `VECSHARD_E2E_NODE`: the node's name; `VECSHARD_E2E_VOLUMES`: where local volumes go;
//! - `VECSHARD_E2E_DATASET`: ../shared/datasets/wordnet-minilm-384.
#![cfg(feature = "e2e")]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tonic::transport::Channel;
use vecshard_dataset::{read_f32_matrix, read_payloads, Matrix, VectorFile};
use vecshard_e2e::{
    client, collection, create, env, eventually, names, namespace, patch_spec, phase,
};
use vecshard_operator::crd::{VectorCollection, VolumeRetention};
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::{
    point_id, ClusterRequest, ClusterStatus, CountRequest, GetRequest, Point, PointId,
    SearchRequest, UpsertRequest,
};

#[path = "node/snapshots.rs"]
mod snapshots;

#[path = "node/autoscale.rs"]
mod autoscale;

#[path = "node/security.rs"]
mod security;

const NAME: &str = "docs";
const STORAGE_CLASS: &str = "e2e-local";
const LOADED: usize = 20_000;
const SERVER_IMAGE: &str = "vecshard/vecshard-server:e2e";
const NEXT_IMAGE: &str = "vecshard/vecshard-server:e2e-next";
/// Pods start from images already on the node, but a debug-built server rebuilding its index
/// on 2 shared cores takes a while.
const POD_WAIT: Duration = Duration::from_secs(300);

fn log(start: Instant, what: &str) {
    eprintln!("[node {:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_collection_lives_on_real_pods_through_crashes_scaling_upgrades_and_deletion(
) -> Result<()> {
    let t = Instant::now();
    let client = client().await?;
    let ns = namespace(&client, "node").await?;
    let provisioner = tokio::spawn(provision_local_volumes(client.clone(), ns.clone()));
    storage_class(&client).await?;

    // ---- create: 2 shards x 2 replicas, all pods Ready, the collection Ready ----
    let mut vc = collection(NAME, 2, 2);
    let spec = &mut vc.spec;
    spec.image = SERVER_IMAGE.into();
    spec.storage.storage_class_name = Some(STORAGE_CLASS.into());
    spec.partitions = 16;
    spec.resources = Some(serde_json::from_value(
        json!({"requests": {"cpu": "10m", "memory": "64Mi"}}),
    )?);
    spec.router.resources = spec.resources.clone();
    create(&client, &ns, &vc).await?;
    phase(&client, &ns, NAME, "Ready", POD_WAIT).await?;
    let pods = ready_pods(&client, &ns).await?;
    ensure!(
        pods.len() == 4 + 2,
        "4 shard pods and 2 routers, got {pods:?}"
    );
    log(t, &format!("collection Ready: pods {pods:?}"));

    let router = router_client(&client, &ns).await?;
    let data = Dataset::open(Path::new(&env("VECSHARD_E2E_DATASET")?))?;

    // ---- load 20,000 points through the router Service; recall against exact ground truth ----
    let loaded = Instant::now();
    for start in (0..LOADED).step_by(500) {
        let points = (start..start + 500)
            .map(|i| data.point(i as u64, i))
            .collect();
        upsert(&router, points).await?;
    }
    log(
        t,
        &format!(
            "loaded {LOADED} points through the router Service in {:.1}s",
            loaded.elapsed().as_secs_f64()
        ),
    );
    ensure!(count(&router).await? == LOADED as u64);
    let recall = data.recall_at_10(&router, 100).await?;
    log(t, &format!("recall@10 over 100 queries: {recall:.4}"));
    ensure!(recall >= 0.95, "recall@10 {recall:.4} < 0.95");

    // ---- the operator counts the shards' vectors into the status (refreshed every 60 s) ----
    let collections = Api::<VectorCollection>::namespaced(client.clone(), &ns);
    let counted = eventually(
        "status.vectors to count every loaded point",
        Duration::from_secs(150),
        || async {
            let vc = collections.get(NAME).await.map_err(|e| e.to_string())?;
            let status = vc.status.unwrap_or_default();
            let shards: Vec<Option<u64>> = status.shards.iter().map(|s| s.vectors).collect();
            let seen = format!("vectors {:?}, shards {shards:?}", status.vectors);
            match status.vectors {
                Some(n) if n == LOADED as u64 => Ok(Some(seen)),
                _ => Err(seen),
            }
        },
    )
    .await?;
    log(t, &format!("status counts the loaded points: {counted}"));

    // ---- kill -9 a shard server and delete another pod, during writes ----
    let writer = writer(router.clone(), data.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = pod(&client, &ns, "docs-0-0").await?;
    let restarts = restart_count(&killed);
    sigkill_container(&killed)?;
    log(t, "SIGKILLed the server of docs-0-0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deleted_uid = pod(&client, &ns, "docs-1-1").await?.uid();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .delete("docs-1-1", &DeleteParams::default())
        .await?;
    log(t, "deleted pod docs-1-1");
    eventually(
        "docs-0-0 restarted and ready, docs-1-1 replaced and ready",
        POD_WAIT,
        || async {
            let a = pod(&client, &ns, "docs-0-0")
                .await
                .map_err(|e| e.to_string())?;
            let b = pod(&client, &ns, "docs-1-1")
                .await
                .map_err(|e| e.to_string())?;
            let done = restart_count(&a) > restarts
                && is_ready(&a)
                && b.uid() != deleted_uid
                && is_ready(&b);
            if done {
                Ok(Some(()))
            } else {
                Err(format!(
                    "docs-0-0 restarts {} ready {}, docs-1-1 ready {}",
                    restart_count(&a),
                    is_ready(&a),
                    is_ready(&b)
                ))
            }
        },
    )
    .await?;
    log(t, "both pods back");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writer.stop().await?;
    log(
        t,
        &format!(
            "writer: {} acknowledged points, {} failed attempts (retried)",
            written.acked.len(),
            written.failed
        ),
    );
    ensure!(!written.acked.is_empty(), "no write was acknowledged");
    let missing = missing_ids(&router, &written.acked).await?;
    ensure!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    replicas_agree(&router, 2, POD_WAIT).await?;
    search_works(&router, &data).await?;
    log(
        t,
        "no acknowledged write lost; searches answer; replicas agree",
    );

    // ---- rebalance: shards 2 -> 3 -> 2 under a writer and a searcher; kill -9 a replica of the
    // giving shard during a backfill, one of the receiving shard during dual writes, and the
    // operator between two steps ----
    // About 100 points/s: enough to cross every step, little enough that the rest of the
    // scenario (restarts that reload every point) runs on the data it always had.
    let moved = writer_at(
        router.clone(),
        data.clone(),
        2_000_000,
        Duration::from_millis(200),
    );
    let searcher_during_moves = searcher(router.clone(), data.clone());
    let out = rebalance_to(&client, &ns, 3, true, t).await?;
    log(t, &format!("rebalanced 2 -> 3 shards in {out}"));
    let back = rebalance_to(&client, &ns, 2, false, t).await?;
    log(t, &format!("rebalanced 3 -> 2 shards in {back}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = moved.stop().await?;
    let searched = searcher_during_moves.stop().await?;
    log(
        t,
        &format!(
            "during the moves: {} points written ({} failed attempts, retried, longest wait {:?}); {} searches, {} failed once and succeeded on retry, {} failed twice",
            during.acked.len(),
            during.failed,
            during.longest_wait,
            searched.ok,
            searched.retried,
            searched.failed
        ),
    );
    ensure!(
        searched.failed == 0,
        "{} searches failed twice in a row: {:?}",
        searched.failed,
        searched.last_failures
    );
    let missing = missing_ids(&router, &during.acked).await?;
    ensure!(
        missing.is_empty(),
        "writes lost while rebalancing: {missing:?}"
    );
    let missing = missing_ids(&router, &written.acked).await?;
    ensure!(
        missing.is_empty(),
        "earlier writes lost while rebalancing: {missing:?}"
    );
    let total = count(&router).await?;
    let expected = (LOADED + written.acked.len() + during.acked.len()) as u64;
    ensure!(
        total == expected,
        "count {total} after rebalancing, expected {expected}"
    );
    replicas_agree(&router, 2, POD_WAIT).await?;
    partitions_where_owned(&client, &ns).await?;
    ensure!(
        Api::<vecshard_operator::crd::ShardSet>::namespaced(client.clone(), &ns)
            .get_opt("docs-2")
            .await?
            .is_none(),
        "ShardSet docs-2 left after scaling in"
    );
    log(
        t,
        "after 2 -> 3 -> 2: no acknowledged write lost, count exact, replicas agree, every partition only on its owner",
    );

    // ---- scale replicas 2 -> 3: the new replicas catch up and serve ----
    patch_spec(&client, &ns, NAME, json!({"replicas": 3})).await?;
    eventually("6 shard pods ready", POD_WAIT, || async {
        let n = ready_pods(&client, &ns).await.map_err(|e| e.to_string())?;
        let shards = n.iter().filter(|p| !p.contains("router")).count();
        (shards == 6)
            .then_some(())
            .ok_or(format!("ready: {n:?}"))
            .map(Some)
    })
    .await?;
    let status = replicas_agree(&router, 3, POD_WAIT).await?;
    log(t, &format!("scaled to 3 replicas: {}", summary(&status)));
    for shard in 0..2 {
        let new = pod(&client, &ns, &format!("docs-{shard}-2")).await?;
        let ip = new.status.and_then(|s| s.pod_ip).context("pod IP")?;
        let direct = PointsClient::new(
            Channel::from_shared(format!("http://{ip}:6334"))?
                .connect()
                .await?,
        );
        let hits = search(&direct, data.query(0)).await?;
        ensure!(hits == 10, "docs-{shard}-2 answered {hits} hits");
    }

    // ---- upgrade: a new image tag rolls one pod at a time, searches keep answering ----
    let searcher = searcher(router.clone(), data.clone());
    patch_spec(&client, &ns, NAME, json!({"image": NEXT_IMAGE})).await?;
    let most_unready = Mutex::new(BTreeMap::<String, usize>::new());
    eventually(
        "every pod on the new image, ready",
        POD_WAIT * 2,
        || async {
            let pods = Api::<Pod>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut unready = BTreeMap::<String, usize>::new();
            let mut old = 0;
            for p in &pods.items {
                let shard = shard_of(&p.name_any());
                if !is_ready(p) || p.metadata.deletion_timestamp.is_some() {
                    *unready.entry(shard.clone()).or_default() += 1;
                }
                if image(p) != NEXT_IMAGE {
                    old += 1;
                }
            }
            let mut most_unready = most_unready.lock().unwrap();
            for (shard, n) in unready {
                let most = most_unready.entry(shard).or_default();
                *most = (*most).max(n);
            }
            let ready = pods.items.iter().filter(|p| is_ready(p)).count();
            (old == 0 && ready == pods.items.len() && ready == 8)
                .then_some(())
                .ok_or(format!("{old} pods on the old image, {ready} ready"))
                .map(Some)
        },
    )
    .await?;
    phase(&client, &ns, NAME, "Ready", POD_WAIT).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let searched = searcher.stop().await?;
    let most_unready = most_unready.into_inner().unwrap();
    log(
        t,
        &format!(
            "rolled to {NEXT_IMAGE}: {} searches, {} failed once and succeeded on retry, {} failed twice; most pods unready at once per shard: {most_unready:?}",
            searched.ok, searched.retried, searched.failed
        ),
    );
    ensure!(
        searched.failed == 0,
        "{} searches failed after a retry: {:?}",
        searched.failed,
        searched.last_failures
    );
    ensure!(searched.ok > 0, "no search ran during the rollout");
    for (shard, n) in &most_unready {
        ensure!(
            shard == "router" || *n <= 1,
            "shard {shard} had {n} pods down at once"
        );
    }
    let written = written.acked;
    let missing = missing_ids(&router, &written).await?;
    ensure!(
        missing.is_empty(),
        "writes lost in the upgrade: {missing:?}"
    );

    // ---- delete: everything goes; the PVCs stay (storage.whenDeleted: Retain, the default) ----
    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .delete(NAME, &DeleteParams::default())
        .await?;
    eventually(
        "the collection's workloads to be deleted",
        POD_WAIT,
        || async {
            let left = leftovers(&client, &ns).await.map_err(|e| e.to_string())?;
            left.is_empty()
                .then_some(())
                .ok_or(format!("left: {left:?}"))
                .map(Some)
        },
    )
    .await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let bound = claims
        .items
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .count();
    // 6 of the two shards (3 replicas each) and 2 of docs-2, which existed while the collection
    // had 3 shards: storage.whenDeleted Retain keeps them too.
    ensure!(bound == 8, "8 bound PVCs retained, got {bound}");
    log(
        t,
        "collection deleted: pods, StatefulSets, router, Services, ConfigMap gone; 8 PVCs retained",
    );
    provisioner.abort();

    // ---- storage.whenDeleted: Delete: the claims go with the collection ----
    let ns = namespace(&client, "node-delete").await?;
    let provisioner = tokio::spawn(provision_local_volumes(client.clone(), ns.clone()));
    let mut vc = collection(NAME, 1, 1);
    vc.spec.image = NEXT_IMAGE.into();
    vc.spec.storage.storage_class_name = Some(STORAGE_CLASS.into());
    vc.spec.storage.when_deleted = VolumeRetention::Delete;
    vc.spec.router.replicas = 1;
    create(&client, &ns, &vc).await?;
    phase(&client, &ns, NAME, "Ready", POD_WAIT).await?;
    let all = ListParams::default();
    ensure!(
        names::<PersistentVolumeClaim>(&client, &ns, &all)
            .await?
            .len()
            == 1
    );
    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .delete(NAME, &DeleteParams::default())
        .await?;
    eventually(
        "the collection and its claim to be deleted",
        POD_WAIT,
        || async {
            let mut left = leftovers(&client, &ns).await.map_err(|e| e.to_string())?;
            let pvcs = names::<PersistentVolumeClaim>(&client, &ns, &all)
                .await
                .map_err(|e| e.to_string())?;
            left.extend(pvcs.iter().map(|c| format!("pvc/{c}")));
            left.is_empty()
                .then_some(())
                .ok_or(format!("left: {left:?}"))
                .map(Some)
        },
    )
    .await?;
    log(
        t,
        "a collection with storage.whenDeleted: Delete took its PVC with it",
    );
    provisioner.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rebalancing: a shard-count change watched step by step, with faults injected on the way.

/// Sets spec.shards to `shards` and waits until the change is done (phase Ready, no
/// `status.rebalance`, the map over `shards` shards). With `faults`, SIGKILLs a replica of the
/// giving shard during a Backfill or Verify step, a replica of the receiving shard during a
/// later batch's DualWrite, and the operator during a ReadsSwitch. Returns a summary.
async fn rebalance_to(
    client: &Client,
    ns: &str,
    shards: usize,
    faults: bool,
    t: Instant,
) -> Result<String> {
    let started = Instant::now();
    patch_spec(client, ns, NAME, json!({"shards": shards})).await?;
    let collections = Api::<VectorCollection>::namespaced(client.clone(), ns);
    let (mut source_killed, mut receiver_killed, mut operator_killed) = (!faults, !faults, !faults);
    let (mut steps_seen, mut points_moved, mut started_moving) = (Vec::<String>::new(), 0, None);
    loop {
        ensure!(
            started.elapsed() < POD_WAIT * 2,
            "rebalancing to {shards} shards did not finish; steps seen {steps_seen:?}"
        );
        let vc = collections.get(NAME).await?;
        let status = vc.status.unwrap_or_default();
        match &status.rebalance {
            Some(r) => {
                let seen = format!("{} {}", r.batch, r.step);
                if steps_seen.last() != Some(&seen) {
                    steps_seen.push(seen);
                }
                if r.step != "WaitingForShards" && started_moving.is_none() {
                    started_moving = Some(Instant::now());
                }
                points_moved = points_moved.max(r.points_moved);
                if !source_killed && (r.step == "Backfill" || r.step == "Verify") {
                    let victim = format!("{}-1", r.moving_from);
                    sigkill_container(&pod(client, ns, &victim).await?)?;
                    log(
                        t,
                        &format!("SIGKILLed {victim} (giving shard) during {}", r.summary),
                    );
                    source_killed = true;
                } else if !receiver_killed && r.batch >= 2 && r.step == "DualWrite" {
                    let victim = format!("{}-0", r.moving_to);
                    sigkill_container(&pod(client, ns, &victim).await?)?;
                    log(
                        t,
                        &format!("SIGKILLed {victim} (receiving shard) during {}", r.summary),
                    );
                    receiver_killed = true;
                } else if !operator_killed && r.step == "ReadsSwitch" {
                    let operator_ns = env("VECSHARD_E2E_OPERATOR_NAMESPACE")?;
                    let pods = Api::<Pod>::namespaced(client.clone(), &operator_ns)
                        .list(&ListParams::default())
                        .await?;
                    let operator = pods.items.first().context("the operator pod")?;
                    sigkill_container(operator)?;
                    log(t, &format!("SIGKILLed the operator during {}", r.summary));
                    operator_killed = true;
                }
            }
            None => {
                let map: vecshard_proto::shard_map::ShardMap = serde_json::from_str(
                    &Api::<ConfigMap>::namespaced(client.clone(), ns)
                        .get(&format!("{NAME}-shard-map"))
                        .await?
                        .data
                        .unwrap_or_default()[vecshard_proto::shard_map::CONFIGMAP_KEY],
                )?;
                if map.shards.len() == shards
                    && map.moves.is_empty()
                    && status.phase.as_deref() == Some("Ready")
                {
                    ensure!(
                        source_killed && receiver_killed && operator_killed,
                        "faults not all injected (steps seen: {steps_seen:?})"
                    );
                    let moving = started_moving.map_or(0.0, |s| s.elapsed().as_secs_f64());
                    return Ok(format!(
                        "{:.1}s ({moving:.1}s moving partitions, {points_moved} points copied; steps {steps_seen:?})",
                        started.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every shard pod holds only partitions its shard owns in the published map.
async fn partitions_where_owned(client: &Client, ns: &str) -> Result<()> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(&format!("{NAME}-shard-map"))
        .await?;
    let map: vecshard_proto::shard_map::ShardMap = serde_json::from_str(
        &cm.data.unwrap_or_default()[vecshard_proto::shard_map::CONFIGMAP_KEY],
    )?;
    let owners = map.owners();
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    for p in pods
        .items
        .iter()
        .filter(|p| !p.name_any().contains("router"))
    {
        let shard = shard_of(&p.name_any());
        // A shard that left the map holds nothing (its partitions were dropped at their
        // write switch); its pods are on their way out with its ShardSet.
        let index = map.shards.iter().position(|s| s.name == shard);
        if index.is_none() && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod IP")?;
        let mut internal = vecshard_proto::v1::points_internal_client::PointsInternalClient::new(
            Channel::from_shared(format!("http://{ip}:6334"))?
                .connect()
                .await?,
        );
        let stats = internal
            .partition_stats(vecshard_proto::v1::PartitionStatsRequest {
                collection: NAME.into(),
                partition_count: map.partitions,
            })
            .await?
            .into_inner();
        for s in stats.partitions {
            ensure!(
                Some(owners[s.partition as usize]) == index,
                "pod {} holds {} points of partition {}, owned by {}",
                p.name_any(),
                s.count,
                s.partition,
                map.shards[owners[s.partition as usize]].name
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Storage: a static "local" provisioner (the test cluster has no dynamic one; kind has
// local-path-provisioner). Local volumes, unlike hostPath, get the pod's fsGroup.

async fn storage_class(client: &Client) -> Result<()> {
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": STORAGE_CLASS},
        "provisioner": "vecshard.io/e2e-local",
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "Immediate",
    }))?;
    match Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &sc)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Binds every pending claim of `ns` in the test's class to a new local volume on the node.
async fn provision_local_volumes(client: Client, ns: String) -> Result<()> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let root = env("VECSHARD_E2E_VOLUMES")?;
    let node = env("VECSHARD_E2E_NODE")?;
    let mut made = HashSet::new();
    loop {
        for c in claims.list(&ListParams::default()).await?.items {
            let spec = c.spec.clone().unwrap_or_default();
            if spec.storage_class_name.as_deref() != Some(STORAGE_CLASS)
                || spec.volume_name.is_some()
                || !made.insert(c.uid().unwrap_or_default())
            {
                continue;
            }
            let name = format!("{ns}-{}", c.name_any());
            let dir = format!("{root}/{name}");
            std::fs::create_dir_all(&dir)?;
            let size = spec
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").cloned())
                .context("claim without a storage request")?;
            let pv: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "local": {"path": dir},
                    "claimRef": {"namespace": ns, "name": c.name_any(), "uid": c.uid()},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                    ]}]}},
                },
            }))?;
            volumes.create(&PostParams::default(), &pv).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

async fn pod(client: &Client, ns: &str, name: &str) -> Result<Pod> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns).get(name).await?)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restart_count(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).sum())
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

/// `docs-1-2` → `docs-1`; router pods → `router`.
fn shard_of(pod: &str) -> String {
    if pod.contains("-router-") {
        return "router".into();
    }
    pod.rsplit_once('-').map_or(pod, |(s, _)| s).to_string()
}

async fn ready_pods(client: &Client, ns: &str) -> Result<Vec<String>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| is_ready(p))
        .map(|p| p.name_any())
        .collect())
}

/// SIGKILL to the pod's server process, through the node's containerd (as the OOM killer or a
/// crash would end it; the kubelet then restarts the container in the same pod).
fn sigkill_container(p: &Pod) -> Result<()> {
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].container_id.clone())
        .context("container id")?;
    let id = id.trim_start_matches("containerd://");
    let out = std::process::Command::new("ctr")
        .args([
            "--address",
            &env("VECSHARD_E2E_CONTAINERD_SOCK")?,
            "-n",
            "k8s.io",
        ])
        .args(["tasks", "kill", "--signal", "SIGKILL", id])
        .output()?;
    ensure!(
        out.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// What is left of the collection in `ns` besides PVCs.
async fn leftovers(client: &Client, ns: &str) -> Result<Vec<String>> {
    let all = ListParams::default();
    let found = [
        ("pod", names::<Pod>(client, ns, &all).await?),
        ("statefulset", names::<StatefulSet>(client, ns, &all).await?),
        ("service", names::<Service>(client, ns, &all).await?),
        ("configmap", names::<ConfigMap>(client, ns, &all).await?),
    ];
    Ok(found
        .into_iter()
        .flat_map(|(kind, names)| names.into_iter().map(move |n| (kind, n)))
        // Every namespace has this one; it is not the collection's.
        .filter(|(kind, n)| !(*kind == "configmap" && n == "kube-root-ca.crt"))
        .map(|(kind, n)| format!("{kind}/{n}"))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The data path, through the router Service's ClusterIP (kube-proxy's rules on the node).

type Points = PointsClient<Channel>;

async fn router_client(client: &Client, ns: &str) -> Result<Points> {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{NAME}-router"))
        .await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("router ClusterIP")?;
    let channel = Channel::from_shared(format!("http://{ip}:6334"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .context("connecting to the router Service")?;
    Ok(PointsClient::new(channel))
}

async fn upsert(router: &Points, points: Vec<Point>) -> Result<()> {
    router
        .clone()
        .upsert(UpsertRequest {
            collection: NAME.into(),
            points,
            version: 0,
        })
        .await?;
    Ok(())
}

async fn count(router: &Points) -> Result<u64> {
    Ok(router
        .clone()
        .count(CountRequest {
            collection: NAME.into(),
            filter_json: String::new(),
        })
        .await?
        .into_inner()
        .count)
}

/// Hits of a top-10 search; an answer holding an id twice is an error.
async fn search(points: &Points, vector: Vec<f32>) -> Result<usize> {
    let hits = points
        .clone()
        .search(SearchRequest {
            collection: NAME.into(),
            vector,
            limit: 10,
            ..Default::default()
        })
        .await?
        .into_inner()
        .result;
    let ids: HashSet<Option<u64>> = hits.iter().map(|h| num_of(h.id.as_ref())).collect();
    ensure!(ids.len() == hits.len(), "a search returned an id twice");
    Ok(hits.len())
}

async fn search_works(router: &Points, data: &Dataset) -> Result<()> {
    let hits = search(router, data.query(1)).await?;
    ensure!(
        hits == 10,
        "a search through the router found {hits} points"
    );
    Ok(())
}

fn num(id: u64) -> PointId {
    PointId {
        kind: Some(point_id::Kind::Num(id)),
    }
}

/// The numeric id (the scenario writes no string ids).
fn num_of(id: Option<&PointId>) -> Option<u64> {
    match id?.kind {
        Some(point_id::Kind::Num(n)) => Some(n),
        _ => None,
    }
}

/// The acknowledged ids a Get through the router does not return.
async fn missing_ids(router: &Points, ids: &[u64]) -> Result<Vec<u64>> {
    let mut missing = Vec::new();
    for chunk in ids.chunks(500) {
        let got = router
            .clone()
            .get(GetRequest {
                collection: NAME.into(),
                ids: chunk.iter().map(|&i| num(i)).collect(),
                with_vector: false,
                with_payload: Some(false),
            })
            .await?
            .into_inner();
        let found: HashSet<u64> = got
            .points
            .iter()
            .filter_map(|p| num_of(p.id.as_ref()))
            .collect();
        missing.extend(chunk.iter().filter(|i| !found.contains(i)));
    }
    Ok(missing)
}

/// Waits until every shard has `replicas` reachable replicas holding the same points (count
/// and checksum per partition, as the router's Cluster call compares them).
async fn replicas_agree(
    router: &Points,
    replicas: usize,
    timeout: Duration,
) -> Result<ClusterStatus> {
    eventually("replicas to agree", timeout, || async {
        let status = router
            .clone()
            .cluster(ClusterRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let agree = status.shards.iter().all(|s| {
            s.replicas.len() == replicas
                && s.replicas.iter().all(|r| r.reachable)
                && s.diverged_partitions.is_empty()
                && s.replicas
                    .iter()
                    .all(|r| r.checksum == s.replicas[0].checksum)
        });
        if agree {
            Ok(Some(status))
        } else {
            Err(summary(&status))
        }
    })
    .await
}

fn summary(status: &ClusterStatus) -> String {
    status
        .shards
        .iter()
        .map(|s| {
            let r: Vec<String> = s
                .replicas
                .iter()
                .map(|r| {
                    format!(
                        "{} {} pts {}",
                        r.address,
                        r.points,
                        if r.reachable { "up" } else { &r.error }
                    )
                })
                .collect();
            format!(
                "{}: [{}] diverged {:?}",
                s.name,
                r.join(", "),
                s.diverged_partitions
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// The dataset: the first 20,000 base vectors with their payloads, the queries, and exact
// ground truth computed here over exactly the loaded points.

#[derive(Clone)]
struct Dataset {
    base: Arc<Vec<Vec<f32>>>,
    payloads: Arc<Vec<String>>,
    queries: Arc<Matrix<f32>>,
}

impl Dataset {
    /// Rows beyond LOADED feed the writes of the crash phase.
    fn open(dir: &Path) -> Result<Dataset> {
        let rows = LOADED + 20_000;
        let mut file = VectorFile::open(&dir.join("base.f16.npy"))?;
        let mut base = Vec::with_capacity(rows);
        while base.len() < rows {
            base.push(file.next_row()?.context("dataset too small")?);
        }
        let payloads = read_payloads(&dir.join("base_payloads.jsonl"), rows)?
            .into_iter()
            .map(|p| serde_json::Value::Object(p).to_string())
            .collect();
        let queries = read_f32_matrix(&dir.join("queries.f32.npy"))?;
        Ok(Dataset {
            base: Arc::new(base),
            payloads: Arc::new(payloads),
            queries: Arc::new(queries),
        })
    }

    fn point(&self, id: u64, row: usize) -> Point {
        let row = row % self.base.len();
        Point {
            id: Some(num(id)),
            vector: self.base[row].clone(),
            payload_json: self.payloads[row].clone(),
        }
    }

    fn query(&self, i: usize) -> Vec<f32> {
        self.queries.row(i).to_vec()
    }

    /// Mean recall@10 of searches through the router against a brute-force cosine top 10 over
    /// the loaded points.
    async fn recall_at_10(&self, router: &Points, queries: usize) -> Result<f64> {
        let norms: Vec<f32> = self.base[..LOADED]
            .iter()
            .map(|v| dot(v, v).sqrt())
            .collect();
        let mut total = 0.0;
        for q in 0..queries {
            let query = self.query(q);
            let mut scored: Vec<(f32, u64)> = self.base[..LOADED]
                .iter()
                .zip(&norms)
                .enumerate()
                .map(|(i, (v, n))| (dot(v, &query) / n, i as u64))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let truth: HashSet<u64> = scored[..10].iter().map(|s| s.1).collect();
            let found = router
                .clone()
                .search(SearchRequest {
                    collection: NAME.into(),
                    vector: query,
                    limit: 10,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .result;
            let hits = found
                .iter()
                .filter(|p| num_of(p.id.as_ref()).is_some_and(|n| truth.contains(&n)))
                .count();
            total += hits as f64 / 10.0;
        }
        Ok(total / queries as f64)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------------------
// Background load: a writer that records what was acknowledged, a searcher that counts failures.

/// A load running on its own task until `stop`, which returns what it counted.
struct Background<T> {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<T>,
}

impl<T: Send + 'static> Background<T> {
    /// Runs `step` until stopped, then returns the state it updated.
    fn start<F, Fut>(mut state: T, mut step: F) -> Background<T>
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                state = step(state).await;
            }
            state
        });
        Background { stop, task }
    }

    async fn stop(self) -> Result<T> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

#[derive(Default)]
struct Written {
    acked: Vec<u64>,
    failed: u64,
    /// Longest time between two acknowledged batches.
    longest_wait: Duration,
    last_ack: Option<Instant>,
}

/// Upserts batches of 20 new points (ids from 1,000,000) until stopped; a failed batch is
/// retried until acknowledged, as the docs tell clients to.
fn writer(router: Points, data: Dataset) -> Background<Written> {
    writer_at(router, data, 1_000_000, Duration::ZERO)
}

/// `writer` with ids from `base`, pausing `pause` after each acknowledged batch.
fn writer_at(router: Points, data: Dataset, base: u64, pause: Duration) -> Background<Written> {
    Background::start(Written::default(), move |mut written| {
        let (router, data) = (router.clone(), data.clone());
        async move {
            let next = written.acked.len() as u64;
            let ids: Vec<u64> = (next..next + 20).map(|i| base + i).collect();
            let points = ids
                .iter()
                .map(|&id| data.point(id, LOADED + (id as usize % 20_000)))
                .collect();
            match tokio::time::timeout(Duration::from_secs(10), upsert(&router, points)).await {
                Ok(Ok(())) => {
                    written.acked.extend(ids);
                    let now = Instant::now();
                    if let Some(last) = written.last_ack {
                        written.longest_wait = written.longest_wait.max(now - last);
                    }
                    written.last_ack = Some(now);
                    tokio::time::sleep(pause).await;
                }
                _ => {
                    written.failed += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            written
        }
    })
}

#[derive(Default)]
struct Searched {
    ok: u64,
    retried: u64,
    failed: u64,
    /// The last answers of searches that failed twice (an error, or fewer than 10 hits).
    last_failures: Vec<String>,
}

/// Searches through the router continuously, each with a new vector; a failed search is
/// retried once after 100 ms (docs/operations.md: reads fail over; a client retries a failed
/// search once).
fn searcher(router: Points, data: Dataset) -> Background<Searched> {
    searcher_paced(router, data, Duration::ZERO)
}

/// `searcher` with a pause after each search.
fn searcher_paced(router: Points, data: Dataset, pause: Duration) -> Background<Searched> {
    Background::start(Searched::default(), move |mut c| {
        let (router, data) = (router.clone(), data.clone());
        async move {
            // A vector no search used before: the routers' result cache cannot answer it.
            let n = (c.ok + c.retried + c.failed) as usize;
            let mut query = data.query(n % data.queries.rows);
            let at = n % query.len();
            query[at] += 1e-4 * (1 + n / data.queries.rows) as f32;
            if matches!(search(&router, query.clone()).await, Ok(10)) {
                c.ok += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match search(&router, query).await {
                    Ok(10) => c.retried += 1,
                    other => {
                        c.failed += 1;
                        c.last_failures.push(format!("{other:?}"));
                        if c.last_failures.len() > 5 {
                            c.last_failures.remove(0);
                        }
                    }
                }
            }
            tokio::time::sleep(pause).await;
            c
        }
    })
}
