//! VectorCollection controller: `observe → validate → plan → apply → status`. Every read is
//! in `observe`; `validate`, `plan` (with `build`) and `status` are pure; this module makes the
//! writes. A spec that cannot be built leaves every workload as it is and turns the collection
//! `Degraded` with an Event.

pub mod build;
pub mod observe;
pub mod plan;
pub mod status;
pub mod validate;
pub mod validated;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::{apply, apply_or_delete, apply_status, publish};
use super::Context;
use crate::crd::VectorCollection;
use crate::error::Result;
use observe::Observed;
use plan::Children;
use status::Live;

pub const CONTROLLER: &str = "vectorcollection";
/// Re-check even without a change (status of children that emit no watch event, drift).
const RESYNC: Duration = Duration::from_secs(300);

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

    let (live, invalid) = match validate::validate(&observed.collection, &observed.shard_sets) {
        Ok(valid) => {
            let children = plan::plan(&valid, &observed)?;
            (apply_children(client, &observed, children).await?, None)
        }
        Err(why) => {
            let collection = observed.collection.name_any();
            tracing::warn!(%collection, %why, "spec cannot be built; workloads left as they are");
            let live = Live {
                shard_sets: observed.shard_sets.clone(),
                router: observed.router.clone(),
                shard_map_version: None,
            };
            (live, Some(why))
        }
    };

    let vc = observed.collection.as_ref();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::next_status(vc, &live, invalid.as_ref(), &now);
    if let Some((warning, reason, note)) = status::transition_event(vc.status.as_ref(), &next) {
        publish(&ctx, vc, warning, &reason, note).await;
    }
    if vc.status.as_ref() != Some(&next) {
        apply_status(client, vc, serde_json::to_value(&next).expect("serializes")).await?;
    }
    Ok(Action::requeue(RESYNC))
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
    apply(client, &children.router_account).await?;
    apply(client, &children.router_role).await?;
    apply(client, &children.router_binding).await?;
    let router = apply(client, &children.router).await?;
    apply(client, &children.router_service).await?;
    apply(client, &children.router_pdb).await?;
    apply_or_delete(client, &observed.namespace, &children.router_hpa).await?;
    Ok(Live {
        shard_sets,
        router: Some(router),
        shard_map_version: Some(children.shard_map_version),
    })
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;
