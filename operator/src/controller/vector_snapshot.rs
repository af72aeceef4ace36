//! VectorSnapshot controller: takes the snapshot once. The id is chosen and recorded
//! (`Running`) before anything is written, so an operator restarted mid-snapshot takes the same
//! one again (a shard's objects are simply rewritten; the collection manifest, written last,
//! commits it). A snapshot that fails stays `Failed` with the store's error, like a Job: the
//! next scheduled tick (or a new resource) tries again, and retention collects the objects the
//! failed one left. A scheduled snapshot that succeeds prunes the bucket to `retain`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use vecshard_snapshot::{catalog, manifest, take, Repository};

use super::apply::{apply_status, get_opt, publish};
use super::snapshot_store::store_config;
use super::vector_collection::build::read_shard_map;
use super::Context;
use crate::crd::{SnapshotShardStatus, VectorCollection, VectorSnapshot, VectorSnapshotStatus};
use crate::error::{Error, Result};
use crate::metrics::CollectionLabel;
use crate::names;

pub const CONTROLLER: &str = "vectorsnapshot";
/// Label of the snapshots a collection's schedule created: the collection's name.
pub const LABEL_SCHEDULED_BY: &str = "vecshard.io/scheduled-by";
/// How long one collection snapshot may take before it is failed.
const TIMEOUT: Duration = Duration::from_secs(4 * 3600);

api_strings! {
    /// Event reasons of snapshots (on the VectorSnapshot and on its collection).
    pub enum SnapshotEvent {
        SnapshotStarted => "SnapshotStarted",
        SnapshotSucceeded => "SnapshotSucceeded",
        SnapshotFailed => "SnapshotFailed",
        /// Retention deleted snapshots beyond `retain` and objects of failed ones.
        SnapshotsPruned => "SnapshotsPruned",
        /// A scheduled tick came while a snapshot of the collection was still running.
        SnapshotSkipped => "SnapshotSkipped",
    }
}

api_strings! {
    pub enum SnapshotPhase {
        Pending => "Pending",
        Running => "Running",
        Succeeded => "Succeeded",
        Failed => "Failed",
    }
}

