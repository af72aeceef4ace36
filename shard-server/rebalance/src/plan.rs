//! The rebalancing planner: from the current shard map and the shards the collection should
//! end with, the partition moves, as few as possible, in batches of at most `batch_size`
//! partitions from one shard to one other. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vecshard_proto::shard_map::ShardMap;

/// Partitions moving together from one shard to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub partitions: Vec<u32>,
    pub from: String,
    pub to: String,
}

/// How many partitions each of `target` shards should own at the end: `partitions / n`, one
/// more for the `partitions % n` shards that own the most now (ties: the first), so that as
/// many partitions as possible stay where they are.
pub fn quotas(map: &ShardMap, target: &[String]) -> BTreeMap<String, usize> {
    let n = target.len().max(1);
    let (base, extra) = (map.partitions as usize / n, map.partitions as usize % n);
    let owned = owned_by_shard(map);
    let mut order: Vec<(usize, &String)> = target.iter().enumerate().collect();
    order.sort_by_key(|(i, name)| (std::cmp::Reverse(owned.get(*name).map_or(0, Vec::len)), *i));
    order
        .into_iter()
        .enumerate()
        .map(|(rank, (_, name))| (name.clone(), base + usize::from(rank < extra)))
        .collect()
}

/// Partitions each shard of the map owns, in order.
pub fn owned_by_shard(map: &ShardMap) -> BTreeMap<String, Vec<u32>> {
    map.shards
        .iter()
        .map(|s| {
            let mut list: Vec<u32> = s.partitions.iter().flat_map(|r| r.start..=r.end).collect();
            list.sort_unstable();
            (s.name.clone(), list)
        })
        .collect()
}

