//! The collection's status from what is live: its ShardSets and router Deployment, and whether
//! the spec could be built. Pure; the caller writes it and publishes the Event.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::rebalance;
use super::validate::Invalid;
use crate::controller::conditions::{condition, ConditionType, Reason};
use crate::controller::pod::LATENCY_METRIC;
use crate::crd::{
    RebalanceStatus, ShardSet, ShardStatus, VectorCollection, VectorCollectionStatus,
};

api_strings! {
    /// `status.phase`. The CRD keeps the field a string (its description lists these).
    pub enum Phase {
        /// Replicas starting or rolling, or the router not ready yet.
        Progressing => "Progressing",
        /// Every shard replica and the router ready.
        Ready => "Ready",
        /// The spec was refused; the previous workloads keep serving.
        Degraded => "Degraded",
        /// Partitions are moving between shards (`status.rebalance`); reads and writes go on.
        Rebalancing => "Rebalancing",
        /// A new collection's shard pods fill their volumes from a snapshot (`status.restore`).
        Restoring => "Restoring",
    }
}

/// What the status describes: the children as the API server holds them after this
/// reconcile's writes (or, for a refused spec, as they were observed).
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub shard_sets: Vec<ShardSet>,
    pub router: Option<Deployment>,
    /// The version of the shard map this reconcile applied; `None` when it applied none.
    pub shard_map_version: Option<u64>,
    /// The shard-count change in progress after this reconcile's step (`None`: balanced).
    pub rebalance: Option<RebalanceStatus>,
    /// The collection's VectorSnapshots (for `lastSnapshots` and `SnapshotSucceeded`).
    pub snapshots: Vec<crate::crd::VectorSnapshot>,
    /// The schedule's position after this reconcile.
    pub snapshot_schedule: Option<crate::crd::ScheduleStatus>,
    /// The restore the collection was created from (`None`: none, or the spec was refused).
    pub restore: Option<crate::crd::RestoreStatus>,
    /// The collection's HorizontalPodAutoscalers as last observed (for `AutoscalingActive`).
    pub hpas: Vec<HorizontalPodAutoscaler>,
}

/// An applied ShardSet with the status it was observed with, when the apply response carries
/// none: the response may predate the ShardSet controller's latest status write only by one
/// round, and the ShardSet watch triggers the collection again.
pub fn keep_observed_status(mut applied: ShardSet, observed: Option<&ShardSet>) -> ShardSet {
    if applied.status.is_none() {
        applied.status = observed.and_then(|l| l.status.clone());
    }
    applied
}

