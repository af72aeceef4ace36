//! Writing a shard's data directory from a snapshot, before the shard opens it: the stored
//! records as they were read, then the log entries committed during the read, last writer
//! wins, then the per-partition fingerprints of what was written (which a restore compares
//! with its manifest before anything is served).

use std::path::Path;

use crate::storage::{Record, Storage};
use vecshard_core::error::{Error, Result};
use vecshard_core::model::{CollectionConfig, PointId};
use vecshard_proto::v1::PartitionStat;

pub struct RestoreWriter {
    storage: Storage,
}

/// What a finished restore holds.
#[derive(Debug)]
pub struct Restored {
    pub points: u64,
    pub tombstones: u64,
    pub partitions: Vec<PartitionStat>,
}

impl RestoreWriter {
    /// Opens the storage of an empty data directory and records `config` in it; refuses a
    /// directory that already holds a collection.
    pub fn create(dir: &Path, config: &CollectionConfig) -> Result<RestoreWriter> {
        let storage = Storage::open(dir, 64 << 20)?;
        if storage.stored_config()?.is_some() || storage.scan().next().is_some() {
            return Err(Error::invalid(format!(
                "cannot restore into {}: it already holds data (a restore only fills an empty \
                 data directory)",
                dir.display()
            )));
        }
        storage.store_config(config)?;
        Ok(RestoreWriter { storage })
    }

    /// Stores records read from a snapshot's `records.bin` (each id once).
    pub fn write(&self, records: &[(PointId, Record)]) -> Result<()> {
        self.storage.apply(0, records)
    }

    /// Stores the records of the snapshot's log entries that are newer than what is stored.
    pub fn apply_newer(&self, records: Vec<(PointId, Record)>) -> Result<()> {
        let mut winners: std::collections::HashMap<PointId, Record> = Default::default();
        for (id, record) in records {
            let stored = match winners.get(&id) {
                Some(w) => Some(w.version),
                None => self.storage.get(&id)?.map(|r| r.version),
            };
            if stored.is_none_or(|v| record.version > v) {
                winners.insert(id, record);
            }
        }
        let winners: Vec<(PointId, Record)> = winners.into_iter().collect();
        self.storage.apply(0, &winners)
    }

    /// Makes everything durable and returns the fingerprints of the live points.
    pub fn finish(self, partition_count: u32) -> Result<Restored> {
        self.storage.flush()?;
        let mut live: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut tombstones = 0;
        for item in self.storage.scan() {
            let (id, record) = item?;
            if record.vector.is_some() {
                live.push((id.to_bytes(), record.version));
            } else {
                tombstones += 1;
            }
        }
        let partitions = vecshard_core::partitions::partition_stats(
            live.iter().map(|(k, v)| (k.as_slice(), *v)),
            partition_count,
        );
        Ok(Restored {
            points: live.len() as u64,
            tombstones,
            partitions,
        })
    }
}
