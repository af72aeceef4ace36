//! The operator's Prometheus metrics (names from DESIGN.md), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: Family<ControllerLabel, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Rebalancing: partitions whose move completed, bytes copied, and each step's duration.
    pub rebalance_partitions_moved: Counter,
    pub rebalance_bytes_moved: Counter,
    pub rebalance_step_duration: Family<StepLabel, Histogram>,
    /// Snapshots: unix time of each collection's last success, durations, failures.
    pub snapshot_last_success: Family<CollectionLabel, Gauge>,
    pub snapshot_duration: Family<CollectionLabel, Histogram>,
    pub snapshot_failures: Family<CollectionLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectionLabel {
    pub namespace: String,
    pub collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconcile_duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "vecshard_operator_reconcile_duration_seconds",
            "Time of one reconcile, by controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "vecshard_operator_reconcile_errors",
            "Reconciles that failed, by controller and reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "vecshard_operator_leader",
            "1 while this operator replica holds the leader Lease",
            leader.clone(),
        );
        let rebalance_partitions_moved = Counter::default();
        let rebalance_bytes_moved = Counter::default();
        let rebalance_step_duration = Family::<StepLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register(
            "vecshard_operator_rebalance_partitions_moved",
            "Partitions whose move between shards completed",
            rebalance_partitions_moved.clone(),
        );
        registry.register(
            "vecshard_operator_rebalance_bytes_moved",
            "Vector and payload bytes copied to receiving shards while rebalancing",
            rebalance_bytes_moved.clone(),
        );
        registry.register(
            "vecshard_operator_rebalance_step_duration_seconds",
            "Time of one rebalancing step, by step",
            rebalance_step_duration.clone(),
        );
        let snapshot_last_success = Family::<CollectionLabel, Gauge>::default();
        let snapshot_duration = Family::<CollectionLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.5, 2.0, 14))
        });
        let snapshot_failures = Family::<CollectionLabel, Counter>::default();
        registry.register(
            "vecshard_snapshot_last_success_timestamp_seconds",
            "Unix time of the collection's last succeeded snapshot",
            snapshot_last_success.clone(),
        );
        registry.register(
            "vecshard_operator_snapshot_duration_seconds",
            "Time of a succeeded snapshot of a whole collection",
            snapshot_duration.clone(),
        );
        registry.register(
            "vecshard_operator_snapshot_failures",
            "Snapshots that failed",
            snapshot_failures.clone(),
        );
        Metrics {
            snapshot_last_success,
            snapshot_duration,
            snapshot_failures,
            registry,
            reconcile_duration,
            reconcile_errors,
            leader,
            rebalance_partitions_moved,
            rebalance_bytes_moved,
            rebalance_step_duration,
        }
    }
}

impl Metrics {
    pub fn observe(&self, controller: &str, seconds: f64) {
        self.reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .observe(seconds);
    }

    pub fn error(&self, controller: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// A rebalancing step finished: its duration and the bytes it copied.
    pub fn rebalance_step(&self, step: &str, seconds: f64, bytes: u64) {
        self.rebalance_step_duration
            .get_or_create(&StepLabel { step: step.into() })
            .observe(seconds);
        self.rebalance_bytes_moved.inc_by(bytes);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encodes");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_metrics_carry_the_design_names() {
        let m = Metrics::default();
        m.observe("vectorcollection", 0.02);
        m.error("shardset", "apply");
        let text = m.encode();
        assert!(
            text.contains("vecshard_operator_reconcile_duration_seconds_bucket{le="),
            "{text}"
        );
        assert!(text.contains(
            "vecshard_operator_reconcile_errors_total{controller=\"shardset\",reason=\"apply\"} 1"
        ), "{text}");
    }
}
