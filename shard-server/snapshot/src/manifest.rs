//! What a snapshot is made of, and where each piece lives:
//!
//! ```text
//! <root>/<collection>/<snapshot-id>/manifest.json          the collection manifest (commit point)
//! <root>/<collection>/<snapshot-id>/<shard>/manifest.json  a shard manifest
//! <root>/<collection>/<snapshot-id>/<shard>/records.bin    stored records (points, tombstones)
//! <root>/<collection>/<snapshot-id>/<shard>/log.bin        log entries committed during the read
//! <root>/<collection>/<snapshot-id>/<shard>/graph.usearch  the saved HNSW graph (when intact)
//! <root>/<collection>/<snapshot-id>/<shard>/graph.keys     what each graph key holds
//! ```
//!
//! Every object's size and SHA-256 are in its shard manifest; every shard manifest's size and
//! SHA-256 in the collection manifest, which is written last: a snapshot without it does not
//! exist (its objects are orphans, collected by `catalog::collect_orphans`).

use serde::{Deserialize, Serialize};
use vecshard_core::error::{Error, Result};
use vecshard_proto::v1::PartitionStat;

/// Bumped when the layout changes incompatibly; a restore refuses formats it does not know.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const RECORDS: &str = "records.bin";
pub const LOG: &str = "log.bin";
pub const GRAPH: &str = "graph.usearch";
pub const GRAPH_KEYS: &str = "graph.keys";

/// One stored object of a shard snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// A partition's live points and their order-independent checksum (as `PartitionStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub partition: u32,
    pub count: u64,
    pub checksum: u64,
}

impl From<&PartitionStat> for PartitionEntry {
    fn from(s: &PartitionStat) -> Self {
        PartitionEntry {
            partition: s.partition,
            count: s.count,
            checksum: s.checksum,
        }
    }
}

/// The collection's parameters a restore must match (dimension, metric, partitions) or may
/// differ in (the rest: then the saved graph is rebuilt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionParams {
    pub name: String,
    pub dimension: u32,
    pub metric: String,
    pub partitions: u32,
    pub quantization: String,
    pub hnsw_m: u32,
    pub hnsw_ef_construction: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    pub format: u32,
    pub snapshot_id: String,
    pub shard: String,
    pub collection: CollectionParams,
    /// The replica's log sequence the snapshot is a cut at: every write it acknowledged at or
    /// below it is in the snapshot.
    pub sequence: u64,
    /// Sequence when reading started: every write acknowledged before the snapshot started is
    /// at or below it.
    pub started_sequence: u64,
    /// The replica's partition-ownership version when the snapshot was taken (0: never set).
    pub map_version: u64,
    pub points: u64,
    pub tombstones: u64,
    /// Whether the saved HNSW graph is included (otherwise a restore builds it).
    pub graph: bool,
    pub objects: Vec<ObjectEntry>,
    /// Partitions holding live points, in partition order.
    pub partitions: Vec<PartitionEntry>,
    pub started_at: String,
    pub finished_at: String,
}

/// One shard of a collection snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub name: String,
    /// Which replica wrote it (its address).
    pub replica: String,
    pub manifest: ObjectEntry,
    pub points: u64,
    /// Bytes of the shard's objects (manifest included).
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionManifest {
    pub format: u32,
    pub snapshot_id: String,
    pub collection: CollectionParams,
    /// The shard map in force when the snapshot was taken (JSON of `ShardMap`): which
    /// partitions each shard held. A restore publishes the same assignment.
    pub shard_map: serde_json::Value,
    pub shards: Vec<ShardEntry>,
    pub points: u64,
    pub bytes: u64,
    pub started_at: String,
    pub finished_at: String,
}

impl CollectionManifest {
    pub fn shard(&self, name: &str) -> Result<&ShardEntry> {
        self.shards.iter().find(|s| s.name == name).ok_or_else(|| {
            Error::not_found(format!(
                "snapshot {} has no shard {name:?} (it has {})",
                self.snapshot_id,
                self.shards
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// Checks that a manifest was written in a format this build reads.
pub fn check_format(format: u32, what: &str) -> Result<()> {
    if format == FORMAT {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} has snapshot format {format}; this vecshard reads format {FORMAT}"
        )))
    }
}

/// A new snapshot id: the UTC time (so ids sort by age) and a random suffix (so two taken in
/// the same second differ), e.g. `20261206T013405Z-3f9a`.
pub fn new_snapshot_id(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    let nonce = (unix_millis % 1000) as u32 ^ std::process::id().rotate_left(7);
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z-{:04x}",
        nonce & 0xffff
    )
}

/// RFC 3339 UTC of a unix time in milliseconds.
pub fn rfc3339(unix_millis: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_from_unix(unix_millis / 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// (year, month, day, hour, minute, second) of a unix time (days-from-civil inverted, after
/// Howard Hinnant's algorithm).
pub(crate) fn civil_from_unix(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// A snapshot id as written by `new_snapshot_id` or chosen by a user: safe as one path segment.
pub fn check_snapshot_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "snapshot id {id:?}: 1 to 128 characters of letters, digits, '-', '_' and '.', not \
             starting with '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_dates_are_civil() {
        // 2026-12-06T01:34:05Z
        let t = 1_796_520_845_000;
        assert_eq!(rfc3339(t), "2026-12-06T01:34:05Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        let a = new_snapshot_id(t);
        assert!(a.starts_with("20261206T013405Z-"), "{a}");
        assert!(a < new_snapshot_id(t + 1000));
        check_snapshot_id(&a).unwrap();
    }

    #[test]
    fn snapshot_ids_are_single_safe_path_segments() {
        for bad in ["", "a/b", "..", ".hidden", "a b", &"x".repeat(129)] {
            assert!(check_snapshot_id(bad).is_err(), "{bad}");
        }
        check_snapshot_id("nightly-2026_12.06").unwrap();
    }

    #[test]
    fn unknown_formats_are_refused_by_name() {
        let err = check_format(FORMAT + 1, "snapshot x").unwrap_err();
        assert!(err.to_string().contains("format 2"), "{err}");
    }
}