/// The status to write: `collection_status` of the live children, with the shard-map version
/// this reconcile published (the previous one when it published none).
pub fn next_status(
    vc: &VectorCollection,
    live: &Live,
    invalid: Option<&Invalid>,
    now: &Time,
) -> VectorCollectionStatus {
    let mut next = collection_status(vc, &live.shard_sets, live.router.as_ref(), invalid, now);
    if live.shard_map_version.is_some() {
        next.shard_map_version = live.shard_map_version;
    }
    next.rebalance = live.rebalance.clone();
    next.last_snapshots = super::snapshots::last_snapshots(&live.snapshots);
    next.snapshot_schedule = live.snapshot_schedule.clone();
    let previous_conditions = vc.status.clone().unwrap_or_default().conditions;
    if let Some(c) = super::snapshots::snapshot_condition(
        &live.snapshots,
        vc.metadata.generation,
        &previous_conditions,
        now,
    ) {
        next.conditions.push(c);
    }
    if let Some(c) = autoscaling_condition(vc, &live.hpas, &previous_conditions, now) {
        next.conditions.push(c);
    }
    // A restored collection is `Restoring` until every shard has restored and is ready once.
    let recorded = vc.status.as_ref().and_then(|s| s.restore.clone());
    if let Some(mut restore) = live.restore.clone().or_else(|| recorded.clone()) {
        if restore.completed_at.is_none() {
            restore.completed_at = recorded.and_then(|r| r.completed_at);
        }
        let ready = next.phase.as_deref() == Some(Phase::Ready.as_str());
        if restore.completed_at.is_none() {
            if ready {
                restore.completed_at = Some(now.0.to_string());
            } else if invalid.is_none() {
                next.phase = Some(Phase::Restoring.to_string());
                if let Some(c) = next
                    .conditions
                    .iter_mut()
                    .find(|c| c.type_ == ConditionType::Progressing.as_str())
                {
                    *c = condition(
                        ConditionType::Progressing,
                        true,
                        Reason::Restoring,
                        format!(
                            "shard pods fill their volumes from snapshot {} ({} vectors); {}",
                            restore.snapshot_id, restore.vectors, c.message
                        ),
                        vc.metadata.generation,
                        &previous_conditions,
                        now,
                    );
                }
            }
        }
        next.restore = Some(restore);
    }
    let moving = live.rebalance.as_ref();
    if let (Some(r), None) = (moving, invalid) {
        next.phase = Some(Phase::Rebalancing.to_string());
        // Replicas of the new shards start while the change waits for them: not a rollout.
        if let Some(c) = next
            .conditions
            .iter_mut()
            .find(|c| c.type_ == ConditionType::Progressing.as_str())
        {
            *c = condition(
                ConditionType::Progressing,
                true,
                rebalance::reason_of(r),
                r.summary.clone(),
                vc.metadata.generation,
                &vc.status.clone().unwrap_or_default().conditions,
                now,
            );
        }
    }
    let (status, reason, message) = match moving {
        Some(r) => {
            let mut message = format!(
                "{}: partitions {:?} from {} to {}; {} points copied so far",
                r.summary, r.moving_partitions, r.moving_from, r.moving_to, r.points_moved
            );
            if !r.last_error.is_empty() {
                message += &format!("; last step failed and is retried: {}", r.last_error);
            }
            (true, rebalance::reason_of(r), message)
        }
        None => (
            false,
            Reason::Balanced,
            format!("partitions balanced over {} shards", vc.spec.shards),
        ),
    };
    next.conditions.push(condition(
        ConditionType::Rebalancing,
        status,
        reason,
        message,
        vc.metadata.generation,
        &vc.status.clone().unwrap_or_default().conditions,
        now,
    ));
    next
}

