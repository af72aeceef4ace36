//! The recorded progress of a rebalance and the shard map each step publishes. Pure: the
//! transforms are idempotent (applying one to a map it was already applied to changes
//! nothing), so a coordinator that crashed between publishing a map and recording the next
//! step simply runs the step again.

use serde::{Deserialize, Serialize};
use vecshard_proto::shard_map::{MovePhase, PartitionMove, ShardAssignment, ShardMap};

use crate::plan::{owned_by_shard, plan_moves, Batch};

/// Where a batch is. Recorded before the step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    DualWrite,
    Backfill,
    Verify,
    ReadsSwitch,
    WritesSwitch,
    /// Every batch moved.
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::DualWrite => "DualWrite",
            Step::Backfill => "Backfill",
            Step::Verify => "Verify",
            Step::ReadsSwitch => "ReadsSwitch",
            Step::WritesSwitch => "WritesSwitch",
            Step::Done => "Done",
        }
    }

    /// Before reads switch, a batch can be abandoned (its receiver drops the copies); after,
    /// it must complete.
    pub fn can_abort(self) -> bool {
        matches!(self, Step::DualWrite | Step::Backfill | Step::Verify)
    }
}

/// A rebalance in progress: the plan, where it is, and what it moved so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub from_shards: u32,
    pub to_shards: u32,
    /// The shards the collection ends with (name and replica addresses), in order.
    pub target: Vec<ShardAssignment>,
    pub batches: Vec<Batch>,
    /// Index of the batch in progress (`batches.len()` when done).
    pub batch: usize,
    pub step: Step,
    /// Version of the last shard map published by a step.
    pub map_version: u64,
    pub started_unix_ms: u64,
    pub points_moved: u64,
    pub bytes_moved: u64,
}

impl Progress {
    /// A plan from `map` to `target` (the shards the collection should end with).
    pub fn start(
        map: &ShardMap,
        target: Vec<ShardAssignment>,
        batch_size: usize,
        now_unix_ms: u64,
    ) -> Progress {
        let names: Vec<String> = target.iter().map(|s| s.name.clone()).collect();
        let batches = plan_moves(map, &names, batch_size);
        Progress {
            from_shards: map.shards.len() as u32,
            to_shards: target.len() as u32,
            step: if batches.is_empty() {
                Step::Done
            } else {
                Step::DualWrite
            },
            target,
            batches,
            batch: 0,
            map_version: map.version,
            started_unix_ms: now_unix_ms,
            points_moved: 0,
            bytes_moved: 0,
        }
    }

    pub fn current(&self) -> Option<&Batch> {
        self.batches.get(self.batch)
    }

    /// The step after the current one.
    pub fn advanced(mut self) -> Progress {
        self.step = match self.step {
            Step::DualWrite => Step::Backfill,
            Step::Backfill => Step::Verify,
            Step::Verify => Step::ReadsSwitch,
            Step::ReadsSwitch => Step::WritesSwitch,
            Step::WritesSwitch => {
                self.batch += 1;
                if self.batch < self.batches.len() {
                    Step::DualWrite
                } else {
                    Step::Done
                }
            }
            Step::Done => Step::Done,
        };
        self
    }

    /// "batch 2 of 5, ReadsSwitch": for status and events.
    pub fn describe(&self) -> String {
        match self.step {
            Step::Done => format!("{} batches done", self.batches.len()),
            step => format!(
                "batch {} of {}, {}",
                self.batch + 1,
                self.batches.len(),
                step.as_str()
            ),
        }
    }
}

/// The map a map-changing step publishes, from the map published now (`None`: the step
/// changes no map). The version goes up by one when the content changes.
pub fn map_for_step(published: &ShardMap, progress: &Progress) -> Option<ShardMap> {
    let batch = progress.current()?;
    let mut next = published.clone();
    match progress.step {
        Step::DualWrite => start_move(&mut next, batch, &progress.target),
        Step::ReadsSwitch => switch_reads(&mut next, batch),
        Step::WritesSwitch => finish_move(&mut next, batch, &progress.target),
        Step::Backfill | Step::Verify | Step::Done => return None,
    }
    Some(bump(published, next))
}

/// The map after abandoning the current batch (allowed before reads switched): the move is
/// removed, and a receiving shard that owns nothing and is not in `keep` leaves the map.
pub fn map_for_abort(published: &ShardMap, batch: &Batch, keep: &[String]) -> ShardMap {
    let mut next = published.clone();
    next.moves.retain(|m| m.partitions != batch.partitions);
    drop_idle_shards(&mut next, keep);
    bump(published, next)
}

fn bump(published: &ShardMap, mut next: ShardMap) -> ShardMap {
    next.version = published.version;
    if next != *published {
        next.version = published.version + 1;
    }
    next
}

fn start_move(map: &mut ShardMap, batch: &Batch, target: &[ShardAssignment]) {
    if map.shard(&batch.to).is_none() {
        let mut added = target
            .iter()
            .find(|s| s.name == batch.to)
            .cloned()
            .expect("the receiving shard is in the target");
        added.partitions.clear();
        map.shards.push(added);
        map.shards.sort_by_key(|s| shard_ordinal(&s.name));
    }
    let already = map.moves.iter().any(|m| m.partitions == batch.partitions)
        || owner_of(map, batch.partitions[0]) == Some(batch.to.as_str());
    if !already {
        map.moves.push(PartitionMove {
            partitions: batch.partitions.clone(),
            from: batch.from.clone(),
            to: batch.to.clone(),
            phase: MovePhase::DualWrite,
        });
    }
}