/// Whether a snapshot in this phase has finished (nothing more will happen to it).
pub fn finished(vs: &VectorSnapshot) -> bool {
    matches!(
        vs.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

pub async fn reconcile(vs: Arc<VectorSnapshot>, ctx: Arc<Context>) -> Result<Action> {
    let ctx2 = ctx.clone();
    super::timed(CONTROLLER, vs.clone(), ctx2, reconcile_inner(vs, ctx)).await
}

async fn set_status(
    ctx: &Context,
    vs: &VectorSnapshot,
    status: &VectorSnapshotStatus,
) -> Result<()> {
    apply_status(
        &ctx.client,
        vs,
        serde_json::to_value(status).expect("serializes"),
    )
    .await
}

async fn reconcile_inner(vs: Arc<VectorSnapshot>, ctx: Arc<Context>) -> Result<Action> {
    if vs.metadata.deletion_timestamp.is_some() || finished(&vs) {
        return Ok(Action::await_change());
    }
    let ns = vs
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let mut status = vs.status.clone().unwrap_or_default();
    let collection = vs.spec.collection.clone();
    let fail = |mut status: VectorSnapshotStatus, message: String| {
        status.phase = Some(SnapshotPhase::Failed.to_string());
        status.message = Some(message);
        status.completed_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
        status
    };
    let Some(vc) = get_opt::<VectorCollection>(&ctx.client, &ns, &collection).await? else {
        let next = fail(
            status,
            format!("VectorCollection {ns}/{collection} does not exist"),
        );
        return finish(&ctx, &vs, None, next).await;
    };
    let s3 = vs
        .spec
        .s3
        .clone()
        .or_else(|| vc.spec.snapshots.as_ref().and_then(|s| s.s3.clone()));
    let Some(s3) = s3 else {
        let next = fail(
            status,
            "no bucket: set spec.s3 here or spec.snapshots.s3 on the collection".into(),
        );
        return finish(&ctx, &vs, Some(&vc), next).await;
    };
    let store = match store_config(&ctx.client, &ns, &s3).await {
        Ok(store) => store,
        Err(message) => return finish(&ctx, &vs, Some(&vc), fail(status, message)).await,
    };
    let map = get_opt::<k8s_openapi::api::core::v1::ConfigMap>(
        &ctx.client,
        &ns,
        &names::shard_map_name(&collection),
    )
    .await?
    .as_ref()
    .and_then(read_shard_map);
    let wait = |mut status: VectorSnapshotStatus, why: &str| {
        status.phase = Some(SnapshotPhase::Pending.to_string());
        status.message = Some(why.to_string());
        status
    };
    let Some(map) = map.filter(|m| m.moves.is_empty()) else {
        let next = wait(
            status,
            "waiting for the collection's shard map (the collection is new, or partitions are moving between shards)",
        );
        set_status(&ctx, &vs, &next).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };

    let id = status
        .snapshot_id
        .clone()
        .unwrap_or_else(|| manifest::new_snapshot_id(vecshard_core_now_millis()));
    if status.phase.as_deref() != Some("Running") {
        status.phase = Some(SnapshotPhase::Running.to_string());
        status.snapshot_id = Some(id.clone());
        status.location = Some(format!("{}/{collection}/{id}", store.url));
        status.started_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
        status.message = None;
        set_status(&ctx, &vs, &status).await?;
        publish(
            &ctx,
            vs.as_ref(),
            false,
            SnapshotEvent::SnapshotStarted.as_str(),
            format!("snapshot {id} of {collection} to {}", store.url),
        )
        .await;
    }
    let started = Instant::now();
    // The shards are called with the collection's certificate and key.
    let secrets =
        crate::controller::vector_collection::observe::observe_secrets(&ctx.client, &vc).await?;
    let security = match crate::controller::vector_collection::security::operator_client(&secrets) {
        Ok(security) => security,
        Err(e) => {
            let next = fail(status, format!("the collection's TLS Secret: {e}"));
            return finish(&ctx, &vs, Some(&vc), next).await;
        }
    };
    let taken = tokio::time::timeout(
        TIMEOUT,
        vecshard_security::scoped(security, take::take(&store, &map, Some(id.clone()))),
    )
    .await;
    let labels = CollectionLabel {
        namespace: ns.clone(),
        collection: collection.clone(),
    };
    let next = match taken {
        Ok(Ok(m)) => {
            let secs = started.elapsed().as_secs_f64();
            ctx.metrics
                .snapshot_duration
                .get_or_create(&labels)
                .observe(secs);
            ctx.metrics
                .snapshot_last_success
                .get_or_create(&labels)
                .set(k8s_openapi::jiff::Timestamp::now().as_second());
            status.phase = Some(SnapshotPhase::Succeeded.to_string());
            status.vectors = Some(m.points);
            status.bytes = Some(m.bytes);
            status.completed_at = Some(k8s_openapi::jiff::Timestamp::now().to_string());
            status.duration = Some(format!("{secs:.1}s"));
            status.shards = m
                .shards
                .iter()
                .map(|s| SnapshotShardStatus {
                    name: s.name.clone(),
                    replica: s.replica.clone(),
                    vectors: s.points,
                    bytes: s.bytes,
                })
                .collect();
            status
        }
        Ok(Err(e)) => {
            ctx.metrics.snapshot_failures.get_or_create(&labels).inc();
            fail(status, e.to_string())
        }
        Err(_) => {
            ctx.metrics.snapshot_failures.get_or_create(&labels).inc();
            fail(
                status,
                format!("did not finish within {} s", TIMEOUT.as_secs()),
            )
        }
    };
    let succeeded = next.phase.as_deref() == Some("Succeeded");
    let action = finish(&ctx, &vs, Some(&vc), next).await?;
    if succeeded && vs.labels().contains_key(LABEL_SCHEDULED_BY) {
        if let Some(retain) = vc.spec.snapshots.as_ref().map(|s| s.retain) {
            prune(&ctx, &vc, &ns, &store, retain as usize).await;
        }
    }
    Ok(action)
}

fn vecshard_core_now_millis() -> u64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond().max(0) as u64
}

/// Records a finished (or failed) snapshot and tells users, on the snapshot and on its
/// collection.
async fn finish(
    ctx: &Context,
    vs: &VectorSnapshot,
    vc: Option<&VectorCollection>,
    status: VectorSnapshotStatus,
) -> Result<Action> {
    set_status(ctx, vs, &status).await?;
    let ok = status.phase.as_deref() == Some("Succeeded");
    let (reason, note) = if ok {
        (
            SnapshotEvent::SnapshotSucceeded,
            format!(
                "snapshot {} of {}: {} vectors, {} bytes in {} at {}",
                status.snapshot_id.as_deref().unwrap_or(""),
                vs.spec.collection,
                status.vectors.unwrap_or(0),
                status.bytes.unwrap_or(0),
                status.duration.as_deref().unwrap_or(""),
                status.location.as_deref().unwrap_or("")
            ),
        )
    } else {
        (
            SnapshotEvent::SnapshotFailed,
            format!(
                "snapshot {} of {} failed: {}",
                vs.name_any(),
                vs.spec.collection,
                status.message.as_deref().unwrap_or("")
            ),
        )
    };
    publish(ctx, vs, !ok, reason.as_str(), note.clone()).await;
    if let Some(vc) = vc {
        publish(ctx, vc, !ok, reason.as_str(), note).await;
    }
    Ok(Action::await_change())
}

/// Retention after a scheduled snapshot: keeps the newest `retain` complete snapshots of the
/// collection in the bucket, deletes the rest and the objects of failed ones (those of
/// snapshots still running are left), and deletes the scheduled VectorSnapshots whose snapshot
/// is gone. Failures are reported and retried at the next success.
async fn prune(
    ctx: &Context,
    vc: &VectorCollection,
    ns: &str,
    store: &vecshard_snapshot::StoreConfig,
    retain: usize,
) {
    let name = vc.name_any();
    let api: Api<VectorSnapshot> = Api::namespaced(ctx.client.clone(), ns);
    let all = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "listing VectorSnapshots for retention failed");
            return;
        }
    };
    let mine: Vec<&VectorSnapshot> = all.iter().filter(|v| v.spec.collection == name).collect();
    let running: Vec<String> = mine
        .iter()
        .filter(|v| !finished(v))
        .filter_map(|v| v.status.as_ref().and_then(|s| s.snapshot_id.clone()))
        .collect();
    // Only the schedule's own snapshots count toward `retain` and are deleted; on-demand ones
    // stay until a user deletes them.
    let scheduled: Vec<String> = mine
        .iter()
        .filter(|v| v.labels().contains_key(LABEL_SCHEDULED_BY))
        .filter_map(|v| v.status.as_ref().and_then(|s| s.snapshot_id.clone()))
        .collect();
    let result = async {
        let repo = Repository::open(store)?;
        catalog::prune(&repo, &name, retain, &running, Some(&scheduled)).await
    }
    .await;
    match result {
        Ok(pruned) => {
            for v in &mine {
                let id = v.status.as_ref().and_then(|s| s.snapshot_id.as_deref());
                let gone = id.is_some_and(|id| {
                    pruned.expired.iter().any(|e| e == id) || pruned.orphans.iter().any(|o| o == id)
                });
                if gone && v.labels().contains_key(LABEL_SCHEDULED_BY) {
                    let _ = api.delete(&v.name_any(), &DeleteParams::default()).await;
                }
            }
            if !pruned.expired.is_empty() || !pruned.orphans.is_empty() {
                publish(
                    ctx,
                    vc,
                    false,
                    SnapshotEvent::SnapshotsPruned.as_str(),
                    format!(
                        "kept the newest {retain} snapshots; deleted {:?} and the objects of incomplete ones {:?} ({} objects)",
                        pruned.expired, pruned.orphans, pruned.objects
                    ),
                )
                .await;
            }
        }
        Err(e) => {
            tracing::warn!(collection = %name, error = %e, "snapshot retention failed");
            publish(
                ctx,
                vc,
                true,
                SnapshotEvent::SnapshotsPruned.as_str(),
                format!("retention failed (retried after the next snapshot): {e}"),
            )
            .await;
        }
    }
}
