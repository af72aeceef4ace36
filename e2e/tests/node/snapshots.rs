//! Backups on the real node, against a real S3 server (versitygw on the node's address, started
//! by `e2e/run.sh`, which sets `VECSHARD_E2E_S3_ENDPOINT`, `_S3_ROOT`, `_S3_ACCESS` and
//! `_S3_SECRET`): an on-demand `VectorSnapshot` of a loaded 2×2 collection while a writer runs;
//! a restore into a new collection in another namespace (every write acknowledged before the
//! snapshot started is there, per-partition checksums equal the manifest's on every pod,
//! recall as the source's); a flipped byte makes a restore refuse, naming the object; a
//! schedule every minute with `retain: 2` leaves exactly two scheduled snapshots and no
//! orphans after four ticks, while the on-demand one is kept.

use super::*;
use k8s_openapi::api::core::v1::Secret;
use vecshard_e2e::get_vc;
use vecshard_operator::crd::VectorSnapshot;

const BUCKET: &str = "backups";
const PREFIX: &str = "e2e";

fn s3_spec() -> Result<serde_json::Value> {
    Ok(json!({
        "bucket": BUCKET,
        "prefix": PREFIX,
        "endpoint": env("VECSHARD_E2E_S3_ENDPOINT")?,
        "credentialsSecret": "s3-creds",
    }))
}

async fn credentials(client: &Client, ns: &str) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": env("VECSHARD_E2E_S3_ACCESS")?,
            "AWS_SECRET_ACCESS_KEY": env("VECSHARD_E2E_S3_SECRET")?,
        },
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// A 2-shard collection named `docs` (the helpers' name) in `ns`, with `extra` merged into
/// its spec.
fn small_collection(replicas: u32, extra: serde_json::Value) -> Result<VectorCollection> {
    let mut vc = collection(NAME, 2, replicas);
    let spec = &mut vc.spec;
    spec.image = SERVER_IMAGE.into();
    spec.storage.storage_class_name = Some(STORAGE_CLASS.into());
    spec.partitions = 16;
    spec.resources = Some(serde_json::from_value(
        json!({"requests": {"cpu": "10m", "memory": "64Mi"}}),
    )?);
    spec.router.resources = spec.resources.clone();
    let mut value = serde_json::to_value(&vc)?;
    for (k, v) in extra.as_object().context("extra spec")? {
        value["spec"][k] = v.clone();
    }
    Ok(serde_json::from_value(value)?)
}

async fn snapshot_status(client: &Client, ns: &str, name: &str) -> Result<VectorSnapshot, String> {
    Api::<VectorSnapshot>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| e.to_string())
}

/// Complete and incomplete snapshot ids of `docs` in the bucket, read from the S3 server's
/// disk (posix backend: one directory per key prefix).
fn bucket_snapshots() -> Result<(Vec<String>, Vec<String>)> {
    let dir = Path::new(&env("VECSHARD_E2E_S3_ROOT")?).join(format!("{BUCKET}/{PREFIX}/{NAME}"));
    let (mut complete, mut incomplete) = (Vec::new(), Vec::new());
    // A file anywhere below (the posix backend may leave empty directories after deletes).
    fn holds_a_file(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let path = e.path();
                if path.is_dir() {
                    holds_a_file(&path)
                } else {
                    true
                }
            })
    }
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("manifest.json").exists() {
            complete.push(id);
        } else if holds_a_file(&entry.path()) {
            incomplete.push(id);
        }
    }
    complete.sort();
    incomplete.sort();
    Ok((complete, incomplete))
}