/// `invalid`: why the current spec could not be built (workloads were left as they were).
pub fn collection_status(
    vc: &VectorCollection,
    shard_sets: &[ShardSet],
    router: Option<&Deployment>,
    invalid: Option<&Invalid>,
    now: &Time,
) -> VectorCollectionStatus {
    let generation = vc.metadata.generation;
    let previous = vc.status.clone().unwrap_or_default();
    let mut shards: Vec<ShardStatus> = shard_sets
        .iter()
        .map(|ss| ShardStatus {
            name: ss.name_any(),
            replicas: ss.spec.replicas.max(0) as u32,
            ready_replicas: ss
                .status
                .as_ref()
                .map_or(0, |s| s.ready_replicas.max(0) as u32),
            vectors: ss.status.as_ref().and_then(|s| s.vectors),
        })
        .collect();
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    let desired: u32 = shards.iter().map(|s| s.replicas).sum();
    let ready: u32 = shards.iter().map(|s| s.ready_replicas).sum();
    // At least spec.shards ShardSets (more while partitions move away from some), all ready.
    let shards_ready = shards.len() >= vc.spec.shards as usize
        && shards.iter().all(|s| s.ready_replicas >= s.replicas);
    let shard_down = shards
        .iter()
        .find(|s| s.ready_replicas == 0 && s.replicas > 0);
    let (router_ready, router_desired) = router
        .and_then(|d| {
            d.status.as_ref().map(|s| {
                (
                    s.ready_replicas.unwrap_or(0),
                    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                )
            })
        })
        .unwrap_or((0, vc.spec.router.replicas as i32));
    let router_up = router_ready >= router_desired.max(1);
    let all_ready = shards_ready && router_up;

    let progress = format!(
        "{ready}/{desired} shard replicas ready; router {router_ready}/{router_desired} ready"
    );
    // (status, reason, message) of Ready, Progressing and Degraded.
    let (phase, ready_c, progressing_c, degraded_c) = match invalid {
        Some(why) => (
            Phase::Degraded,
            (
                all_ready,
                if all_ready {
                    Reason::PreviousSpecServing
                } else {
                    Reason::InvalidSpec
                },
                progress.clone(),
            ),
            (false, Reason::InvalidSpec, format!("not applied: {why}")),
            (
                true,
                Reason::InvalidSpec,
                format!("{why}; the running workloads were left unchanged"),
            ),
        ),
        None if all_ready => (
            Phase::Ready,
            (true, Reason::AllReplicasReady, progress.clone()),
            (
                false,
                Reason::Reconciled,
                "every shard and the router match the spec".to_string(),
            ),
            (false, Reason::Healthy, "all replicas ready".to_string()),
        ),
        None => (
            Phase::Progressing,
            (false, Reason::WaitingForReplicas, progress.clone()),
            (true, Reason::RollingOut, progress.clone()),
            match shard_down {
                Some(s) => (
                    true,
                    Reason::ShardUnavailable,
                    format!("shard {} has no ready replica", s.name),
                ),
                None => (
                    false,
                    Reason::Healthy,
                    "no shard is unavailable".to_string(),
                ),
            },
        ),
    };
    let c = |t: ConditionType, (status, reason, message): (bool, Reason, String)| {
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
    VectorCollectionStatus {
        phase: Some(phase.to_string()),
        observed_generation: generation,
        conditions: vec![
            c(ConditionType::Ready, ready_c),
            c(ConditionType::Progressing, progressing_c),
            c(ConditionType::Degraded, degraded_c),
        ],
        ready: Some(format!("{ready}/{desired}")),
        vectors: shards.iter().map(|s| s.vectors).sum(),
        shards,
        last_snapshots: previous.last_snapshots,
        shard_map_version: previous.shard_map_version,
        rebalance: previous.rebalance,
        snapshot_schedule: previous.snapshot_schedule,
        restore: previous.restore,
    }
}

/// The Event to publish for a status change: `(warning, reason, note)`, or `None` when the
/// phase and the Degraded message stayed the same. The reason is the new phase. Works on the
/// statuses as stored (strings): the previous one may come from another operator version.
pub fn transition_event(
    before: Option<&VectorCollectionStatus>,
    after: &VectorCollectionStatus,
) -> Option<(bool, String, String)> {
    let degraded = |s: &VectorCollectionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
            .map(|c| c.message.clone())
    };
    let phase_before = before.and_then(|s| s.phase.clone());
    if phase_before == after.phase && before.and_then(degraded) == degraded(after) {
        return None;
    }
    let phase = after.phase.clone().unwrap_or_default();
    let ready = after
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str());
    match degraded(after) {
        Some(message) => Some((true, phase, message)),
        None => Some((
            false,
            phase,
            ready.map(|c| c.message.clone()).unwrap_or_default(),
        )),
    }
}

