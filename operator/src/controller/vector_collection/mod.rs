//! VectorCollection controller: `observe → validate → plan → apply → status`. Every read is
//! in `observe`; `validate`, `plan` (with `build`) and `status` are pure; this module makes the
//! writes. A spec that cannot be built leaves every workload as it is and turns the collection
//! `Degraded` with an Event.

pub mod build;
pub mod observe;
pub mod plan;
pub mod rebalance;
pub mod restore;
pub mod security;
pub mod snapshots;
pub mod status;
pub mod validate;
pub mod validated;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::{apply, apply_or_delete, apply_status, delete_if_present, publish};
use super::Context;
use crate::crd::VectorCollection;
use crate::error::Result;
use observe::Observed;
use plan::Children;
use status::Live;

pub const CONTROLLER: &str = "vectorcollection";
/// Re-check even without a change (status of children that emit no watch event, drift).
const RESYNC: Duration = Duration::from_secs(300);
/// How often an autoscaled collection is looked at without a change (`AutoscalingActive`).
const AUTOSCALING_RESYNC: Duration = Duration::from_secs(60);

pub async fn reconcile(vc: Arc<VectorCollection>, ctx: Arc<Context>) -> Result<Action> {
    let ctx2 = ctx.clone();
    super::timed(CONTROLLER, vc.clone(), ctx2, reconcile_inner(vc, ctx)).await
}

async fn reconcile_inner(vc: Arc<VectorCollection>, ctx: Arc<Context>) -> Result<Action> {
    if vc.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children; re-applying them would fight it.
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let observed = observe::observe(client, vc).await?;

    let mut requeue = RESYNC;
    let validated = validate::validate(&observed.collection, &observed.shard_sets)
        .and_then(|valid| {
            match &observed.restore {
                None => Ok(valid),
                Some(Ok(r)) => Ok(valid.with_restore(Some(r.clone()))),
                // Nothing is created: pods must not start empty in place of the restore.
                Some(Err(why)) => Err(validate::Invalid::restore(why.clone())),
            }
        })
        .and_then(|valid| {
            // Secrets the pods would mount but cannot: nothing changes until they are fixed.
            security::check_user_secrets(&valid, &observed.secrets)
                .map(|()| valid)
                .map_err(validate::Invalid::named)
        });
    let (live, invalid) = match validated {
        Ok(valid) => {
            issue_certificates(&ctx, &valid, &observed).await?;
            let children = plan::plan(&valid, &observed)?;
            let mut live = apply_children(client, &observed, children).await?;
            if let Some(soon) = drive_rebalance(&ctx, &valid, &observed, &mut live).await {
                requeue = soon;
            }
            live.restore = valid.restore.as_ref().map(|r| r.status.clone());
            if let Some(soon) = drive_schedule(&ctx, &observed, &mut live).await {
                requeue = requeue.min(soon);
            }
            (live, None)
        }
        Err(why) => {
            let collection = observed.collection.name_any();
            tracing::warn!(%collection, %why, "spec cannot be built; workloads left as they are");
            let live = Live {
                shard_sets: observed.shard_sets.clone(),
                router: observed.router.clone(),
                shard_map_version: None,
                // A refused spec moves nothing; the record stays for when it is fixed.
                rebalance: observed
                    .collection
                    .status
                    .as_ref()
                    .and_then(|s| s.rebalance.clone()),
                ..Live::default()
            };
            (live, Some(why))
        }
    };

    let mut live = live;
    live.snapshots = observed.snapshots.clone();
    if observed.collection.spec.autoscaling.is_some() {
        live.hpas = list_hpas(client, &observed).await;
        // The shard HPAs belong to the ShardSets and are not watched here (their status
        // changes at every HPA sync): look again within a minute, so `AutoscalingActive`
        // follows a metrics outage and its end.
        requeue = requeue.min(AUTOSCALING_RESYNC);
    }
    if live.snapshot_schedule.is_none() {
        live.snapshot_schedule = observed
            .collection
            .status
            .as_ref()
            .and_then(|s| s.snapshot_schedule.clone());
    }
    let vc = observed.collection.as_ref();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::next_status(vc, &live, invalid.as_ref(), &now);
    if let Some((warning, reason, note)) = status::transition_event(vc.status.as_ref(), &next) {
        publish(&ctx, vc, warning, &reason, note).await;
    }
    if let Some((reason, note)) = status::autoscaling_warning(vc) {
        publish(&ctx, vc, true, reason, note).await;
    }
    if vc.status.as_ref() != Some(&next) {
        apply_status(client, vc, serde_json::to_value(&next).expect("serializes")).await?;
    }
    Ok(Action::requeue(requeue))
}

