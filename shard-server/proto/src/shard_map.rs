//! The shard map: which shard owns each partition and where its replicas listen. Written by the
//! operator (a ConfigMap) or by hand / `vecshard-server dev` (a JSON file); read by routers.
//! Defined once here so that every component agrees on the format and on the partition hash.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// `partition = xxh3_64(id bytes) % partitions`, where the id bytes are `0x00` + the id as a
/// big-endian u64 for numeric ids, or `0x01` + the UTF-8 bytes for string ids.
pub fn partition_of(id_bytes: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(id_bytes) % u64::from(partitions.max(1))) as u32
}

/// The key under which the shard map's JSON is stored in its Kubernetes ConfigMap.
pub const CONFIGMAP_KEY: &str = "shard-map.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardMap {
    /// Increases with every change; a router never goes back to an older map.
    pub version: u64,
    pub collection: String,
    /// Number of hash partitions, fixed for the life of the collection.
    pub partitions: u32,
    pub shards: Vec<ShardAssignment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardAssignment {
    /// Shard name, e.g. `docs-0`; used in errors and metrics.
    pub name: String,
    /// Partitions this shard owns, as inclusive ranges.
    pub partitions: Vec<PartitionRange>,
    /// gRPC endpoints of the shard's replicas, e.g. `http://127.0.0.1:7001`.
    pub replicas: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRange {
    pub start: u32,
    /// Inclusive.
    pub end: u32,
}

impl ShardMap {
    /// A map that splits `partitions` into `replicas.len()` contiguous, near-equal ranges.
    pub fn even(collection: &str, partitions: u32, replicas: Vec<Vec<String>>) -> ShardMap {
        let n = replicas.len() as u32;
        let shards = replicas
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| {
                let i = i as u32;
                let (start, end) = (i * partitions / n, (i + 1) * partitions / n);
                ShardAssignment {
                    name: format!("{collection}-{i}"),
                    partitions: vec![PartitionRange {
                        start,
                        end: end - 1,
                    }],
                    replicas,
                }
            })
            .collect();
        ShardMap {
            version: 1,
            collection: collection.to_string(),
            partitions,
            shards,
        }
    }

    /// Every partition owned by exactly one shard, and every shard has a replica.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 {
            return Err("shard map: partitions must be at least 1".into());
        }
        if self.shards.is_empty() {
            return Err("shard map: no shards".into());
        }
        let mut seen = BTreeSet::new();
        for shard in &self.shards {
            if shard.replicas.is_empty() {
                return Err(format!("shard map: shard {:?} has no replicas", shard.name));
            }
            for r in &shard.partitions {
                if r.start > r.end || r.end >= self.partitions {
                    return Err(format!(
                        "shard map: shard {:?} has partition range {}-{} outside 0-{}",
                        shard.name,
                        r.start,
                        r.end,
                        self.partitions - 1
                    ));
                }
                for p in r.start..=r.end {
                    if !seen.insert(p) {
                        return Err(format!("shard map: partition {p} is assigned twice"));
                    }
                }
            }
        }
        if seen.len() as u32 != self.partitions {
            let missing = (0..self.partitions)
                .find(|p| !seen.contains(p))
                .unwrap_or(0);
            return Err(format!(
                "shard map: partition {missing} is not assigned to any shard"
            ));
        }
        Ok(())
    }

    /// For each partition, the index of its shard in `shards`. Call after `validate`.
    pub fn owners(&self) -> Vec<usize> {
        let mut owners = vec![0; self.partitions as usize];
        for (i, shard) in self.shards.iter().enumerate() {
            for r in &shard.partitions {
                for p in r.start..=r.end {
                    owners[p as usize] = i;
                }
            }
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_map_covers_every_partition_once() {
        let map = ShardMap::even(
            "docs",
            256,
            vec![vec!["a".into()], vec!["b".into()], vec!["c".into()]],
        );
        map.validate().unwrap();
        let owners = map.owners();
        assert_eq!(owners[0], 0);
        assert_eq!(owners[255], 2);
        assert_eq!(owners.iter().filter(|o| **o == 1).count(), 85);
    }

    #[test]
    fn gaps_overlaps_and_empty_replica_lists_are_rejected() {
        let mut map = ShardMap::even("docs", 8, vec![vec!["a".into()], vec!["b".into()]]);
        map.shards[1].partitions[0].start = 3;
        assert!(map
            .validate()
            .unwrap_err()
            .contains("partition 3 is assigned twice"));
        map.shards[1].partitions[0].start = 5;
        assert!(map
            .validate()
            .unwrap_err()
            .contains("partition 4 is not assigned"));
        map.shards[1].partitions[0].start = 4;
        map.shards[1].replicas.clear();
        assert!(map.validate().unwrap_err().contains("has no replicas"));
    }

    #[test]
    fn the_partition_hash_is_stable() {
        // Pinned: changing it would move every stored point to another shard.
        assert_eq!(
            partition_of(&[0, 0, 0, 0, 0, 0, 0, 0, 42], 256),
            partition_of(&[0, 0, 0, 0, 0, 0, 0, 0, 42], 256)
        );
        let p = partition_of(b"\x01chunk-7", 256);
        assert!(p < 256);
        assert_eq!(p, (xxhash_rust::xxh3::xxh3_64(b"\x01chunk-7") % 256) as u32);
    }
}