/// The Warning Event for a spec that autoscales shards without a CPU limit on their pods, once
/// per spec generation (the first reconcile of a generation: `observedGeneration` still lags).
/// `AutoscalingActive` of a collection with `spec.autoscaling`: false, naming the HPA and its
/// reason, when a shard HPA cannot read `vecshard_search_p95_seconds` (no custom metrics API,
/// the adapter or Prometheus down); true when every shard HPA computes its replicas from it;
/// absent before any shard HPA has reported. The routers' HPA (CPU) is not part of it.
pub fn autoscaling_condition(
    vc: &VectorCollection,
    hpas: &[HorizontalPodAutoscaler],
    previous: &[Condition],
    now: &Time,
) -> Option<Condition> {
    vc.spec.autoscaling.as_ref()?;
    let router = crate::names::router_name(&vc.name_any());
    let mut reported = 0;
    let mut failing = Vec::new();
    for hpa in hpas.iter().filter(|h| h.name_any() != router) {
        let Some(active) = hpa
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "ScalingActive"))
        else {
            continue;
        };
        reported += 1;
        if active.status == "False" {
            failing.push(format!(
                "HPA {}: {}: {}",
                hpa.name_any(),
                active.reason.as_deref().unwrap_or_default(),
                active.message.as_deref().unwrap_or_default()
            ));
        }
    }
    if reported == 0 {
        return None;
    }
    let (ok, reason, message) = if failing.is_empty() {
        (
            true,
            Reason::MetricsAvailable,
            format!("{reported} shard HPA(s) compute their replicas from {LATENCY_METRIC}"),
        )
    } else {
        (
            false,
            Reason::MetricsUnavailable,
            format!(
                "{}. The shard HPAs read {LATENCY_METRIC} from the custom metrics API \
                 (prometheus-adapter with the chart's rules, docs/operator.md); until they can, \
                 their replicas stay as they are",
                failing.join("; ")
            ),
        )
    };
    Some(condition(
        ConditionType::AutoscalingActive,
        ok,
        reason,
        message,
        vc.metadata.generation,
        previous,
        now,
    ))
}

