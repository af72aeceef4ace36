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
    /// Partitions being moved between shards (rebalancing). Reads follow `shards`; writes to
    /// a moving partition go to both its shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<PartitionMove>,
}

/// A batch of partitions moving from one shard to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionMove {
    pub partitions: Vec<u32>,
    pub from: String,
    pub to: String,
    pub phase: MovePhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MovePhase {
    /// The partitions are still read from (and owned by) `from`; writes go to both.
    DualWrite,
    /// The partitions are read from (and owned by) `to`; writes still go to both.
    ReadsSwitched,
}

impl MovePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            MovePhase::DualWrite => "dualWrite",
            MovePhase::ReadsSwitched => "readsSwitched",
        }
    }
}

/// What one shard serves as of a map version: the partitions it answers reads for and those
/// it accepts writes for (a superset: it also takes writes for partitions moving to or away
/// from it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ownership {
    pub map_version: u64,
    pub partitions: u32,
    pub readable: Vec<u32>,
    pub writable: Vec<u32>,
}

impl Ownership {
    /// A shard of an unmanaged collection: everything, any map version.
    pub fn everything(partitions: u32) -> Ownership {
        let all: Vec<u32> = (0..partitions).collect();
        Ownership {
            map_version: 0,
            partitions,
            readable: all.clone(),
            writable: all,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardAssignment {
    /// Shard name, e.g. `docs-0`; used in errors and metrics.
    pub name: String,
    /// Partitions this shard owns, as inclusive ranges.
    pub partitions: Vec<PartitionRange>,
    /// gRPC endpoints of the shard's serving replicas, e.g. `http://127.0.0.1:7001`: they
    /// answer reads and their acknowledgements count toward the write consistency.
    pub replicas: Vec<String>,
    /// Replicas that are catching up (new, or restarted): they receive every write, so that
    /// they hold it once they serve, but answer no reads and do not count toward the write
    /// consistency. The operator moves a replica to `replicas` once its pod is ready, which a
    /// shard server is only after catching up with its peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joining: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionRange {
    pub start: u32,
    /// Inclusive.
    pub end: u32,
}

impl ShardAssignment {
    /// Serving and joining replicas: every replica that takes the shard's writes and must
    /// hold its partition ownership.
    pub fn all_replicas(&self) -> impl Iterator<Item = &String> {
        self.replicas.iter().chain(&self.joining)
    }
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
                    joining: Vec::new(),
                }
            })
            .collect();
        ShardMap {
            version: 1,
            collection: collection.to_string(),
            partitions,
            shards,
            moves: Vec::new(),
        }
    }

    pub fn shard(&self, name: &str) -> Option<&ShardAssignment> {
        self.shards.iter().find(|s| s.name == name)
    }

    /// Partitions and the move phase of each shard as this map says, for `SetOwnership`. A
    /// shard absent from the map owns nothing.
    pub fn ownership_of(&self, shard: &str) -> Ownership {
        let mut readable: Vec<u32> = self
            .shard(shard)
            .map(|s| s.partitions.iter().flat_map(|r| r.start..=r.end).collect())
            .unwrap_or_default();
        readable.sort_unstable();
        let mut writable = readable.clone();
        for m in &self.moves {
            if m.from == shard || m.to == shard {
                writable.extend(&m.partitions);
            }
        }
        writable.sort_unstable();
        writable.dedup();
        Ownership {
            map_version: self.version,
            partitions: self.partitions,
            readable,
            writable,
        }
    }

    /// For each partition, the index in `shards` of the shard that also takes its writes
    /// while it moves (`None` for partitions not moving). Call after `validate`.
    pub fn second_writers(&self) -> Vec<Option<usize>> {
        let owners = self.owners();
        let index = |name: &str| self.shards.iter().position(|s| s.name == name);
        let mut out = vec![None; self.partitions as usize];
        for m in &self.moves {
            for &p in &m.partitions {
                let owner = owners[p as usize];
                let other = if self.shards[owner].name == m.from {
                    index(&m.to)
                } else {
                    index(&m.from)
                };
                out[p as usize] = other.filter(|o| *o != owner);
            }
        }
        out
    }

    /// Partition lists as inclusive ranges (sorted input).
    pub fn ranges(partitions: &[u32]) -> Vec<PartitionRange> {
        let mut out: Vec<PartitionRange> = Vec::new();
        for &p in partitions {
            match out.last_mut() {
                Some(r) if r.end + 1 == p => r.end = p,
                _ => out.push(PartitionRange { start: p, end: p }),
            }
        }
        out
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
                return Err(format!(
                    "shard map: shard {:?} has no serving replicas",
                    shard.name
                ));
            }
            if let Some(both) = shard.joining.iter().find(|a| shard.replicas.contains(a)) {
                return Err(format!(
                    "shard map: shard {:?} lists replica {both} as serving and as joining",
                    shard.name
                ));
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
        let owners = self.owners();
        let mut moving = BTreeSet::new();
        for m in &self.moves {
            let (Some(_), Some(_)) = (self.shard(&m.from), self.shard(&m.to)) else {
                return Err(format!(
                    "shard map: a move names shard {:?} or {:?}, which is not in the map",
                    m.from, m.to
                ));
            };
            let reader = match m.phase {
                MovePhase::DualWrite => &m.from,
                MovePhase::ReadsSwitched => &m.to,
            };
            for &p in &m.partitions {
                if p >= self.partitions || !moving.insert(p) {
                    return Err(format!(
                        "shard map: partition {p} moves twice or does not exist"
                    ));
                }
                if &self.shards[owners[p as usize]].name != reader {
                    return Err(format!(
                        "shard map: partition {p} is in phase {} of its move from {} to {}, \
                         so it must be owned by {reader}",
                        m.phase.as_str(),
                        m.from,
                        m.to
                    ));
                }
            }
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
        map.shards[1].joining.push("b".into());
        assert!(map
            .validate()
            .unwrap_err()
            .contains("lists replica b as serving and as joining"));
        // Joining replicas alone do not make a shard servable.
        map.shards[1].replicas.clear();
        assert!(map
            .validate()
            .unwrap_err()
            .contains("has no serving replicas"));
    }

    #[test]
    fn moving_partitions_are_written_to_both_shards_and_read_from_one() {
        let mut map = ShardMap::even(
            "docs",
            8,
            vec![vec!["a".into()], vec!["b".into()], vec!["c".into()]],
        );
        // docs-0: 0-1, docs-1: 2-4, docs-2: 5-7.
        map.moves.push(PartitionMove {
            partitions: vec![4],
            from: "docs-1".into(),
            to: "docs-2".into(),
            phase: MovePhase::DualWrite,
        });
        map.validate().unwrap();
        assert_eq!(map.second_writers()[4], Some(2));
        assert_eq!(map.second_writers()[3], None);
        let t = map.ownership_of("docs-2");
        assert_eq!(t.readable, vec![5, 6, 7]);
        assert_eq!(t.writable, vec![4, 5, 6, 7]);
        assert_eq!(map.ownership_of("docs-1").writable, vec![2, 3, 4]);
        assert!(map.ownership_of("docs-9").writable.is_empty());
        // In phase readsSwitched the partition must already belong to the receiver.
        map.moves[0].phase = MovePhase::ReadsSwitched;
        assert!(map.validate().unwrap_err().contains("owned by docs-2"));
        map.shards[1].partitions = ShardMap::ranges(&[2, 3]);
        map.shards[2].partitions = ShardMap::ranges(&[4, 5, 6, 7]);
        map.validate().unwrap();
        assert_eq!(map.second_writers()[4], Some(1));
        assert_eq!(map.ownership_of("docs-1").readable, vec![2, 3]);
        assert_eq!(map.ownership_of("docs-1").writable, vec![2, 3, 4]);
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