/// Writes the collection's CA and certificate when they are missing or due for renewal
/// (operator-issued TLS), before the pods that mount them.
async fn issue_certificates(
    ctx: &Context,
    valid: &validated::ValidatedCollection,
    observed: &Observed,
) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let plan = security::plan_certificates(valid, &observed.secrets, now)
        .map_err(crate::error::Error::Certificate)?;
    if let Some(ca) = &plan.ca {
        apply(&ctx.client, ca).await?;
    }
    if let Some(tls) = &plan.tls {
        apply(&ctx.client, tls).await?;
    }
    if let Some((reason, note)) = plan.event {
        publish(ctx, observed.collection.as_ref(), false, reason, note).await;
    }
    Ok(())
}

/// The collection's HPAs (labelled with its name), for `AutoscalingActive`. A failure to list
/// them leaves the condition as it was rather than failing the reconcile.
async fn list_hpas(
    client: &kube::Client,
    observed: &Observed,
) -> Vec<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let selector = format!(
        "{}={}",
        crate::names::LABEL_COLLECTION,
        observed.collection.name_any()
    );
    let api = kube::Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &observed.namespace);
    match api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "cannot list the collection's HPAs");
            Vec::new()
        }
    }
}

/// Runs one step of a shard-count change, if one is needed and its shards are ready, and puts
/// the progress to record into `live`. Returns how soon to reconcile again.
async fn drive_rebalance(
    ctx: &Context,
    valid: &validated::ValidatedCollection,
    observed: &Observed,
    live: &mut Live,
) -> Option<Duration> {
    let vc = observed.collection.as_ref();
    let progress = rebalance::recorded(vc);
    let target = rebalance::target(valid, &live.shard_sets);
    let map = observed.shard_map.as_ref();
    if !rebalance::needed(map, progress.as_ref(), &target) {
        live.rebalance = None;
        return None;
    }
    let previous = vc.status.as_ref().and_then(|s| s.rebalance.as_ref());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let involved = rebalance::shards_in_use(progress.as_ref(), map);
    if !rebalance::shards_ready(&live.shard_sets, &involved)
        || !rebalance::shards_ready(
            &live.shard_sets,
            &target.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        )
    {
        // New shards are starting: nothing moves until every shard involved is Ready. A plan
        // not yet recorded is only shown (so setting spec.shards back simply cancels it).
        live.rebalance = match progress {
            Some(p) => Some(rebalance::status_of(
                &p,
                previous,
                true,
                String::new(),
                &now,
            )),
            None => map.map(|m| {
                let preview = vecshard_rebalance::Progress::start(
                    m,
                    target.clone(),
                    rebalance::batch_partitions(valid.partitions),
                    0,
                );
                let mut shown = rebalance::status_of(&preview, previous, true, String::new(), &now);
                shown.record.clear();
                shown
            }),
        };
        return Some(Duration::from_secs(3));
    }
    let started = std::time::Instant::now();
    let step_name = progress.as_ref().map_or("Plan", |p| p.step.as_str());
    // The shards are called with the collection's certificate and key.
    let stepped = match security::operator_client(&observed.secrets) {
        Ok(client) => {
            vecshard_security::scoped(
                client,
                rebalance::step(&ctx.client, valid, progress.clone(), &target),
            )
            .await
        }
        Err(e) => Err(anyhow::anyhow!("the collection's TLS Secret: {e}")),
    };
    match stepped {
        Ok((next, report)) => {
            ctx.metrics
                .rebalance_step(step_name, started.elapsed().as_secs_f64(), report.bytes);
            if let Some(v) = report.published {
                live.shard_map_version = Some(v);
            }
            if let Some(note) = rebalance::event_for(progress.as_ref(), next.as_ref(), &report) {
                if let Some(p) = progress
                    .as_ref()
                    .filter(|p| rebalance::finished_batch(p, next.as_ref()))
                {
                    ctx.metrics
                        .rebalance_partitions_moved
                        .inc_by(p.current().map_or(0, |b| b.partitions.len() as u64));
                }
                publish(ctx, vc, false, note.0.as_str(), note.1).await;
            }
            live.rebalance =
                next.map(|p| rebalance::status_of(&p, previous, false, String::new(), &now));
            Some(Duration::from_millis(200))
        }
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(collection = %valid.name, step = step_name, error = %message, "rebalancing step failed; retrying");
            publish(
                ctx,
                vc,
                true,
                rebalance::RebalanceEvent::RebalanceStepFailed.as_str(),
                format!("{step_name}: {message}"),
            )
            .await;
            live.rebalance =
                progress.map(|p| rebalance::status_of(&p, previous, false, message, &now));
            Some(Duration::from_secs(5))
        }
    }
}

