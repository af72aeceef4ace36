//! ShardSet controller: `observe → build → apply → status` for the StatefulSet, headless
//! Service, PDB and HPA of one shard. There is no validate step: ShardSets are built by the
//! VectorCollection controller from a spec it validated. `build` and `status` are pure; this
//! module makes the writes.

pub mod build;
pub mod status;
pub mod vectors;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::{apply, apply_or_delete, apply_status, publish};
use super::Context;
use crate::crd::ShardSet;
use crate::error::{Error, Result};

pub const CONTROLLER: &str = "shardset";
const RESYNC: Duration = Duration::from_secs(300);

/// What the ShardSet reconcile decides from. The ShardSet is all it reads: the StatefulSet's
/// state comes back from applying it, so a read before would only be older.
#[derive(Clone, Debug)]
pub struct Observed {
    pub shard_set: Arc<ShardSet>,
    /// Its namespace, where every child lives.
    pub namespace: String,
}

impl Observed {
    pub fn new(shard_set: Arc<ShardSet>) -> Result<Observed> {
        let namespace = shard_set
            .namespace()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        Ok(Observed {
            shard_set,
            namespace,
        })
    }
}

pub async fn reconcile(ss: Arc<ShardSet>, ctx: Arc<Context>) -> Result<Action> {
    let ctx2 = ctx.clone();
    super::timed(CONTROLLER, ss.clone(), ctx2, reconcile_inner(ss, ctx)).await
}

async fn reconcile_inner(ss: Arc<ShardSet>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let observed = Observed::new(ss)?;
    let ss = observed.shard_set.as_ref();
    let children = build::children(ss)?;
    let sts = apply(client, &children.statefulset).await?;
    apply(client, &children.service).await?;
    apply(client, &children.pdb).await?;
    apply_or_delete(client, &observed.namespace, &children.hpa).await?;

    let pods = list_pods(client, &observed.namespace, ss).await?;
    let ready = status::ready_ordinals(&ss.name_any(), &pods);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::shard_set_status(ss, Some(&sts), ready, &now);
    if let Some((reason, note)) =
        status::readiness_event(ss.status.as_ref(), &next, ss.spec.replicas)
    {
        publish(&ctx, ss, false, reason.as_str(), note).await;
    }
    if ss.status.as_ref() != Some(&next) {
        apply_status(client, ss, status::status_body(&next)).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// The ShardSet's pods (by its selector), for which of them are ready. The StatefulSet's
/// status changes with every pod's readiness, and the controller watches it, so a change
/// here is seen at once.
async fn list_pods(client: &kube::Client, namespace: &str, ss: &ShardSet) -> Result<Vec<Pod>> {
    let selector = crate::names::selector_string(&crate::names::shard_selector(
        &ss.spec.collection,
        &ss.name_any(),
    ));
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    pods.list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .map_err(|source| Error::Get {
            kind: "Pod".into(),
            name: selector,
            source,
        })
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;
