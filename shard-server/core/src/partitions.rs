//! Per-partition fingerprints of a replica's data: a count of live points and an
//! order-independent checksum of their (id, version) pairs. Two replicas that hold the same
//! points at the same versions have equal fingerprints whatever order the writes reached them
//! in, so comparing them finds the partitions where replicas diverged. Pure functions.

use std::collections::BTreeMap;

use vecshard_proto::shard_map::partition_of;
use vecshard_proto::v1::PartitionStat;

/// Checksum contribution of one live point.
pub fn point_checksum(id_bytes: &[u8], version: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id_bytes, version)
}

/// Fingerprints of the partitions that hold live points, in partition order.
pub fn partition_stats<'a>(
    live: impl Iterator<Item = (&'a [u8], u64)>,
    partition_count: u32,
) -> Vec<PartitionStat> {
    let mut by_partition: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (id_bytes, version) in live {
        let slot = by_partition
            .entry(partition_of(id_bytes, partition_count))
            .or_default();
        slot.0 += 1;
        slot.1 = slot.1.wrapping_add(point_checksum(id_bytes, version));
    }
    by_partition
        .into_iter()
        .map(|(partition, (count, checksum))| PartitionStat {
            partition,
            count,
            checksum,
        })
        .collect()
}

/// One number for a whole replica: equal on replicas holding the same data.
pub fn total_checksum(stats: &[PartitionStat]) -> u64 {
    stats
        .iter()
        .fold(0u64, |sum, s| sum.wrapping_add(s.checksum))
}

/// Partitions whose fingerprints differ between two replicas (present in one only included).
pub fn diverged(a: &[PartitionStat], b: &[PartitionStat]) -> Vec<u32> {
    let index = |stats: &[PartitionStat]| -> BTreeMap<u32, (u64, u64)> {
        stats
            .iter()
            .map(|s| (s.partition, (s.count, s.checksum)))
            .collect()
    };
    let (a, b) = (index(a), index(b));
    let mut out: Vec<u32> = a
        .iter()
        .filter(|(p, v)| b.get(p) != Some(v))
        .map(|(p, _)| *p)
        .chain(b.keys().filter(|p| !a.contains_key(p)).copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(points: &[(u64, u64)]) -> Vec<PartitionStat> {
        let keys: Vec<(Vec<u8>, u64)> = points
            .iter()
            .map(|(id, v)| (id.to_be_bytes().to_vec(), *v))
            .collect();
        partition_stats(keys.iter().map(|(k, v)| (k.as_slice(), *v)), 8)
    }

    #[test]
    fn equal_data_in_any_order_has_equal_fingerprints() {
        let a = stats(&[(1, 10), (2, 11), (3, 12), (40, 13)]);
        let b = stats(&[(40, 13), (3, 12), (1, 10), (2, 11)]);
        assert_eq!(a, b);
        assert!(diverged(&a, &b).is_empty());
        assert_eq!(a.iter().map(|s| s.count).sum::<u64>(), 4);
    }

    #[test]
    fn a_different_version_or_a_missing_point_shows_in_its_partition_only() {
        let base = [(1, 10), (2, 11), (3, 12), (40, 13)];
        let a = stats(&base);
        let newer = stats(&[(1, 10), (2, 99), (3, 12), (40, 13)]);
        let missing = stats(&[(1, 10), (2, 11), (3, 12)]);
        let p = |id: u64| partition_of(&id.to_be_bytes(), 8);
        assert_eq!(diverged(&a, &newer), vec![p(2)]);
        assert_eq!(diverged(&a, &missing), vec![p(40)]);
        assert_eq!(diverged(&missing, &a), vec![p(40)]);
        assert_ne!(total_checksum(&a), total_checksum(&newer));
    }
}
