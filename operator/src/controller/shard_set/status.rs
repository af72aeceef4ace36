//! A ShardSet's status from its StatefulSet, the Event when its readiness flips, and the body
//! the reconcile writes. Pure.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::controller::conditions::{condition, is_true, ConditionType, Reason};
use crate::crd::{ShardSet, ShardSetStatus};
use crate::names;

api_strings! {
    /// Reasons of the Events on a ShardSet.
    pub enum ShardSetEvent {
        /// Its `Ready` condition turned true.
        Ready => "Ready",
        /// Its `Ready` condition turned false.
        NotReady => "NotReady",
    }
}

/// Ordinals of the ShardSet's pods that are ready and not being deleted, ascending. A pod's
/// name is `<shard set>-<ordinal>`.
pub fn ready_ordinals(shard_set: &str, pods: &[Pod]) -> Vec<u32> {
    let mut ordinals: Vec<u32> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let name = p.metadata.name.as_deref()?;
            name.strip_prefix(shard_set)?
                .strip_prefix('-')?
                .parse()
                .ok()
        })
        .collect();
    ordinals.sort_unstable();
    ordinals.dedup();
    ordinals
}

pub fn shard_set_status(
    ss: &ShardSet,
    sts: Option<&StatefulSet>,
    ready_ordinals: Vec<u32>,
    now: &Time,
) -> ShardSetStatus {
    let previous = ss.status.clone().unwrap_or_default();
    let live = sts.and_then(|s| s.status.clone()).unwrap_or_default();
    let ready = live.ready_replicas.unwrap_or(0);
    let rolled_out =
        live.update_revision.is_none() || live.current_revision == live.update_revision;
    let all_ready = ready >= ss.spec.replicas && rolled_out;
    let down = ready == 0 && ss.spec.replicas > 0;
    let message = format!("{ready}/{} replicas ready", ss.spec.replicas);
    let generation = ss.metadata.generation;
    let c = |t: ConditionType, status: bool, reason: Reason, message: String| {
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
                ConditionType::Ready,
                all_ready,
                if all_ready {
                    Reason::AllReplicasReady
                } else {
                    Reason::WaitingForReplicas
                },
                message.clone(),
            ),
            c(
                ConditionType::Progressing,
                !all_ready,
                match (all_ready, rolled_out) {
                    (true, _) => Reason::Reconciled,
                    (false, true) => Reason::Scaling,
                    (false, false) => Reason::RollingUpdate,
                },
                message,
            ),
            c(
                ConditionType::Degraded,
                down,
                if down {
                    Reason::NoReadyReplica
                } else {
                    Reason::Healthy
                },
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
        ready_ordinals,
    }
}

/// The Event for a flip of the `Ready` condition from `before` to `after` (`replicas`: the
/// ShardSet's `spec.replicas`): its reason and note, `None` without a flip.
pub fn readiness_event(
    before: Option<&ShardSetStatus>,
    after: &ShardSetStatus,
    replicas: i32,
) -> Option<(ShardSetEvent, String)> {
    let was_ready = before.is_some_and(|s| is_true(&s.conditions, ConditionType::Ready));
    let is_ready = is_true(&after.conditions, ConditionType::Ready);
    if was_ready == is_ready {
        return None;
    }
    let reason = if is_ready {
        ShardSetEvent::Ready
    } else {
        ShardSetEvent::NotReady
    };
    Some((
        reason,
        format!("{}/{replicas} replicas ready", after.ready_replicas),
    ))
}

/// The status as the reconcile applies it: without `vectors`, which belongs to the counting
/// loop's field manager (vectors.rs), so the reconcile neither removes nor rewinds a count.
pub fn status_body(status: &ShardSetStatus) -> serde_json::Value {
    let mut body = serde_json::to_value(status).expect("serializes");
    body.as_object_mut().map(|s| s.remove("vectors"));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: &str, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z"),
            },
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": ready},
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn ready_ordinals_are_the_ready_pods_not_being_deleted() {
        let pods = [
            pod("docs-1-2", "True", false),
            pod("docs-1-0", "True", false),
            pod("docs-1-1", "False", false),
            pod("docs-1-3", "True", true),
            // Another ShardSet whose name starts the same way.
            pod("docs-10-4", "True", false),
        ];
        assert_eq!(ready_ordinals("docs-1", &pods), [0, 2]);
        assert!(ready_ordinals("docs-1", &[]).is_empty());
    }

    fn ready(r: bool) -> ShardSetStatus {
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap());
        let reason = if r {
            Reason::AllReplicasReady
        } else {
            Reason::WaitingForReplicas
        };
        ShardSetStatus {
            ready_replicas: if r { 2 } else { 1 },
            conditions: vec![condition(
                ConditionType::Ready,
                r,
                reason,
                "",
                Some(1),
                &[],
                &now,
            )],
            vectors: Some(9),
            ..ShardSetStatus::default()
        }
    }

    #[test]
    fn an_event_is_published_only_when_readiness_flips() {
        assert_eq!(readiness_event(Some(&ready(true)), &ready(true), 2), None);
        assert_eq!(readiness_event(None, &ready(false), 2), None);
        assert_eq!(
            readiness_event(None, &ready(true), 2),
            Some((ShardSetEvent::Ready, "2/2 replicas ready".into()))
        );
        let (reason, note) = readiness_event(Some(&ready(true)), &ready(false), 2).unwrap();
        assert_eq!(
            (reason.as_str(), note.as_str()),
            ("NotReady", "1/2 replicas ready")
        );
    }

    #[test]
    fn the_written_status_leaves_the_count_to_the_counting_loop() {
        let body = status_body(&ready(true));
        assert!(body.get("vectors").is_none(), "{body}");
        assert_eq!(body["readyReplicas"], 2);
    }
}
