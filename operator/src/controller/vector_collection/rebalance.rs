//! Changing a collection's shard count: the decisions (pure) and the one step a reconcile runs
//! (I/O through `vecshard-rebalance`: the shards' internal gRPC API and the shard-map
//! ConfigMap). The plan and its position live in `status.rebalance.record`, written after
//! each step, so the step an operator was in when it stopped is the one the next runs again
//! (every step is idempotent).

use kube::ResourceExt;
use vecshard_proto::shard_map::{ShardAssignment, ShardMap};
use vecshard_rebalance::exec::StepReport;
use vecshard_rebalance::{MapStore, Progress, Shards, Step};

use super::build::{build_shard_map_config_map, read_shard_map};
use super::validated::ValidatedCollection;
use crate::controller::apply::{apply, get_opt};
use crate::controller::conditions::Reason;
use crate::crd::{RebalanceStatus, ShardSet, VectorCollection};
use crate::names;

api_strings! {
    /// Event reasons of a shard-count change.
    pub enum RebalanceEvent {
        /// A plan was made: from → to shards, partitions and batches.
        RebalanceStarted => "RebalanceStarted",
        /// A batch of partitions finished moving.
        RebalanceBatchMoved => "RebalanceBatchMoved",
        /// Every batch moved: the partitions are balanced over spec.shards.
        Rebalanced => "Rebalanced",
        /// The target changed before the batch's reads switched: the batch was abandoned.
        RebalanceAbandoned => "RebalanceAbandoned",
        /// A step failed; it is retried.
        RebalanceStepFailed => "RebalanceStepFailed",
    }
}

/// The Event (reason, note) for a step that went from `before` to `after`, if it is one
/// users should see: a plan made, a batch moved, the change complete or abandoned.
pub fn event_for(
    before: Option<&Progress>,
    after: Option<&Progress>,
    report: &StepReport,
) -> Option<(RebalanceEvent, String)> {
    match (before, after) {
        (None, Some(plan)) => Some((
            RebalanceEvent::RebalanceStarted,
            format!(
                "{} → {} shards: {} partitions to move in {} batches",
                plan.from_shards,
                plan.to_shards,
                plan.batches.iter().map(|b| b.partitions.len()).sum::<usize>(),
                plan.batches.len()
            ),
        )),
        (Some(p), next) if finished_batch(p, next) => {
            let b = p.current()?;
            let done = next.is_none_or(|n| n.step == Step::Done);
            Some((
                if done {
                    RebalanceEvent::Rebalanced
                } else {
                    RebalanceEvent::RebalanceBatchMoved
                },
                format!(
                    "batch {} of {}: partitions {:?} moved from {} to {} ({} points copied in all, shard map version {})",
                    p.batch + 1,
                    p.batches.len(),
                    b.partitions,
                    b.from,
                    b.to,
                    p.points_moved,
                    report.published.unwrap_or(p.map_version)
                ),
            ))
        }
        (Some(p), None) if p.step.can_abort() => Some((
            RebalanceEvent::RebalanceAbandoned,
            format!(
                "spec.shards changed during batch {} of {} ({} → {} shards); its partitions stay on {}",
                p.batch + 1,
                p.batches.len(),
                p.from_shards,
                p.to_shards,
                p.current().map_or("", |b| b.from.as_str())
            ),
        )),
        _ => None,
    }
}

/// Partitions moved together in one batch: a sixteenth of the collection's (at least one), so
/// a change moves in several batches, each a short dual-write window.
pub fn batch_partitions(partitions: u32) -> usize {
    (partitions as usize / 16).max(1)
}

/// The recorded progress, if a change is in progress.
pub fn recorded(vc: &VectorCollection) -> Option<Progress> {
    let record = &vc.status.as_ref()?.rebalance.as_ref()?.record;
    serde_json::from_str(record).ok()
}

/// The shards the collection should end with: `<name>-0` … `<name>-(shards-1)`, with the
/// stable DNS names of their ShardSets' replicas.
pub fn target(vc: &ValidatedCollection, shard_sets: &[ShardSet]) -> Vec<ShardAssignment> {
    (0..vc.shards)
        .map(|ordinal| {
            let name = names::shard_set_name(&vc.name, ordinal);
            let replicas = shard_sets
                .iter()
                .find(|ss| ss.spec.shard == ordinal)
                .map_or(vc.replicas as i32, |ss| ss.spec.replicas);
            ShardAssignment {
                replicas: names::replica_addresses(&name, &vc.namespace, replicas),
                name,
                partitions: Vec::new(),
                joining: Vec::new(),
            }
        })
        .collect()
}

