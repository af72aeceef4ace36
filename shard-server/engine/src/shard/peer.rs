//! What peers read from a shard and write into it: the operation log, stored records by
//! partition, per-partition fingerprints, and replicated records applied last-writer-wins.

use super::*;

impl Shard {
    /// Largest version this replica holds: where catching up from a peer starts.
    pub fn max_version(&self) -> u64 {
        self.state
            .read()
            .by_id
            .values()
            .map(|e| e.version)
            .max()
            .unwrap_or(0)
    }

    /// A page of the operation log for a peer (see `Storage::read_log_page`).
    pub async fn read_log(
        self: &Arc<Self>,
        after_version: u64,
        after_sequence: u64,
        max: usize,
    ) -> Result<LogPage> {
        self.run_read(move |shard| {
            shard
                .storage
                .read_log_page(after_version, after_sequence, max)
        })
        .await
    }

    /// A page of stored records (live and tombstones) for a peer copying partitions:
    /// `partitions` is (partition count, wanted partitions), `None` for every record.
    pub async fn scan(
        self: &Arc<Self>,
        after: Vec<u8>,
        max: usize,
        partitions: Option<(u32, Vec<u32>)>,
    ) -> Result<crate::storage::ScanPage> {
        self.run_read(move |shard| {
            let wanted: Option<(u32, std::collections::HashSet<u32>)> =
                partitions.map(|(n, list)| (n, list.into_iter().collect()));
            shard.storage.scan_page(&after, max, |key| {
                wanted.as_ref().is_none_or(|(n, set)| {
                    set.contains(&vecshard_proto::shard_map::partition_of(key, *n))
                })
            })
        })
        .await
    }

    /// Count and checksum of live points per partition, and the log sequence they reflect.
    pub async fn partition_stats(
        self: &Arc<Self>,
        partition_count: u32,
    ) -> Result<(Vec<vecshard_proto::v1::PartitionStat>, u64)> {
        self.run_read(move |shard| {
            let st = shard.state.read();
            let sequence = shard.wal_sequence.load(Ordering::Acquire);
            let keys: Vec<(Vec<u8>, u64)> = st
                .by_id
                .iter()
                .filter(|(_, e)| e.slot.is_some())
                .map(|(id, e)| (id.to_bytes(), e.version))
                .collect();
            drop(st);
            let stats = vecshard_core::partitions::partition_stats(
                keys.iter().map(|(k, v)| (k.as_slice(), *v)),
                partition_count,
            );
            Ok((stats, sequence))
        })
        .await
    }

    /// Applies records copied from a peer, each with its own version. Records that would lose
    /// last-writer-wins are skipped before they reach the log, so repeated catch-up rounds
    /// over the same window write nothing. Returns how many records were applied.
    pub async fn apply_replicated(&self, records: Vec<(PointId, Record)>) -> Result<u64> {
        let mut by_version: std::collections::BTreeMap<u64, (Vec<PreparedPoint>, Vec<PointId>)> =
            Default::default();
        {
            let st = self.state.read();
            for (id, record) in records {
                if !st.wins(&id, record.version) {
                    continue;
                }
                let group = by_version.entry(record.version).or_default();
                match record.vector {
                    Some(_) => {
                        let payload: Payload =
                            serde_json::from_slice(&record.payload).unwrap_or_default();
                        group.0.push((
                            id,
                            Record {
                                version: 0,
                                ..record
                            },
                            payload,
                        ));
                    }
                    None => group.1.push(id),
                }
            }
        }
        let mut applied = 0;
        for (version, (points, tombstones)) in by_version {
            if !points.is_empty() {
                applied += self
                    .submit(WriteOp::Upsert(points), version)
                    .await?
                    .affected;
            }
            if !tombstones.is_empty() {
                let n = tombstones.len() as u64;
                self.submit(WriteOp::Delete(DeleteTarget::Ids(tombstones)), version)
                    .await?;
                applied += n;
            }
        }
        Ok(applied)
    }
}
