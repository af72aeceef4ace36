//! ShardSet controller: `build → apply → status` for the StatefulSet, headless Service, PDB and
//! HPA of one shard. ShardSets are built by the VectorCollection controller, which validated
//! the spec they copy.

pub mod build;
pub mod status;
pub mod vectors;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::apply::{apply, apply_status, delete_if_present, publish};
use super::Context;
use crate::controller::conditions::is_true;
use crate::crd::ShardSet;
use crate::error::{Error, Result};

pub const CONTROLLER: &str = "shardset";
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(ss: Arc<ShardSet>, ctx: Arc<Context>) -> Result<Action> {
    let ctx2 = ctx.clone();
    super::timed(CONTROLLER, ss.clone(), ctx2, reconcile_inner(ss, ctx)).await
}

async fn reconcile_inner(ss: Arc<ShardSet>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = ss
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sts = apply(client, &build::build_statefulset(&ss)?).await?;
    apply(client, &build::build_headless_service(&ss)?).await?;
    apply(client, &build::build_pdb(&ss)?).await?;
    match build::build_hpa(&ss)? {
        Some(hpa) => {
            apply(client, &hpa).await?;
        }
        None => delete_if_present::<HorizontalPodAutoscaler>(client, &ns, &ss.name_any()).await?,
    }

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::shard_set_status(&ss, Some(&sts), &now);
    let was_ready = ss
        .status
        .as_ref()
        .is_some_and(|s| is_true(&s.conditions, "Ready"));
    let is_ready = is_true(&next.conditions, "Ready");
    if was_ready != is_ready {
        let (reason, note) = if is_ready {
            (
                "Ready",
                format!(
                    "{}/{} replicas ready",
                    next.ready_replicas, ss.spec.replicas
                ),
            )
        } else {
            (
                "NotReady",
                format!(
                    "{}/{} replicas ready",
                    next.ready_replicas, ss.spec.replicas
                ),
            )
        };
        publish(&ctx, ss.as_ref(), false, reason, note).await;
    }
    if ss.status.as_ref() != Some(&next) {
        let mut status = serde_json::to_value(&next).expect("serializes");
        // `vectors` belongs to the counting loop's field manager (vectors.rs).
        status.as_object_mut().map(|s| s.remove("vectors"));
        apply_status(client, ss.as_ref(), status).await?;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod reconcile_tests;