/// A change is needed when one is recorded, or the map's shards are not the target's.
pub fn needed(
    map: Option<&ShardMap>,
    progress: Option<&Progress>,
    target: &[ShardAssignment],
) -> bool {
    if progress.is_some() {
        return true;
    }
    let Some(map) = map else { return false };
    let in_map: Vec<&str> = map.shards.iter().map(|s| s.name.as_str()).collect();
    let wanted: Vec<&str> = target.iter().map(|s| s.name.as_str()).collect();
    in_map != wanted || !map.moves.is_empty()
}

/// Every ShardSet the change touches (the target's and those still in the map) has all its
/// replicas ready: partitions only move between shards that can take them.
pub fn shards_ready(shard_sets: &[ShardSet], names_needed: &[String]) -> bool {
    names_needed.iter().all(|name| {
        shard_sets.iter().any(|ss| {
            &ss.name_any() == name
                && ss.spec.replicas > 0
                && ss
                    .status
                    .as_ref()
                    .is_some_and(|s| s.ready_replicas >= ss.spec.replicas)
        })
    })
}

/// The status of a change: from the progress recorded after this reconcile's step.
pub fn status_of(
    progress: &Progress,
    previous: Option<&RebalanceStatus>,
    waiting: bool,
    last_error: String,
    now_rfc3339: &str,
) -> RebalanceStatus {
    let batch = progress.current();
    let step = if waiting {
        Reason::WaitingForShards.as_str().to_string()
    } else {
        progress.step.as_str().to_string()
    };
    RebalanceStatus {
        summary: format!(
            "{}→{} batch {}/{} {step}",
            progress.from_shards,
            progress.to_shards,
            (progress.batch + 1).min(progress.batches.len()),
            progress.batches.len()
        ),
        from_shards: progress.from_shards,
        to_shards: progress.to_shards,
        batch: (progress.batch + 1).min(progress.batches.len()) as u32,
        batches: progress.batches.len() as u32,
        step,
        moving_partitions: batch.map(|b| b.partitions.clone()).unwrap_or_default(),
        moving_from: batch.map(|b| b.from.clone()).unwrap_or_default(),
        moving_to: batch.map(|b| b.to.clone()).unwrap_or_default(),
        map_version: progress.map_version,
        started_at: previous
            .map(|p| p.started_at.clone())
            .unwrap_or_else(|| now_rfc3339.to_string()),
        points_moved: progress.points_moved,
        bytes_moved: progress.bytes_moved,
        last_error,
        record: serde_json::to_string(progress).expect("serializes"),
    }
}

/// The condition reason of a recorded step.
pub fn reason_of(status: &RebalanceStatus) -> Reason {
    match status.step.as_str() {
        "DualWrite" => Reason::DualWrite,
        "Backfill" => Reason::Backfill,
        "Verify" => Reason::Verify,
        "ReadsSwitch" => Reason::ReadsSwitch,
        "WritesSwitch" => Reason::WritesSwitch,
        _ => Reason::WaitingForShards,
    }
}

