//! Pure helpers of the router: grouping ids by shard and merging per-shard top-k lists.

use std::collections::BTreeMap;

use vecshard_core::model::{Metric, PointId};
use vecshard_core::request::ScoredPoint;
use vecshard_proto::shard_map::partition_of;

/// Indexes of `items` grouped by the shard that owns each item's id.
pub fn group_by_shard<T>(
    items: &[T],
    id: impl Fn(&T) -> &PointId,
    owners: &[usize],
) -> BTreeMap<usize, Vec<usize>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let partition = partition_of(&id(item).to_bytes(), owners.len() as u32);
        groups
            .entry(owners[partition as usize])
            .or_default()
            .push(i);
    }
    groups
}

/// Merges per-shard results (each best first) into the global best `limit`, best first.
/// Ties are broken by id so that the order does not depend on which shard answered first.
pub fn merge_top_k(metric: Metric, lists: Vec<Vec<ScoredPoint>>, limit: usize) -> Vec<ScoredPoint> {
    let mut all: Vec<ScoredPoint> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        let by_score = if metric.higher_is_better() {
            b.score.total_cmp(&a.score)
        } else {
            a.score.total_cmp(&b.score)
        };
        by_score.then_with(|| a.id.cmp(&b.id))
    });
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64, score: f32) -> ScoredPoint {
        ScoredPoint {
            id: PointId::Num(id),
            score,
            version: 1,
            payload: None,
            vector: None,
        }
    }

    #[test]
    fn merging_keeps_the_global_best_in_the_metric_direction() {
        let lists = vec![
            vec![hit(1, 0.9), hit(2, 0.5)],
            vec![hit(3, 0.8), hit(4, 0.7)],
        ];
        let ids = |v: Vec<ScoredPoint>| v.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(merge_top_k(Metric::Cosine, lists.clone(), 3)),
            vec![PointId::Num(1), PointId::Num(3), PointId::Num(4)]
        );
        assert_eq!(
            ids(merge_top_k(Metric::L2, lists, 2)),
            vec![PointId::Num(2), PointId::Num(4)]
        );
    }

    #[test]
    fn ids_are_grouped_by_the_owner_of_their_partition() {
        let owners: Vec<usize> = (0..16).map(|p| usize::from(p >= 8)).collect();
        let ids: Vec<PointId> = (0..100).map(PointId::Num).collect();
        let groups = group_by_shard(&ids, |i| i, &owners);
        assert_eq!(groups.values().map(Vec::len).sum::<usize>(), 100);
        for (shard, members) in groups {
            for i in members {
                let p = partition_of(&ids[i].to_bytes(), 16) as usize;
                assert_eq!(owners[p], shard);
            }
        }
    }
}
