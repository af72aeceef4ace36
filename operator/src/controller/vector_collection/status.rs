//! The collection's status from what is live: its ShardSets and router Deployment, and whether
//! the spec could be built. Pure; the caller writes it and publishes the Event.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::validate::Invalid;
use crate::controller::conditions::condition;
use crate::crd::{ShardSet, ShardStatus, VectorCollection, VectorCollectionStatus};

pub const PHASE_READY: &str = "Ready";
pub const PHASE_PROGRESSING: &str = "Progressing";
pub const PHASE_DEGRADED: &str = "Degraded";

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
    let shards_ready = shards.len() == vc.spec.shards as usize
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
    let (phase, ready_c, progressing_c, degraded_c) = match invalid {
        Some(why) => (
            PHASE_DEGRADED,
            (
                all_ready,
                if all_ready {
                    "PreviousSpecServing"
                } else {
                    "InvalidSpec"
                },
                progress.clone(),
            ),
            (false, "InvalidSpec", format!("not applied: {why}")),
            (
                true,
                "InvalidSpec",
                format!("{why}; the running workloads were left unchanged"),
            ),
        ),
        None if all_ready => (
            PHASE_READY,
            (true, "AllReplicasReady", progress.clone()),
            (
                false,
                "Reconciled",
                "every shard and the router match the spec".to_string(),
            ),
            (false, "Healthy", "all replicas ready".to_string()),
        ),
        None => (
            PHASE_PROGRESSING,
            (false, "WaitingForReplicas", progress.clone()),
            (true, "RollingOut", progress.clone()),
            match shard_down {
                Some(s) => (
                    true,
                    "ShardUnavailable",
                    format!("shard {} has no ready replica", s.name),
                ),
                None => (false, "Healthy", "no shard is unavailable".to_string()),
            },
        ),
    };
    let c = |t: &str, (status, reason, message): (bool, &str, String)| {
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
            c("Ready", ready_c),
            c("Progressing", progressing_c),
            c("Degraded", degraded_c),
        ],
        ready: Some(format!("{ready}/{desired}")),
        vectors: shards.iter().map(|s| s.vectors).sum(),
        shards,
        last_snapshots: previous.last_snapshots,
        shard_map_version: previous.shard_map_version,
    }
}

/// The Event to publish for a status change: `(warning, reason, note)`, or `None` when the
/// phase and the Degraded message stayed the same.
pub fn transition_event(
    before: Option<&VectorCollectionStatus>,
    after: &VectorCollectionStatus,
) -> Option<(bool, String, String)> {
    let degraded = |s: &VectorCollectionStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| c.message.clone())
    };
    let phase_before = before.and_then(|s| s.phase.clone());
    if phase_before == after.phase && before.and_then(degraded) == degraded(after) {
        return None;
    }
    let phase = after.phase.clone().unwrap_or_default();
    let ready = after.conditions.iter().find(|c| c.type_ == "Ready");
    match degraded(after) {
        Some(message) => Some((true, phase, message)),
        None => Some((
            false,
            phase,
            ready.map(|c| c.message.clone()).unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::vector_collection::build::build_shard_set;
    use crate::crd::ShardSetStatus;

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
                let mut ss = build_shard_set(&vc(), i as u32, 2).unwrap();
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
}
