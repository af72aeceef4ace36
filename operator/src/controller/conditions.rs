//! Status conditions in the Kubernetes convention: `lastTransitionTime` changes only when the
//! status flips, so users can see how long something has been true. The condition types and
//! reasons both controllers write are the enums below (docs/crd-reference.md lists them). Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

api_strings! {
    /// The condition types of both kinds: every status carries all three.
    pub enum ConditionType {
        Ready => "Ready",
        Progressing => "Progressing",
        Degraded => "Degraded",
        /// Collection: partitions are moving between shards (a `spec.shards` change).
        Rebalancing => "Rebalancing",
        /// Collection: whether its newest finished snapshot succeeded.
        SnapshotSucceeded => "SnapshotSucceeded",
        /// Collection with `spec.autoscaling`: whether every shard HPA gets its metric.
        AutoscalingActive => "AutoscalingActive",
    }
}

api_strings! {
    /// Every condition reason the controllers write (one vocabulary: the two kinds share
    /// several reasons, and users filter on them across kinds).
    pub enum Reason {
        /// Ready: every replica (and, for a collection, the router) is ready.
        AllReplicasReady => "AllReplicasReady",
        /// Ready false: replicas are starting, rolling or missing.
        WaitingForReplicas => "WaitingForReplicas",
        /// Collection Ready while its new spec was refused: the old workloads serve.
        PreviousSpecServing => "PreviousSpecServing",
        /// Collection: the spec was refused (validate.rs); the workloads were left as they were.
        InvalidSpec => "InvalidSpec",
        /// Progressing false: everything matches the spec.
        Reconciled => "Reconciled",
        /// Collection Progressing: shards or router not all ready yet.
        RollingOut => "RollingOut",
        /// ShardSet Progressing: replicas being added or removed.
        Scaling => "Scaling",
        /// ShardSet Progressing: the StatefulSet rolls out a new revision.
        RollingUpdate => "RollingUpdate",
        /// Degraded false.
        Healthy => "Healthy",
        /// Collection Degraded: some shard has no ready replica.
        ShardUnavailable => "ShardUnavailable",
        /// ShardSet Degraded: none of its replicas is ready.
        NoReadyReplica => "NoReadyReplica",
        /// Rebalancing false: the partitions are balanced over `spec.shards`.
        Balanced => "Balanced",
        /// Rebalancing: new shards are starting; nothing moves until they are Ready.
        WaitingForShards => "WaitingForShards",
        /// Rebalancing: writes of the moving partitions go to both shards.
        DualWrite => "DualWrite",
        /// Rebalancing: the receiving shard copies the moving partitions.
        Backfill => "Backfill",
        /// Rebalancing: counts and checksums of the moving partitions are compared.
        Verify => "Verify",
        /// Rebalancing: reads of the moving partitions switch to the receiving shard.
        ReadsSwitch => "ReadsSwitch",
        /// Rebalancing: writes switch too and the giving shard drops the partitions.
        WritesSwitch => "WritesSwitch",
        /// SnapshotSucceeded: the newest finished snapshot succeeded.
        SnapshotSucceeded => "SnapshotSucceeded",
        /// SnapshotSucceeded false: the newest finished snapshot failed (message: why).
        SnapshotFailed => "SnapshotFailed",
        /// AutoscalingActive: every shard HPA computes its replicas from the latency metric.
        MetricsAvailable => "MetricsAvailable",
        /// AutoscalingActive false: some shard HPA cannot read the metric (message: which and
        /// why); its replicas stay as they are.
        MetricsUnavailable => "MetricsUnavailable",
        /// Collection Progressing: shard pods fill their volumes from the snapshot.
        Restoring => "Restoring",
    }
}

/// A condition of `type_`, keeping the previous transition time when its status is unchanged.
pub fn condition(
    type_: ConditionType,
    status: bool,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_`, if present and true.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_.as_str() && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let ready = ConditionType::Ready;
        let waiting = Reason::WaitingForReplicas;
        let first = condition(ready, false, waiting, "0/2", Some(1), &[], &at(100));
        let same = condition(
            ready,
            false,
            waiting,
            "1/2",
            Some(1),
            std::slice::from_ref(&first),
            &at(200),
        );
        assert_eq!(same.last_transition_time, at(100));
        assert_eq!(same.message, "1/2");
        let flipped = condition(
            ready,
            true,
            Reason::AllReplicasReady,
            "2/2",
            Some(1),
            &[same],
            &at(300),
        );
        assert_eq!(flipped.last_transition_time, at(300));
        assert!(is_true(&[flipped], ConditionType::Ready));
    }

    /// The strings are API: users' alerts and `kubectl wait --for=condition=…` match them.
    #[test]
    fn condition_types_and_reasons_keep_their_api_strings() {
        let types: Vec<&str> = ConditionType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "Progressing",
                "Degraded",
                "Rebalancing",
                "SnapshotSucceeded",
                "AutoscalingActive"
            ]
        );
        let reasons: Vec<String> = Reason::ALL.iter().map(Reason::to_string).collect();
        assert_eq!(
            reasons,
            [
                "AllReplicasReady",
                "WaitingForReplicas",
                "PreviousSpecServing",
                "InvalidSpec",
                "Reconciled",
                "RollingOut",
                "Scaling",
                "RollingUpdate",
                "Healthy",
                "ShardUnavailable",
                "NoReadyReplica",
                "Balanced",
                "WaitingForShards",
                "DualWrite",
                "Backfill",
                "Verify",
                "ReadsSwitch",
                "WritesSwitch",
                "SnapshotSucceeded",
                "SnapshotFailed",
                "MetricsAvailable",
                "MetricsUnavailable",
                "Restoring",
            ]
        );
    }
}
