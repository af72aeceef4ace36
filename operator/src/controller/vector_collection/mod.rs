//! VectorCollection controller: `validate → build → apply → status`. A spec that cannot be
//! built leaves every workload as it is and turns the collection `Degraded` with an Event.

pub mod build;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::{apply, apply_status, delete_if_present, get_opt, publish};
use super::Context;
use crate::crd::{ShardSet, VectorCollection};
use crate::error::{Error, Result};
use crate::names;

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
    let ns = vc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = vc.name_any();
    let existing = owned_shard_sets(client, &ns, &vc).await?;

    // validate
    let invalid = validate::validate(&vc.spec, &existing).err();
    let (shard_sets, map_version) = match &invalid {
        Some(why) => {
            tracing::warn!(collection = %name, %why, "spec cannot be built; workloads left as they are");
            (existing, None)
        }
        None => {
            let (sets, version) = apply_children(&vc, client, &ns, &existing).await?;
            (sets, Some(version))
        }
    };

    // status
    let router = get_opt::<Deployment>(client, &ns, &names::router_name(&name)).await?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut next =
        status::collection_status(&vc, &shard_sets, router.as_ref(), invalid.as_ref(), &now);
    if map_version.is_some() {
        next.shard_map_version = map_version;
    }
    if let Some((warning, reason, note)) = status::transition_event(vc.status.as_ref(), &next) {
        publish(&ctx, vc.as_ref(), warning, &reason, note).await;
    }
    if vc.status.as_ref() != Some(&next) {
        apply_status(
            client,
            vc.as_ref(),
            serde_json::to_value(&next).expect("serializes"),
        )
        .await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// build → apply: the ShardSets, the shard map, the router and its RBAC. Returns the ShardSets
/// as the API server holds them now.
async fn apply_children(
    vc: &VectorCollection,
    client: &kube::Client,
    ns: &str,
    existing: &[ShardSet],
) -> Result<(Vec<ShardSet>, u64)> {
    let name = vc.name_any();
    let mut shard_sets = Vec::new();
    for ordinal in 0..vc.spec.shards {
        let live = existing.iter().find(|ss| ss.spec.shard == ordinal);
        let replicas = build::shard_replicas(vc, live);
        let mut applied = apply(client, &build::build_shard_set(vc, ordinal, replicas)?).await?;
        // Keep the status we read: the apply response may predate the ShardSet controller's
        // latest status write only by one round, and the ShardSet watch triggers us again.
        if applied.status.is_none() {
            applied.status = live.and_then(|l| l.status.clone());
        }
        shard_sets.push(applied);
    }

    let map_name = names::shard_map_name(&name);
    let previous = get_opt::<ConfigMap>(client, ns, &map_name)
        .await?
        .as_ref()
        .and_then(build::read_shard_map);
    let published = vc
        .status
        .as_ref()
        .and_then(|s| s.shard_map_version)
        .unwrap_or(0);
    let map = build::build_shard_map(vc, &shard_sets, previous.as_ref(), published);
    apply(client, &build::build_shard_map_config_map(vc, &map)?).await?;

    let (account, role, binding) = build::build_router_rbac(vc)?;
    apply(client, &account).await?;
    apply(client, &role).await?;
    apply(client, &binding).await?;
    apply(client, &build::build_router_deployment(vc)?).await?;
    apply(client, &build::build_router_service(vc)?).await?;
    apply(client, &build::build_router_pdb(vc)?).await?;
    match build::build_router_hpa(vc)? {
        Some(hpa) => {
            apply(client, &hpa).await?;
        }
        None => {
            delete_if_present::<HorizontalPodAutoscaler>(client, ns, &names::router_name(&name))
                .await?
        }
    }
    Ok((shard_sets, map.version))
}

/// The ShardSets this collection controls (by owner uid, not only by name).
async fn owned_shard_sets(
    client: &kube::Client,
    ns: &str,
    vc: &VectorCollection,
) -> Result<Vec<ShardSet>> {
    let uid = vc.uid();
    let list = Api::<ShardSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            names::LABEL_COLLECTION,
            vc.name_any()
        )))
        .await
        .map_err(|source| Error::Get {
            kind: "ShardSet".into(),
            name: format!("{ns}/{}-*", vc.name_any()),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .filter(|ss| {
            ss.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect())
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;