/// Without a limit every replica on a node shares all its cores, so an added replica adds no
/// capacity: latency stays high and the HPA pegs at `maxReplicas`.
pub fn autoscaling_warning(vc: &VectorCollection) -> Option<(&'static str, String)> {
    let autoscaling = vc.spec.autoscaling.as_ref()?;
    let new_generation =
        vc.status.as_ref().and_then(|s| s.observed_generation) != vc.metadata.generation;
    let cpu_limit = vc
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .is_some_and(|l| l.contains_key("cpu"));
    (new_generation && !cpu_limit).then(|| {
        (
            "AutoscalingWithoutCpuLimit",
            format!(
                "spec.autoscaling scales shards between {} and {} replicas, but \
                 spec.resources.limits.cpu is not set: replicas on a node then share all its \
                 cores, an added replica adds no capacity and the autoscaler can peg at \
                 maxReplicas; set a CPU limit per shard pod",
                autoscaling.min_replicas, autoscaling.max_replicas
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::vector_collection::build::build_shard_set;
    use crate::controller::vector_collection::validate::validate;
    use crate::crd::ShardSetStatus;

    #[test]
    fn autoscaling_without_a_cpu_limit_is_warned_about_once_per_generation() {
        let mut v = vc();
        v.metadata.generation = Some(3);
        assert_eq!(autoscaling_warning(&v), None, "no autoscaling");
        v.spec.autoscaling = Some(
            serde_json::from_value(
                serde_json::json!({"minReplicas": 1, "maxReplicas": 4, "targetP95LatencyMs": 20}),
            )
            .unwrap(),
        );
        let (reason, message) = autoscaling_warning(&v).unwrap();
        assert_eq!(reason, "AutoscalingWithoutCpuLimit");
        assert!(
            message.contains("spec.resources.limits.cpu") && message.contains("between 1 and 4")
        );
        v.status = Some(VectorCollectionStatus {
            observed_generation: Some(3),
            ..Default::default()
        });
        assert_eq!(autoscaling_warning(&v), None, "this generation was seen");
        v.metadata.generation = Some(4);
        v.spec.resources =
            Some(serde_json::from_value(serde_json::json!({"limits": {"cpu": "2"}})).unwrap());
        assert_eq!(autoscaling_warning(&v), None, "a CPU limit");
    }

    fn hpa(name: &str, active: Option<(&str, &str)>) -> HorizontalPodAutoscaler {
        let conditions = active.map(|(status, reason)| {
            serde_json::json!([{"type": "ScalingActive", "status": status, "reason": reason,
                                "message": format!("{reason} details")}])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"kind": "ShardSet", "name": name}, "maxReplicas": 2},
            "status": {"desiredReplicas": 1, "conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn autoscaling_is_active_only_while_every_shard_hpa_gets_its_metric() {
        let mut v = vc();
        let ok = [
            hpa("docs-0", Some(("True", "ValidMetricFound"))),
            hpa("docs-1", Some(("True", "ValidMetricFound"))),
        ];
        assert!(
            autoscaling_condition(&v, &ok, &[], &now()).is_none(),
            "no autoscaling"
        );
        v.spec.autoscaling = Some(
            serde_json::from_value(
                serde_json::json!({"minReplicas": 1, "maxReplicas": 4, "targetP95LatencyMs": 20}),
            )
            .unwrap(),
        );
        let c = autoscaling_condition(&v, &ok, &[], &now()).unwrap();
        assert_eq!(
            (c.type_.as_str(), c.status.as_str()),
            ("AutoscalingActive", "True")
        );
        assert_eq!(c.reason, "MetricsAvailable");

        // One shard HPA without its metric (the router's HPA on CPU does not count).
        let broken = [
            hpa("docs-0", Some(("True", "ValidMetricFound"))),
            hpa("docs-1", Some(("False", "FailedGetPodsMetric"))),
            hpa("docs-router", Some(("False", "FailedGetResourceMetric"))),
        ];
        let c = autoscaling_condition(&v, &broken, &[], &now()).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "MetricsUnavailable")
        );
        assert!(
            c.message.contains("HPA docs-1: FailedGetPodsMetric")
                && !c.message.contains("docs-router")
                && c.message.contains("prometheus-adapter"),
            "{}",
            c.message
        );
        // Before any shard HPA reports, nothing is claimed.
        let fresh = [hpa("docs-0", None), hpa("docs-router", Some(("True", "x")))];
        assert!(autoscaling_condition(&v, &fresh, &[], &now()).is_none());
    }

    fn vc() -> VectorCollection {
        serde_yaml::from_str(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs, namespace: search, uid: u1, generation: 4}
spec: {dimension: 8, shards: 2, replicas: 2}
",
        )
        .unwrap()
    }

    fn sets(ready: [i32; 2]) -> Vec<ShardSet> {
        ready
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let valid = validate(&vc(), &[]).unwrap();
                let mut ss = build_shard_set(&valid, i as u32, 2).unwrap();
                ss.status = Some(ShardSetStatus {
                    ready_replicas: *r,
                    vectors: Some(100),
                    ..ShardSetStatus::default()
                });
                ss
            })
            .collect()
    }

    fn router(ready: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"readyReplicas": ready},
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    fn cond<'a>(
        s: &'a VectorCollectionStatus,
        t: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn every_replica_and_the_router_ready_make_the_collection_ready() {
        let s = collection_status(&vc(), &sets([2, 2]), Some(&router(2)), None, &now());
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!(s.ready.as_deref(), Some("4/4"));
        assert_eq!(s.vectors, Some(200));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "False");
    }

    #[test]
    fn missing_replicas_keep_it_progressing_and_a_dead_shard_degrades_it() {
        let s = collection_status(&vc(), &sets([2, 1]), Some(&router(2)), None, &now());
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
        assert_eq!(
            cond(&s, "Ready").message,
            "3/4 shard replicas ready; router 2/2 ready"
        );
        assert_eq!(cond(&s, "Degraded").status, "False");
        let s = collection_status(&vc(), &sets([2, 0]), Some(&router(2)), None, &now());
        assert_eq!(cond(&s, "Degraded").reason, "ShardUnavailable");
        assert!(cond(&s, "Degraded").message.contains("docs-1"));
        let s = collection_status(&vc(), &sets([2, 2]), Some(&router(0)), None, &now());
        assert_eq!(
            s.phase.as_deref(),
            Some("Progressing"),
            "no router, not ready"
        );
    }

    #[test]
    fn a_restored_collection_is_restoring_until_every_shard_is_ready_once() {
        let s3: crate::crd::S3Spec =
            serde_yaml::from_str("{bucket: backups, credentialsSecret: c}").unwrap();
        let restore = crate::crd::RestoreStatus {
            snapshot_id: "s1".into(),
            source_collection: "docs".into(),
            location: "s3://backups/docs/s1".into(),
            vectors: 200,
            shard_names: vec!["docs-0".into(), "docs-1".into()],
            partitions: Vec::new(),
            s3,
            completed_at: None,
        };
        let live = |ready: [i32; 2]| Live {
            shard_sets: sets(ready),
            router: Some(router(2)),
            restore: Some(restore.clone()),
            ..Live::default()
        };
        let s = next_status(&vc(), &live([2, 1]), None, &now());
        assert_eq!(s.phase.as_deref(), Some("Restoring"));
        assert_eq!(cond(&s, "Progressing").reason, "Restoring");
        assert!(cond(&s, "Progressing").message.contains("snapshot s1"));
        assert_eq!(s.restore.as_ref().unwrap().completed_at, None);
        let s = next_status(&vc(), &live([2, 2]), None, &now());
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        let done = s.restore.clone().unwrap().completed_at;
        assert!(done.is_some());
        // Once restored, a shard going down is an ordinary rollout, not a restore again.
        let mut after = vc();
        after.status = Some(s);
        let s = next_status(&after, &live([2, 1]), None, &now());
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
        assert_eq!(s.restore.unwrap().completed_at, done);
    }

    #[test]
    fn an_unbuildable_spec_is_degraded_with_the_reason_and_an_event() {
        let invalid = Invalid {
            field: "spec.storage.size".into(),
            message: "\"ten\" is not a Kubernetes quantity".into(),
        };
        let ready = collection_status(&vc(), &sets([2, 2]), Some(&router(2)), None, &now());
        let s = collection_status(
            &vc(),
            &sets([2, 2]),
            Some(&router(2)),
            Some(&invalid),
            &now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
        assert_eq!(cond(&s, "Degraded").reason, "InvalidSpec");
        assert!(cond(&s, "Degraded")
            .message
            .starts_with("spec.storage.size: "));
        assert_eq!(
            cond(&s, "Ready").status,
            "True",
            "the old spec still serves"
        );
        let (warning, reason, note) = transition_event(Some(&ready), &s).unwrap();
        assert!(warning);
        assert_eq!(reason, "Degraded");
        assert!(note.contains("spec.storage.size"));
        assert_eq!(
            transition_event(Some(&s), &s),
            None,
            "no event without a change"
        );
        let (warning, reason, _) = transition_event(Some(&s), &ready).unwrap();
        assert!(!warning);
        assert_eq!(reason, "Ready");
    }

    /// The strings are API: `kubectl get vc` shows them and users' scripts wait for them.
    #[test]
    fn phases_keep_their_api_strings() {
        let phases: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            phases,
            [
                "Progressing",
                "Ready",
                "Degraded",
                "Rebalancing",
                "Restoring"
            ]
        );
    }

    #[test]
    fn the_status_publishes_the_applied_map_version_and_keeps_the_last_one_otherwise() {
        let mut before = vc();
        before.status = Some(VectorCollectionStatus {
            shard_map_version: Some(3),
            ..VectorCollectionStatus::default()
        });
        let mut live = Live {
            shard_sets: sets([2, 2]),
            router: Some(router(2)),
            shard_map_version: None,
            ..Live::default()
        };
        let kept = next_status(&before, &live, None, &now());
        assert_eq!(kept.shard_map_version, Some(3));
        live.shard_map_version = Some(4);
        assert_eq!(
            next_status(&before, &live, None, &now()).shard_map_version,
            Some(4)
        );
    }

    #[test]
    fn an_applied_shard_set_without_a_status_keeps_the_observed_one() {
        let observed = sets([2, 1]).remove(1);
        let mut applied = observed.clone();
        applied.status = None;
        let kept = keep_observed_status(applied.clone(), Some(&observed));
        assert_eq!(kept.status, observed.status);
        let mut fresher = applied;
        fresher.status = Some(ShardSetStatus::default());
        assert_eq!(
            keep_observed_status(fresher, Some(&observed)).status,
            Some(ShardSetStatus::default()),
            "the apply response's own status wins"
        );
    }
}