/// Shard names that must stay (as ShardSets) while `progress` runs: its target and every shard
/// it moves partitions from or to.
pub fn shards_in_use(progress: Option<&Progress>, map: Option<&ShardMap>) -> Vec<String> {
    let mut out: Vec<String> = map
        .map(|m| m.shards.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default();
    if let Some(p) = progress {
        out.extend(p.target.iter().map(|s| s.name.clone()));
        for b in &p.batches[p.batch.min(p.batches.len())..] {
            out.push(b.from.clone());
            out.push(b.to.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Shards whose autoscaler is paused: the one giving partitions away in the batch in progress
/// (an HPA removing its pods mid-copy would fight the move) and shards leaving the collection.
pub fn paused_autoscaling(progress: Option<&Progress>, map: Option<&ShardMap>) -> Vec<String> {
    let Some(p) = progress else {
        return Vec::new();
    };
    let target: Vec<&str> = p.target.iter().map(|s| s.name.as_str()).collect();
    let mut out: Vec<String> = p
        .current()
        .map(|b| vec![b.from.clone()])
        .unwrap_or_default();
    out.extend(
        map.into_iter()
            .flat_map(|m| &m.shards)
            .filter(|s| !target.contains(&s.name.as_str()))
            .map(|s| s.name.clone()),
    );
    out
}

/// The collection's shard map as the operator stores it: a ConfigMap, written with the same
/// server-side apply as every other child.
pub struct ConfigMapStore<'a> {
    pub client: &'a kube::Client,
    pub vc: &'a ValidatedCollection,
}

impl MapStore for ConfigMapStore<'_> {
    async fn read(&self) -> anyhow::Result<ShardMap> {
        let name = names::shard_map_name(&self.vc.name);
        let cm = get_opt::<k8s_openapi::api::core::v1::ConfigMap>(
            self.client,
            &self.vc.namespace,
            &name,
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("ConfigMap {name} does not exist"))?;
        read_shard_map(&cm)
            .ok_or_else(|| anyhow::anyhow!("ConfigMap {name} holds no valid shard map"))
    }

    async fn publish(&self, map: &ShardMap) -> anyhow::Result<()> {
        apply(self.client, &build_shard_map_config_map(self.vc, map)?).await?;
        Ok(())
    }
}

/// Runs one step toward the target; `Ok(None)` when the change is complete.
pub async fn step(
    client: &kube::Client,
    vc: &ValidatedCollection,
    progress: Option<Progress>,
    target: &[ShardAssignment],
) -> anyhow::Result<(Option<Progress>, StepReport)> {
    let store = ConfigMapStore { client, vc };
    let runner = Shards::new(&vc.name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    runner
        .step_toward(
            &store,
            progress,
            target,
            batch_partitions(vc.partitions),
            now,
        )
        .await
}

/// True when `progress` has just finished a batch (its recorded step went back to DualWrite
/// of the next batch, or to Done).
pub fn finished_batch(before: &Progress, after: Option<&Progress>) -> bool {
    before.step == Step::WritesSwitch && after.is_none_or(|a| a.batch > before.batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(shards: usize) -> ShardMap {
        ShardMap::even(
            "docs",
            16,
            (0..shards).map(|i| vec![format!("http://r{i}")]).collect(),
        )
    }

    fn assignments(n: usize) -> Vec<ShardAssignment> {
        (0..n)
            .map(|i| ShardAssignment {
                name: format!("docs-{i}"),
                partitions: vec![],
                replicas: vec![format!("http://r{i}")],
                joining: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_change_is_needed_when_the_map_and_the_target_differ_or_one_is_recorded() {
        assert!(!needed(Some(&map(2)), None, &assignments(2)));
        assert!(needed(Some(&map(2)), None, &assignments(3)));
        assert!(needed(Some(&map(3)), None, &assignments(2)));
        assert!(
            !needed(None, None, &assignments(3)),
            "a new collection has nothing to move"
        );
        let p = Progress::start(&map(2), assignments(3), 8, 0);
        assert!(needed(Some(&map(2)), Some(&p), &assignments(2)));
    }

    #[test]
    fn the_status_names_the_batch_and_step_and_keeps_the_start_time() {
        let p = Progress::start(&map(2), assignments(3), 2, 0);
        let s = status_of(&p, None, false, String::new(), "2026-12-05T10:00:00Z");
        assert_eq!(s.summary, "2→3 batch 1/3 DualWrite");
        assert_eq!(s.moving_to, "docs-2");
        assert_eq!(reason_of(&s), Reason::DualWrite);
        let back: Progress = serde_json::from_str(&s.record).unwrap();
        assert_eq!(back, p);
        let later = status_of(
            &p.clone().advanced(),
            Some(&s),
            false,
            String::new(),
            "later",
        );
        assert_eq!(later.started_at, "2026-12-05T10:00:00Z");
        assert_eq!(later.step, "Backfill");
        let waiting = status_of(&p, None, true, String::new(), "now");
        assert_eq!(reason_of(&waiting), Reason::WaitingForShards);
    }

    #[test]
    fn the_giving_shard_and_leaving_shards_have_their_autoscaler_paused() {
        let p = Progress::start(&map(3), assignments(2), 8, 0);
        let paused = paused_autoscaling(Some(&p), Some(&map(3)));
        assert_eq!(paused, vec!["docs-2".to_string(), "docs-2".to_string()]);
        assert!(paused_autoscaling(None, Some(&map(3))).is_empty());
        assert_eq!(
            shards_in_use(Some(&p), Some(&map(3))),
            vec!["docs-0", "docs-1", "docs-2"]
        );
    }
}