/// Handles the snapshot schedule's tick, if one is due: creates the scheduled VectorSnapshot
/// (or skips the tick while one runs) and records the schedule's position in `live`. Returns
/// how soon the next tick is.
async fn drive_schedule(ctx: &Context, observed: &Observed, live: &mut Live) -> Option<Duration> {
    let vc = observed.collection.as_ref();
    let spec = vc.spec.snapshots.as_ref()?;
    let created = vc
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second().max(0) as u64);
    let now = k8s_openapi::jiff::Timestamp::now().as_second().max(0) as u64;
    let previous = vc
        .status
        .as_ref()
        .and_then(|s| s.snapshot_schedule.as_ref());
    let running = snapshots::any_running(&observed.snapshots);
    let tick = match snapshots::tick(spec, previous, created, now, running, &vc.name_any()) {
        Ok(tick) => tick?,
        Err(why) => {
            publish(ctx, vc, true, "InvalidSchedule", why).await;
            return None;
        }
    };
    if let Some(name) = &tick.create {
        match snapshots::create_scheduled(&ctx.client, vc, name).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "creating the scheduled snapshot failed; retrying");
                return Some(Duration::from_secs(10));
            }
        }
    }
    if tick.skipped {
        publish(
            ctx,
            vc,
            true,
            crate::controller::vector_snapshot::SnapshotEvent::SnapshotSkipped.as_str(),
            "a snapshot of the collection is still running: this tick is skipped".into(),
        )
        .await;
    }
    live.snapshot_schedule = Some(tick.status);
    // Slightly after the tick, so it is due when the reconcile runs.
    tick.wait_seconds.map(|s| Duration::from_secs(s + 1))
}

/// Applies the children in order and returns them as the API server holds them now.
async fn apply_children(
    client: &kube::Client,
    observed: &Observed,
    children: Children,
) -> Result<Live> {
    let mut shard_sets = Vec::with_capacity(children.shard_sets.len());
    for ss in &children.shard_sets {
        let applied = apply(client, ss).await?;
        let ordinal = ss.spec.shard;
        shard_sets.push(status::keep_observed_status(
            applied,
            observed.shard_set(ordinal),
        ));
    }
    apply(client, &children.shard_map).await?;
    // Only after the map no longer names them (their partitions moved away).
    for name in &children.retired_shard_sets {
        delete_if_present::<crate::crd::ShardSet>(client, &observed.namespace, name).await?;
    }
    apply(client, &children.router_account).await?;
    apply(client, &children.router_role).await?;
    apply(client, &children.router_binding).await?;
    let router = apply(client, &children.router).await?;
    apply(client, &children.router_service).await?;
    apply(client, &children.router_pdb).await?;
    apply_or_delete(client, &observed.namespace, &children.router_hpa).await?;
    apply_or_delete(client, &observed.namespace, &children.shard_network_policy).await?;
    apply_or_delete(client, &observed.namespace, &children.router_network_policy).await?;
    Ok(Live {
        shard_sets,
        router: Some(router),
        shard_map_version: Some(children.shard_map_version),
        ..Live::default()
    })
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;