/// The moves that take `map` to a balanced assignment over `target` (shard names; shards of
/// the map not listed give all their partitions away). A shard over its quota gives away its
/// highest partitions; shards under it receive them, in `target` order. Moves are grouped by
/// (from, to) and cut into batches of at most `batch_size` partitions.
pub fn plan_moves(map: &ShardMap, target: &[String], batch_size: usize) -> Vec<Batch> {
    let quotas = quotas(map, target);
    let owned = owned_by_shard(map);
    // Donors in map order, each with the partitions it gives away.
    let mut surplus: Vec<(String, Vec<u32>)> = map
        .shards
        .iter()
        .filter_map(|s| {
            let list = &owned[&s.name];
            let keep = quotas.get(&s.name).copied().unwrap_or(0).min(list.len());
            (keep < list.len()).then(|| (s.name.clone(), list[keep..].to_vec()))
        })
        .collect();
    let mut batches = Vec::new();
    for name in target {
        let have = owned.get(name).map_or(0, Vec::len);
        let mut need = quotas[name].saturating_sub(have);
        for (donor, give) in surplus.iter_mut() {
            if need == 0 {
                break;
            }
            let take = need.min(give.len());
            if take == 0 {
                continue;
            }
            let moved: Vec<u32> = give.drain(..take).collect();
            need -= take;
            for chunk in moved.chunks(batch_size.max(1)) {
                batches.push(Batch {
                    partitions: chunk.to_vec(),
                    from: donor.clone(),
                    to: name.clone(),
                });
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vecshard_proto::shard_map::{PartitionRange, ShardAssignment};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("docs-{i}")).collect()
    }

    fn even(partitions: u32, shards: usize) -> ShardMap {
        ShardMap::even(
            "docs",
            partitions,
            (0..shards).map(|i| vec![format!("http://r{i}")]).collect(),
        )
    }

    /// The map after every batch, as the steps apply them.
    fn apply(map: &ShardMap, batches: &[Batch]) -> BTreeMap<String, Vec<u32>> {
        let mut owned = owned_by_shard(map);
        for b in batches {
            let from = owned.get_mut(&b.from).unwrap();
            for p in &b.partitions {
                let at = from.iter().position(|x| x == p).expect("donor owns it");
                from.remove(at);
            }
            owned.entry(b.to.clone()).or_default().extend(&b.partitions);
        }
        owned
    }

    #[test]
    fn two_to_three_shards_moves_a_third_of_the_partitions() {
        let map = even(16, 2);
        let batches = plan_moves(&map, &names(3), 4);
        let moved: usize = batches.iter().map(|b| b.partitions.len()).sum();
        assert_eq!(moved, 5, "{batches:?}");
        assert!(batches
            .iter()
            .all(|b| b.to == "docs-2" && b.partitions.len() <= 4));
        let owned = apply(&map, &batches);
        let counts: Vec<usize> = owned.values().map(Vec::len).collect();
        assert_eq!(counts, vec![6, 5, 5]);
    }

    #[test]
    fn three_back_to_two_empties_the_third_shard() {
        let map = even(16, 3);
        let batches = plan_moves(&map, &names(2), 16);
        let owned = apply(&map, &batches);
        assert!(owned["docs-2"].is_empty());
        assert_eq!(owned["docs-0"].len() + owned["docs-1"].len(), 16);
        assert!(owned["docs-0"].len().abs_diff(owned["docs-1"].len()) <= 1);
        // Exactly the third shard's partitions (10-15) move.
        let moved: usize = batches.iter().map(|b| b.partitions.len()).sum();
        assert_eq!(moved, 6);
    }

    #[test]
    fn a_balanced_map_needs_no_moves() {
        assert!(plan_moves(&even(256, 3), &names(3), 8).is_empty());
    }

    fn arbitrary_map() -> impl Strategy<Value = (ShardMap, usize)> {
        (1u32..64, 1usize..6, 1usize..6, any::<u64>()).prop_map(|(partitions, from, to, seed)| {
            // Each partition to a pseudo-random shard of `from` (not necessarily balanced).
            let mut owners: Vec<Vec<u32>> = vec![Vec::new(); from];
            for p in 0..partitions {
                let h = (seed ^ u64::from(p)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
                owners[(h % from as u64) as usize].push(p);
            }
            let shards = owners
                .into_iter()
                .enumerate()
                .map(|(i, list)| ShardAssignment {
                    name: format!("docs-{i}"),
                    partitions: ShardMap::ranges(&list),
                    replicas: vec![format!("http://r{i}")],
                    joining: Vec::new(),
                })
                .collect();
            let map = ShardMap {
                version: 1,
                collection: "docs".into(),
                partitions,
                shards,
                moves: Vec::new(),
            };
            (map, to)
        })
    }

    proptest! {
        #[test]
        fn every_plan_ends_balanced_with_the_fewest_moves(
            (map, to) in arbitrary_map(),
            batch_size in 1usize..10,
        ) {
            map.validate().unwrap();
            let target = names(to);
            let batches = plan_moves(&map, &target, batch_size);
            // Every batch is legal when it runs: its donor still owns what it gives away.
            let mut owned = owned_by_shard(&map);
            let mut moved_once = std::collections::BTreeSet::new();
            for b in &batches {
                prop_assert!(b.partitions.len() <= batch_size && !b.partitions.is_empty());
                prop_assert!(b.from != b.to);
                for p in &b.partitions {
                    prop_assert!(moved_once.insert(*p), "partition {} moves twice", p);
                    let from = owned.get_mut(&b.from).unwrap();
                    let at = from.iter().position(|x| x == p);
                    prop_assert!(at.is_some());
                    from.remove(at.unwrap());
                }
                owned.entry(b.to.clone()).or_default().extend(&b.partitions);
                // After each step every partition has exactly one owner.
                let mut all: Vec<u32> = owned.values().flatten().copied().collect();
                all.sort_unstable();
                prop_assert_eq!(all, (0..map.partitions).collect::<Vec<_>>());
            }
            // Balanced over the target shards; shards not in the target own nothing.
            let counts: Vec<usize> = target.iter().map(|n| owned.get(n).map_or(0, Vec::len)).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", counts);
            for (name, list) in &owned {
                if !target.contains(name) {
                    prop_assert!(list.is_empty());
                }
            }
            // The fewest moves: a partition moves only away from a shard over its best quota,
            // and the quotas keep as many partitions in place as any balanced assignment can.
            let before = owned_by_shard(&map);
            let mut current: Vec<usize> = target.iter().map(|n| before.get(n).map_or(0, Vec::len)).collect();
            current.sort_unstable_by(|a, b| b.cmp(a));
            let n = target.len();
            let (base, extra) = (map.partitions as usize / n, map.partitions as usize % n);
            let best_kept: usize = current
                .iter()
                .enumerate()
                .map(|(rank, c)| (*c).min(base + usize::from(rank < extra)))
                .sum();
            let moved: usize = batches.iter().map(|b| b.partitions.len()).sum();
            prop_assert_eq!(moved, map.partitions as usize - best_kept);
        }
    }

    #[test]
    fn ranges_compress_partition_lists() {
        assert_eq!(
            ShardMap::ranges(&[0, 1, 2, 5, 7, 8]),
            vec![
                PartitionRange { start: 0, end: 2 },
                PartitionRange { start: 5, end: 5 },
                PartitionRange { start: 7, end: 8 }
            ]
        );
    }
}
