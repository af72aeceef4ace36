//! A ShardSet's status from its StatefulSet. Pure.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::controller::conditions::condition;
use crate::crd::{ShardSet, ShardSetStatus};
use crate::names;

pub fn shard_set_status(ss: &ShardSet, sts: Option<&StatefulSet>, now: &Time) -> ShardSetStatus {
    let previous = ss.status.clone().unwrap_or_default();
    let live = sts.and_then(|s| s.status.clone()).unwrap_or_default();
    let ready = live.ready_replicas.unwrap_or(0);
    let rolled_out =
        live.update_revision.is_none() || live.current_revision == live.update_revision;
    let all_ready = ready >= ss.spec.replicas && rolled_out;
    let down = ready == 0 && ss.spec.replicas > 0;
    let message = format!("{ready}/{} replicas ready", ss.spec.replicas);
    let generation = ss.metadata.generation;
    let c = |t: &str, status: bool, reason: &str, message: String| {
        condition(
            t,
            status,
            reason,
            message,
            generation,
            &previous.conditions,
            now,
        )
    };
    ShardSetStatus {
        replicas: live.replicas,
        ready_replicas: ready,
        selector: Some(names::selector_string(&names::shard_selector(
            &ss.spec.collection,
            &ss.name_any(),
        ))),
        observed_generation: generation,
        conditions: vec![
            c(
                "Ready",
                all_ready,
                if all_ready {
                    "AllReplicasReady"
                } else {
                    "WaitingForReplicas"
                },
                message.clone(),
            ),
            c(
                "Progressing",
                !all_ready,
                match (all_ready, rolled_out) {
                    (true, _) => "Reconciled",
                    (false, true) => "Scaling",
                    (false, false) => "RollingUpdate",
                },
                message,
            ),
            c(
                "Degraded",
                down,
                if down { "NoReadyReplica" } else { "Healthy" },
                if down {
                    "no replica of this shard is ready".into()
                } else if ss.spec.replicas == 0 {
                    "the shard is scaled to zero replicas".into()
                } else {
                    "at least one replica is ready".into()
                },
            ),
        ],
        vectors: previous.vectors,
    }
}