fn shard_manifest(id: &str, shard: &str) -> Result<vecshard_snapshot::ShardManifest> {
    let path = Path::new(&env("VECSHARD_E2E_S3_ROOT")?).join(format!(
        "{BUCKET}/{PREFIX}/{NAME}/{id}/{shard}/manifest.json"
    ));
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

/// Every shard pod of `ns` holds exactly the partitions (count and checksum) its shard's
/// manifest in snapshot `id` lists.
async fn pods_match_manifests(client: &Client, ns: &str, id: &str) -> Result<usize> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let mut checked = 0;
    for p in pods
        .items
        .iter()
        .filter(|p| !p.name_any().contains("router"))
    {
        let shard = shard_of(&p.name_any());
        let want: Vec<(u32, u64, u64)> = shard_manifest(id, &shard)?
            .partitions
            .iter()
            .map(|e| (e.partition, e.count, e.checksum))
            .collect();
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod IP")?;
        let got: Vec<(u32, u64, u64)> =
            vecshard_proto::v1::points_internal_client::PointsInternalClient::new(
                Channel::from_shared(format!("http://{ip}:6334"))?
                    .connect()
                    .await?,
            )
            .partition_stats(vecshard_proto::v1::PartitionStatsRequest {
                collection: NAME.into(),
                partition_count: 16,
            })
            .await?
            .into_inner()
            .partitions
            .iter()
            .map(|s| (s.partition, s.count, s.checksum))
            .collect();
        ensure!(
            got == want,
            "pod {} differs from shard {shard}'s manifest: {got:?} vs {want:?}",
            p.name_any()
        );
        checked += 1;
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_go_to_s3_on_demand_and_on_schedule_and_restore_into_new_collections(
) -> Result<()> {
    let t = Instant::now();
    let log = |what: &str| eprintln!("[snapshots {:>6.1}s] {what}", t.elapsed().as_secs_f64());
    let client = client().await?;
    storage_class(&client).await?;
    let data = Dataset::open(Path::new(&env("VECSHARD_E2E_DATASET")?))?;

    // ---- a loaded 2x2 collection whose bucket is the S3 server on the node ----
    let source = namespace(&client, "snap").await?;
    let _volumes = tokio::spawn(provision_local_volumes(client.clone(), source.clone()));
    credentials(&client, &source).await?;
    let vc = small_collection(
        2,
        json!({"snapshots": {"enabled": false, "retain": 2, "s3": s3_spec()?}}),
    )?;
    create(&client, &source, &vc).await?;
    phase(&client, &source, NAME, "Ready", POD_WAIT).await?;
    let router = router_client(&client, &source).await?;
    for start in (0..LOADED).step_by(500) {
        let points = (start..start + 500)
            .map(|i| data.point(i as u64, i))
            .collect();
        upsert(&router, points).await?;
    }
    log(&format!(
        "collection Ready in {source}, {LOADED} points loaded"
    ));

    // ---- on demand, under writes: what was acknowledged before it started is in it ----
    let before = writer_at(router.clone(), data.clone(), 1_000_000, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = before.stop().await?;
    let during = writer_at(
        router.clone(),
        data.clone(),
        2_000_000,
        Duration::from_millis(20),
    );
    let snapshots = Api::<VectorSnapshot>::namespaced(client.clone(), &source);
    let manual: VectorSnapshot = serde_json::from_value(json!({
        "apiVersion": "vecshard.io/v1alpha1", "kind": "VectorSnapshot",
        "metadata": {"name": "manual"},
        "spec": {"collection": NAME},
    }))?;
    snapshots.create(&PostParams::default(), &manual).await?;
    let done = eventually("the on-demand snapshot to succeed", POD_WAIT, || async {
        let vs = snapshot_status(&client, &source, "manual").await?;
        let s = vs.status.unwrap_or_default();
        match s.phase.as_deref() {
            Some("Succeeded") | Some("Failed") => Ok(Some(s)),
            _ => Err(format!("phase {:?} {:?}", s.phase, s.message)),
        }
    })
    .await?;
    let during = during.stop().await?;
    ensure!(
        done.phase.as_deref() == Some("Succeeded"),
        "the on-demand snapshot failed: {:?}",
        done.message
    );
    let id = done.snapshot_id.clone().context("snapshot id")?;
    log(&format!(
        "on-demand snapshot {id}: {:?} vectors, {:?} bytes in {:?} ({} points acknowledged before it, {} during)",
        done.vectors,
        done.bytes,
        done.duration,
        before.acked.len(),
        during.acked.len()
    ));
    let recorded = eventually(
        "status.lastSnapshots and SnapshotSucceeded",
        Duration::from_secs(60),
        || async {
            let vc = get_vc(&client, &source, NAME).await?;
            let last = vc
                .status
                .as_ref()
                .and_then(|s| s.last_snapshots.first().cloned());
            let cond = vecshard_e2e::condition(&vc, "SnapshotSucceeded");
            match (last, cond) {
                (Some(l), Some(c)) if l.id == id && c.0 == "True" => Ok(Some(c.2)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    log(&format!(
        "collection status: SnapshotSucceeded ({recorded})"
    ));
    let source_recall = data.recall_at_10(&router, 100).await?;

    // ---- the schedule: every minute, keep 2 (runs while the restores below go on) ----
    patch_spec(
        &client,
        &source,
        NAME,
        json!({"snapshots": {"enabled": true, "schedule": "* * * * *", "retain": 2, "s3": s3_spec()?}}),
    )
    .await?;
    let scheduled_from = Instant::now();

    // ---- restore into a new collection in another namespace ----
    let target = namespace(&client, "restore").await?;
    let _volumes2 = tokio::spawn(provision_local_volumes(client.clone(), target.clone()));
    credentials(&client, &target).await?;
    let restored_vc = small_collection(
        2,
        json!({"restoreFrom": {"s3": s3_spec()?, "collection": NAME, "snapshot": id}}),
    )?;
    let restore_started = Instant::now();
    create(&client, &target, &restored_vc).await?;
    phase(&client, &target, NAME, "Ready", POD_WAIT).await?;
    let restore_secs = restore_started.elapsed().as_secs_f64();
    let status = get_vc(&client, &target, NAME)
        .await
        .map_err(anyhow::Error::msg)?
        .status
        .unwrap_or_default();
    let restore = status.restore.context("status.restore")?;
    ensure!(
        restore.snapshot_id == id && restore.completed_at.is_some(),
        "{restore:?}"
    );
    let restored_router = router_client(&client, &target).await?;
    let expected: Vec<u64> = (0..LOADED as u64)
        .chain(before.acked.iter().copied())
        .collect();
    let missing = missing_ids(&restored_router, &expected).await?;
    ensure!(
        missing.is_empty(),
        "{} acknowledged points missing after the restore, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let restored_count = count(&restored_router).await?;
    ensure!(
        Some(restored_count) == done.vectors,
        "restored {restored_count} points, the snapshot holds {:?}",
        done.vectors
    );
    let pods_checked = pods_match_manifests(&client, &target, &id).await?;
    let restored_recall = data.recall_at_10(&restored_router, 100).await?;
    ensure!(
        (restored_recall - source_recall).abs() <= 0.02 && restored_recall >= 0.95,
        "recall@10 restored {restored_recall:.4}, source {source_recall:.4}"
    );
    log(&format!(
        "restored into {target} in {restore_secs:.1}s: {restored_count} points, every point acknowledged before the snapshot, per-partition checksums of {pods_checked} pods equal the manifests, recall@10 {restored_recall:.4} (source {source_recall:.4})"
    ));

    // ---- a flipped byte: the restore refuses and names the object ----
    let records = Path::new(&env("VECSHARD_E2E_S3_ROOT")?).join(format!(
        "{BUCKET}/{PREFIX}/{NAME}/{id}/{NAME}-1/records.bin"
    ));
    let mut bytes = std::fs::read(&records)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&records, &bytes)?;
    let corrupt = namespace(&client, "corrupt").await?;
    let _volumes3 = tokio::spawn(provision_local_volumes(client.clone(), corrupt.clone()));
    credentials(&client, &corrupt).await?;
    let corrupt_vc = small_collection(
        1,
        json!({"restoreFrom": {"s3": s3_spec()?, "collection": NAME, "snapshot": id}}),
    )?;
    create(&client, &corrupt, &corrupt_vc).await?;
    let refused = eventually(
        "the pod restoring the corrupt shard to fail, naming the object",
        POD_WAIT,
        || async {
            let p = pod(&client, &corrupt, "docs-1-0")
                .await
                .map_err(|e| e.to_string())?;
            let message = p
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.last_state.or(c.state))
                .and_then(|s| s.terminated)
                .and_then(|t| t.message)
                .unwrap_or_default();
            if message.contains("records.bin") && message.contains("corrupt") {
                Ok(Some(message))
            } else {
                Err(format!("termination message {message:?}"))
            }
        },
    )
    .await?;
    let corrupt_phase = get_vc(&client, &corrupt, NAME)
        .await
        .map_err(anyhow::Error::msg)?
        .status
        .and_then(|s| s.phase);
    ensure!(
        corrupt_phase.as_deref() == Some("Restoring"),
        "the collection restoring a corrupt snapshot is {corrupt_phase:?}"
    );
    let line = refused
        .lines()
        .find(|l| l.contains("records.bin"))
        .unwrap_or_default()
        .trim()
        .to_string();
    log(&format!(
        "a flipped byte: docs-1-0 refuses ({line}); the collection stays Restoring"
    ));
    bytes[middle] ^= 0x20;
    std::fs::write(&records, &bytes)?;
    Api::<VectorCollection>::namespaced(client.clone(), &corrupt)
        .delete(NAME, &DeleteParams::default())
        .await?;

    // ---- four scheduled ticks: exactly two scheduled snapshots kept, no orphans ----
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let outcome = eventually(
        "four scheduled snapshots, retention down to two",
        Duration::from_secs(420),
        || async {
            let list = snapshots
                .list(&ListParams::default().labels("vecshard.io/scheduled-by=docs"))
                .await
                .map_err(|e| e.to_string())?;
            let mut seen = seen.lock().unwrap();
            for v in &list.items {
                if v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
                    seen.insert(v.name_any());
                }
            }
            let running = list.items.iter().any(|v| {
                !matches!(
                    v.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded") | Some("Failed")
                )
            });
            let (complete, incomplete) = bucket_snapshots().map_err(|e| e.to_string())?;
            let state = format!(
                "succeeded so far {:?}; resources now {:?}; bucket complete {complete:?}, incomplete {incomplete:?}",
                *seen,
                list.items.iter().map(|v| v.name_any()).collect::<Vec<_>>()
            );
            // The manual snapshot and the two newest scheduled ones; nothing half-written.
            if seen.len() >= 4 && !running && complete.len() == 3 && incomplete.is_empty()
                && complete.contains(&id) && list.items.len() == 2
            {
                Ok(Some(state))
            } else {
                Err(state)
            }
        },
    )
    .await?;
    log(&format!(
        "schedule: {outcome} ({:.0}s after enabling it)",
        scheduled_from.elapsed().as_secs_f64()
    ));
    patch_spec(
        &client,
        &source,
        NAME,
        json!({"snapshots": {"enabled": false, "retain": 2, "s3": s3_spec()?}}),
    )
    .await?;
    Ok(())
}