fn switch_reads(map: &mut ShardMap, batch: &Batch) {
    let mut owned = owned_by_shard(map);
    if let Some(from) = owned.get_mut(&batch.from) {
        from.retain(|p| !batch.partitions.contains(p));
    }
    let to = owned.entry(batch.to.clone()).or_default();
    to.extend(&batch.partitions);
    to.sort_unstable();
    to.dedup();
    for shard in &mut map.shards {
        if let Some(list) = owned.get(&shard.name) {
            shard.partitions = ShardMap::ranges(list);
        }
    }
    for m in &mut map.moves {
        if m.partitions == batch.partitions {
            m.phase = MovePhase::ReadsSwitched;
        }
    }
}

fn finish_move(map: &mut ShardMap, batch: &Batch, target: &[ShardAssignment]) {
    map.moves.retain(|m| m.partitions != batch.partitions);
    let keep: Vec<String> = target.iter().map(|s| s.name.clone()).collect();
    drop_idle_shards(map, &keep);
}

/// Shards that own nothing, take part in no move and are not in `keep` leave the map.
fn drop_idle_shards(map: &mut ShardMap, keep: &[String]) {
    let moving: Vec<String> = map
        .moves
        .iter()
        .flat_map(|m| [m.from.clone(), m.to.clone()])
        .collect();
    map.shards
        .retain(|s| !s.partitions.is_empty() || keep.contains(&s.name) || moving.contains(&s.name));
}

fn owner_of(map: &ShardMap, partition: u32) -> Option<&str> {
    map.shards
        .iter()
        .find(|s| {
            s.partitions
                .iter()
                .any(|r| (r.start..=r.end).contains(&partition))
        })
        .map(|s| s.name.as_str())
}

/// `docs-12` → 12, so shards stay in ordinal order in the map.
fn shard_ordinal(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(n: usize) -> Vec<ShardAssignment> {
        (0..n)
            .map(|i| ShardAssignment {
                name: format!("docs-{i}"),
                partitions: Vec::new(),
                replicas: vec![format!("http://r{i}")],
                joining: Vec::new(),
            })
            .collect()
    }

    fn even(shards: usize) -> ShardMap {
        ShardMap::even(
            "docs",
            16,
            (0..shards).map(|i| vec![format!("http://r{i}")]).collect(),
        )
    }

    /// Runs every step's map transform in order, checking each map and that every transform
    /// is idempotent.
    fn run(mut map: ShardMap, mut progress: Progress) -> ShardMap {
        while progress.step != Step::Done {
            if let Some(next) = map_for_step(&map, &progress) {
                next.validate().unwrap();
                let again = map_for_step(&next, &progress).unwrap();
                assert_eq!(again, next, "step {:?} is idempotent", progress.step);
                map = next;
            }
            progress = progress.advanced();
        }
        map
    }

    #[test]
    fn scaling_out_and_back_in_ends_on_balanced_maps_without_moves() {
        let start = even(2);
        let out = run(start.clone(), Progress::start(&start, target(3), 4, 0));
        assert_eq!(out.shards.len(), 3);
        assert!(out.moves.is_empty());
        let owners = out.owners();
        let counts: Vec<usize> = (0..3)
            .map(|s| owners.iter().filter(|o| **o == s).count())
            .collect();
        assert_eq!(counts, vec![6, 5, 5]);
        // Two batches (2 and 3 partitions), three map changes each.
        assert_eq!(out.version, start.version + 6);
        let back = run(out.clone(), Progress::start(&out, target(2), 4, 0));
        assert_eq!(back.shards.len(), 2, "docs-2 leaves the map once empty");
        assert_eq!(
            back.shards[0].partitions.len() + back.shards[1].partitions.len(),
            2
        );
    }

    #[test]
    fn each_step_publishes_what_routers_need() {
        let start = even(2);
        let progress = Progress::start(&start, target(3), 16, 0);
        let dual = map_for_step(&start, &progress).unwrap();
        assert_eq!(
            dual.shards.len(),
            3,
            "the receiver joins the map owning nothing"
        );
        assert!(dual.shards[2].partitions.is_empty());
        assert_eq!(dual.moves[0].phase, MovePhase::DualWrite);
        let batch = progress.current().unwrap().clone();
        assert_eq!(dual.second_writers()[batch.partitions[0] as usize], Some(2));
        let progress = progress.advanced().advanced().advanced();
        assert_eq!(progress.step, Step::ReadsSwitch);
        let switched = map_for_step(&dual, &progress).unwrap();
        assert_eq!(switched.owners()[batch.partitions[0] as usize], 2);
        assert_eq!(switched.moves[0].phase, MovePhase::ReadsSwitched);
        // Abandoning before reads switch: the receiver leaves the map again.
        let aborted = map_for_abort(&dual, &batch, &["docs-0".into(), "docs-1".into()]);
        assert_eq!(aborted.shards.len(), 2);
        assert!(aborted.moves.is_empty());
        aborted.validate().unwrap();
        assert!(Step::Verify.can_abort() && !Step::ReadsSwitch.can_abort());
    }
}
