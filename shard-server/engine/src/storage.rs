//! Durable state of a shard in sled (the only module that imports sled): the current record of
//! every point (live or tombstone), the operation log that replicas catch up from, and metadata.
//! The large values, each point's vector and each log entry, live in `blob_file`'s files,
//! which sled's records point into. Durability comes from `flush`, which fsyncs them all; the
//! shard's committer calls it once per group.

use std::path::Path;

use crate::blob_file::{BlobFiles, Location};
use vecshard_core::error::{Error, Result};
pub use vecshard_core::model::Record;
use vecshard_core::model::{CollectionConfig, PointId};

const CONFIG_KEY: &[u8] = b"collection";
const APPLIED_SEQ_KEY: &[u8] = b"applied_seq";

/// The byte form of a record in the points tree (and of log entries written before vector
/// files): version, kind, dimensions, the vector inline, the payload.
pub fn encode_record(record: &Record) -> Vec<u8> {
    let dims = record.vector.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(13 + dims * 4 + record.payload.len());
    out.extend_from_slice(&record.version.to_le_bytes());
    out.push(if record.vector.is_some() {
        INLINE
    } else {
        TOMBSTONE
    });
    out.extend_from_slice(&(dims as u32).to_le_bytes());
    for v in record.vector.iter().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&record.payload);
    out
}

pub fn decode_record(bytes: &[u8]) -> Option<Record> {
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let live = *bytes.get(8)? == INLINE;
    let dims = u32::from_le_bytes(bytes.get(9..13)?.try_into().ok()?) as usize;
    let end = 13 + dims * 4;
    let vector = bytes
        .get(13..end)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunk")))
        .collect();
    Some(Record {
        version,
        vector: live.then_some(vector),
        payload: bytes.get(end..)?.to_vec(),
    })
}

/// How a stored record (points tree) holds its vector: byte 8 of the encoding.
const TOMBSTONE: u8 = 0;
/// The vector inline, as `Record::encode` writes it (data dirs written before vector files).
const INLINE: u8 = 1;
/// A `Location` in the vector files instead of the vector.
const IN_VECTOR_FILE: u8 = 2;

/// Records rewritten per sled batch while compacting vector files.
const COMPACTION_BATCH: usize = 4096;
/// Size at which the operation log starts a new file, so that trimming can delete old ones
/// (small in unit tests, so that they can see files come and go).
const LOG_FILE_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 64 << 20 };
/// Dead bytes beyond the live ones that the vector files tolerate before a compaction.
const COMPACTION_SLACK_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 16 << 20 };

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunk")))
        .collect()
}

/// A points-tree value: like `Record::encode`, with the vector replaced by its location.
fn encode_stored(record: &Record, location: Option<Location>) -> Vec<u8> {
    let Some(location) = location else {
        return encode_record(record);
    };
    let mut out = Vec::with_capacity(13 + Location::ENCODED_LEN + record.payload.len());
    out.extend_from_slice(&record.version.to_le_bytes());
    out.push(IN_VECTOR_FILE);
    out.extend_from_slice(&(location.len / 4).to_le_bytes());
    location.encode_into(&mut out);
    out.extend_from_slice(&record.payload);
    out
}

/// A points-tree value as found: the record (vector still to be read when it is in a vector
/// file) and the vector's location.
fn decode_stored(bytes: &[u8]) -> Option<(Record, Option<Location>)> {
    if bytes.get(8) != Some(&IN_VECTOR_FILE) {
        return decode_record(bytes).map(|r| (r, None));
    }
    let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let location = Location::decode(bytes.get(13..13 + Location::ENCODED_LEN)?)?;
    let record = Record {
        version,
        vector: None,
        payload: bytes.get(13 + Location::ENCODED_LEN..)?.to_vec(),
    };
    Some((record, Some(location)))
}

/// One operation-log entry: every (id, record) a write batch carried, winners or not.
pub fn encode_entry(entries: &[(PointId, Record)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, record) in entries {
        let id = id.to_bytes();
        let record = encode_record(record);
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(&id);
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(&record);
    }
    out
}

pub fn decode_entry(mut bytes: &[u8]) -> Option<Vec<(PointId, Record)>> {
    let mut entries = Vec::new();
    let take = |bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let chunk = bytes.get(4..4 + len)?.to_vec();
        *bytes = &bytes[4 + len..];
        Some(chunk)
    };
    while !bytes.is_empty() {
        let id = PointId::from_bytes(&take(&mut bytes)?)?;
        let record = decode_record(&take(&mut bytes)?)?;
        entries.push((id, record));
    }
    Some(entries)
}

/// A page of operation-log records for a catching-up peer.
#[derive(Debug, Default)]
pub struct LogPage {
    pub records: Vec<(PointId, Record)>,
    /// More entries follow `next_sequence`.
    pub more: bool,
    /// The log has been trimmed past the point asked for, so records may be missing.
    pub truncated: bool,
    /// Sequence of the last entry read: where the next page starts.
    pub next_sequence: u64,
}

/// A page of stored records for a peer copying partitions.
#[derive(Debug, Default)]
pub struct ScanPage {
    pub records: Vec<(PointId, Record)>,
    /// Key of the last record examined: where the next page starts.
    pub next_after: Vec<u8>,
    /// Nothing follows.
    pub done: bool,
}

pub struct Storage {
    db: sled::Db,
    /// Each stored point's vector (the points tree holds its location).
    vectors: BlobFiles,
    /// Each operation-log entry (the oplog tree holds its location by sequence).
    log: BlobFiles,
    points: sled::Tree,
    oplog: sled::Tree,
    meta: sled::Tree,
}

impl Storage {
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability is explicit: the committer fsyncs each group before acknowledging.
            .flush_every_ms(None);
        // After a shard in this process closes, sled's background thread can hold the file
        // lock for a moment; wait for it briefly instead of failing the reopen.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports the lock as a custom `Other` error wrapping the WouldBlock.
                Err(sled::Error::Io(e))
                    if attempts < 100
                        && (e.kind() == std::io::ErrorKind::WouldBlock
                            || e.to_string().contains("could not acquire lock")) =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(Error::storage("open", e)),
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| Error::storage("open tree", e))
        };
        let storage = Storage {
            points: tree("points")?,
            // "oplog" held the entries themselves before log files; see `migrate_log`.
            oplog: tree("log")?,
            meta: tree("meta")?,
            vectors: BlobFiles::open(dir, "vectors")?,
            log: BlobFiles::open(dir, "oplog")?,
            db,
        };
        storage.migrate_log()?;
        storage.compact_vectors()?;
        Ok(storage)
    }

    /// Moves the entries of a data dir written before log files (sled tree `oplog`, entries
    /// inline) into the log files. Idempotent: a crash midway re-copies on the next open.
    fn migrate_log(&self) -> Result<()> {
        const LEGACY: &[u8] = b"oplog";
        if !self.db.tree_names().iter().any(|n| n == LEGACY) {
            return Ok(());
        }
        let legacy = self
            .db
            .open_tree(LEGACY)
            .map_err(|e| Error::storage("open tree", e))?;
        tracing::info!(
            entries = legacy.len(),
            "moving the operation log into log files"
        );
        for item in legacy.iter() {
            let (k, v) = item.map_err(|e| Error::storage("read log", e))?;
            self.append_log_entry(&k, &v)?;
        }
        self.flush()?;
        self.db
            .drop_tree(LEGACY)
            .map_err(|e| Error::storage("drop old log", e))?;
        self.flush()
    }

    fn append_log_entry(&self, key: &[u8], entry: &[u8]) -> Result<()> {
        if self.log.current().1 >= LOG_FILE_BYTES {
            self.log.start_generation()?;
        }
        let location = self.log.append(&[entry])?[0];
        let mut value = Vec::with_capacity(Location::ENCODED_LEN);
        location.encode_into(&mut value);
        self.oplog
            .insert(key, value)
            .map_err(|e| Error::storage("append log", e))?;
        Ok(())
    }

    /// One operation-log item: its sequence number and entries, read from the log files.
    fn log_item(
        &self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Result<(u64, Vec<(PointId, Record)>)> {
        let (k, v) = item.map_err(|e| Error::storage("read log", e))?;
        let seq = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| Error::internal("bad log key"))?,
        );
        let corrupt = || Error::internal(format!("log entry {seq} is corrupt"));
        let location = Location::decode(&v).ok_or_else(corrupt)?;
        let entries = decode_entry(&self.log.read(&location)?).ok_or_else(corrupt)?;
        Ok((seq, entries))
    }

    /// Rewrites the live vectors into a new vector file when dead bytes (left by updates and
    /// deletes) outweigh live ones by more than `COMPACTION_SLACK_BYTES`, or when records still hold their vector
    /// inline (older data dirs); deletes vector files no record points into. Runs at open,
    /// before any writer. Each rewritten batch of records is fsynced after the vectors it points
    /// at, so a crash midway leaves every record pointing at durable bytes (old or new file);
    /// the next open finishes the job.
    fn compact_vectors(&self) -> Result<()> {
        let (mut live_bytes, mut inline, mut referenced) = (0u64, 0u64, Vec::new());
        for item in self.points.iter() {
            let (_, v) = item.map_err(|e| Error::storage("scan points", e))?;
            match decode_stored(&v) {
                Some((_, Some(location))) => {
                    live_bytes += u64::from(location.len);
                    if !referenced.contains(&location.generation) {
                        referenced.push(location.generation);
                    }
                }
                Some((record, None)) if record.vector.is_some() => inline += 1,
                _ => {}
            }
        }
        self.vectors
            .remove_generations(|g| referenced.contains(&g))?;
        let total = self.vectors.total_bytes();
        let dead = total.saturating_sub(live_bytes);
        if inline == 0 && dead <= live_bytes + COMPACTION_SLACK_BYTES {
            return Ok(());
        }
        tracing::info!(
            live_bytes,
            dead_bytes = dead,
            inline_records = inline,
            "compacting vector files"
        );
        self.vectors.start_generation()?;
        let mut after: Option<sled::IVec> = None;
        loop {
            let range = match &after {
                Some(k) => self.points.range::<&[u8], _>((
                    std::ops::Bound::Excluded(k.as_ref()),
                    std::ops::Bound::Unbounded,
                )),
                None => self.points.iter(),
            };
            let (mut examined, mut records) = (0, Vec::new());
            for item in range.take(COMPACTION_BATCH) {
                let (k, v) = item.map_err(|e| Error::storage("scan points", e))?;
                examined += 1;
                let record = self.resolve(&k, &v)?;
                if record.vector.is_some() {
                    records.push((k.clone(), record));
                }
                after = Some(k);
            }
            let batch = self.points_batch(&records)?;
            self.vectors.sync()?;
            self.points
                .apply_batch(batch)
                .map_err(|e| Error::storage("rewrite points", e))?;
            if examined < COMPACTION_BATCH {
                break;
            }
        }
        self.flush()?;
        self.vectors.remove_generations(|_| false)?;
        tracing::info!(bytes = self.vectors.total_bytes(), "vector files compacted");
        Ok(())
    }

    /// The record stored under `key`, with its vector read from the vector files.
    fn resolve(&self, key: &[u8], value: &[u8]) -> Result<Record> {
        let corrupt = || {
            let id = PointId::from_bytes(key).map_or_else(|| "?".to_string(), |id| id.to_string());
            Error::internal(format!("record of {id} is corrupt"))
        };
        let (mut record, location) = decode_stored(value).ok_or_else(corrupt)?;
        if let Some(location) = location {
            record.vector = Some(vector_from_bytes(&self.vectors.read(&location)?));
        }
        Ok(record)
    }

    /// The collection config this data dir was created with, if any.
    pub fn stored_config(&self) -> Result<Option<CollectionConfig>> {
        let Some(bytes) = self
            .meta
            .get(CONFIG_KEY)
            .map_err(|e| Error::storage("read config", e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::internal(format!("stored collection config is unreadable: {e}")))
    }

    pub fn store_config(&self, config: &CollectionConfig) -> Result<()> {
        let bytes = serde_json::to_vec(config).map_err(|e| Error::internal(e.to_string()))?;
        self.meta
            .insert(CONFIG_KEY, bytes)
            .map_err(|e| Error::storage("write config", e))?;
        self.flush()
    }

    /// Writes one batch: its log entry, then the records that won last-writer-wins and the
    /// applied sequence. Not durable until `flush`.
    pub fn write(&self, seq: u64, log_entry: &[u8], winners: &[(PointId, Record)]) -> Result<()> {
        self.append_log_entry(&seq.to_be_bytes(), log_entry)?;
        self.apply(seq, winners)
    }

    /// Writes winning records and marks `seq` applied (also used to replay the log on start).
    pub fn apply(&self, seq: u64, winners: &[(PointId, Record)]) -> Result<()> {
        let records: Vec<(Vec<u8>, &Record)> =
            winners.iter().map(|(id, r)| (id.to_bytes(), r)).collect();
        let batch = self.points_batch(&records)?;
        self.points
            .apply_batch(batch)
            .map_err(|e| Error::storage("write points", e))?;
        self.meta
            .insert(APPLIED_SEQ_KEY, &seq.to_be_bytes())
            .map_err(|e| Error::storage("write applied sequence", e))?;
        Ok(())
    }

    /// A sled batch that stores `records` under their keys, their vectors appended to the
    /// vector files (written, not yet synced).
    fn points_batch<K: AsRef<[u8]>, R: std::borrow::Borrow<Record>>(
        &self,
        records: &[(K, R)],
    ) -> Result<sled::Batch> {
        let vectors: Vec<Vec<u8>> = records
            .iter()
            .filter_map(|(_, r)| r.borrow().vector.as_deref().map(vector_bytes))
            .collect();
        let mut locations = self.vectors.append(&vectors)?.into_iter();
        let mut batch = sled::Batch::default();
        for (key, record) in records {
            let record = record.borrow();
            let location = record.vector.as_ref().and_then(|_| locations.next());
            batch.insert(key.as_ref(), encode_stored(record, location));
        }
        Ok(batch)
    }

    /// Makes every write so far durable (fsync): the vector files first, so that no durable
    /// record points at bytes that are not.
    pub fn flush(&self) -> Result<()> {
        self.vectors.sync()?;
        self.log.sync()?;
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| Error::storage("fsync", e))
    }

    pub fn applied_seq(&self) -> Result<u64> {
        let v = self
            .meta
            .get(APPLIED_SEQ_KEY)
            .map_err(|e| Error::storage("read applied sequence", e))?;
        Ok(v.and_then(|b| b.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Highest sequence number in the operation log (0 when empty).
    pub fn last_log_seq(&self) -> Result<u64> {
        let last = self
            .oplog
            .last()
            .map_err(|e| Error::storage("read log", e))?;
        Ok(last
            .and_then(|(k, _)| k.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Log entries with sequence greater than `after`, in order.
    pub fn log_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<(PointId, Record)>)>> + '_ {
        self.oplog
            .range((after + 1).to_be_bytes()..)
            .map(move |item| self.log_item(item))
    }

    /// Drops log entries at or below `seq` (they are already applied to the points), and
    /// the log files that only they pointed into.
    pub fn trim_log_through(&self, seq: u64) -> Result<()> {
        for key in self.oplog.range(..=seq.to_be_bytes()).keys() {
            let key = key.map_err(|e| Error::storage("trim log", e))?;
            self.oplog
                .remove(key)
                .map_err(|e| Error::storage("trim log", e))?;
        }
        let first = self
            .oplog
            .first()
            .map_err(|e| Error::storage("read log", e))?
            .and_then(|(_, v)| Location::decode(&v));
        match first {
            Some(first) => self.log.remove_generations(|g| g >= first.generation),
            None => self.log.remove_generations(|_| false),
        }
    }

    /// A page of the operation log for a catching-up peer: records with a version above
    /// `after_version` from the entries after `after_sequence`, whole entries, until at least
    /// `max` records. With `after_sequence` 0 the start is found by scanning back from the
    /// newest entry to the first one no newer than `after_version`, so only the log's tail is
    /// read (entries are close to version order: versions come from router clocks).
    pub fn read_log_page(
        &self,
        after_version: u64,
        after_sequence: u64,
        max: usize,
    ) -> Result<LogPage> {
        let first_retained = self
            .oplog
            .first()
            .map_err(|e| Error::storage("read log", e))?
            .and_then(|(k, _)| k.as_ref().try_into().ok())
            .map(u64::from_be_bytes);
        let Some(first_retained) = first_retained else {
            return Ok(LogPage {
                next_sequence: after_sequence,
                ..LogPage::default()
            });
        };
        let (start, truncated) = if after_sequence > 0 {
            (after_sequence, first_retained > after_sequence + 1)
        } else {
            let mut start = None;
            for item in self.oplog.iter().rev() {
                let (seq, entries) = self.log_item(item)?;
                if entries.iter().all(|(_, r)| r.version <= after_version) {
                    start = Some(seq);
                    break;
                }
            }
            match start {
                Some(seq) => (seq, false),
                None => (0, first_retained > 1),
            }
        };
        let mut page = LogPage {
            next_sequence: start,
            truncated,
            ..LogPage::default()
        };
        for item in self.log_after(start) {
            if page.records.len() >= max {
                page.more = true;
                break;
            }
            let (seq, entries) = item?;
            page.records.extend(
                entries
                    .into_iter()
                    .filter(|(_, r)| r.version > after_version),
            );
            page.next_sequence = seq;
        }
        Ok(page)
    }

    /// Removes the stored records (points and tombstones) of `ids` outright, leaving no
    /// tombstone: their partition left this replica. Not durable until `flush`.
    pub fn remove(&self, ids: &[PointId]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.to_bytes());
        }
        self.points
            .apply_batch(batch)
            .map_err(|e| Error::storage("remove points", e))
    }

    pub fn get(&self, id: &PointId) -> Result<Option<Record>> {
        let key = id.to_bytes();
        let bytes = self
            .points
            .get(&key)
            .map_err(|e| Error::storage("read point", e))?;
        bytes.map(|b| self.resolve(&key, &b)).transpose()
    }

    /// Every stored record, live and tombstone.
    pub fn scan(&self) -> impl Iterator<Item = Result<(PointId, Record)>> + '_ {
        self.points.iter().map(|item| {
            let (k, v) = item.map_err(|e| Error::storage("scan points", e))?;
            let id = PointId::from_bytes(&k).ok_or_else(|| Error::internal("bad point key"))?;
            Ok((id, self.resolve(&k, &v)?))
        })
    }

    /// A page of stored records (live and tombstone) in key order after the key `after`
    /// (empty: from the first), keeping those whose key `wanted` accepts, until `max` are
    /// collected.
    pub fn scan_page(
        &self,
        after: &[u8],
        max: usize,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<ScanPage> {
        use std::ops::Bound;
        let mut records = Vec::new();
        let mut last = after.to_vec();
        let start = if after.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after.to_vec())
        };
        for item in self.points.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if records.len() >= max {
                return Ok(ScanPage {
                    records,
                    next_after: last,
                    done: false,
                });
            }
            let (k, v) = item.map_err(|e| Error::storage("scan points", e))?;
            last = k.to_vec();
            if !wanted(&k) {
                continue;
            }
            let id = PointId::from_bytes(&k).ok_or_else(|| Error::internal("bad point key"))?;
            records.push((id, self.resolve(&k, &v)?));
        }
        Ok(ScanPage {
            records,
            next_after: last,
            done: true,
        })
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.vectors.total_bytes() + self.log.total_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_log_entries_round_trip() {
        let live = Record {
            version: 7,
            vector: Some(vec![0.5, -1.0]),
            payload: br#"{"a":1}"#.to_vec(),
        };
        let tomb = Record {
            version: 9,
            vector: None,
            payload: vec![],
        };
        assert_eq!(decode_record(&encode_record(&live)), Some(live.clone()));
        assert_eq!(decode_record(&encode_record(&tomb)), Some(tomb.clone()));
        let entry = vec![(PointId::Num(1), live), (PointId::Str("x".into()), tomb)];
        assert_eq!(decode_entry(&encode_entry(&entry)), Some(entry));
    }

    #[test]
    fn scan_pages_cover_every_wanted_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 1 << 20).unwrap();
        let winners: Vec<(PointId, Record)> = (0..25u64)
            .map(|i| {
                let record = Record {
                    version: i + 1,
                    vector: (i % 5 != 0).then(|| vec![i as f32]),
                    payload: b"{}".to_vec(),
                };
                (PointId::Num(i), record)
            })
            .collect();
        storage.apply(1, &winners).unwrap();
        let even = |k: &[u8]| k.last().is_some_and(|b| b % 2 == 0);
        let (mut seen, mut after) = (Vec::new(), Vec::new());
        loop {
            let page = storage.scan_page(&after, 4, even).unwrap();
            assert!(page.records.len() <= 4);
            seen.extend(page.records);
            after = page.next_after;
            if page.done {
                break;
            }
        }
        let ids: Vec<PointId> = seen.iter().map(|(id, _)| id.clone()).collect();
        let expected: Vec<PointId> = (0..25u64)
            .filter(|i| i % 2 == 0)
            .map(PointId::Num)
            .collect();
        assert_eq!(ids, expected);
        assert!(
            seen.iter().any(|(_, r)| r.vector.is_none()),
            "tombstones are copied too"
        );
    }

    #[test]
    fn log_pages_start_at_the_version_watermark_and_continue_by_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=10u64 {
            let rec = Record {
                version: seq * 100,
                vector: Some(vec![1.0]),
                payload: b"{}".to_vec(),
            };
            let entry = vec![(PointId::Num(seq), rec)];
            s.write(seq, &encode_entry(&entry), &entry).unwrap();
        }
        let page = s.read_log_page(700, 0, 2).unwrap();
        let ids: Vec<PointId> = page.records.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, vec![PointId::Num(8), PointId::Num(9)]);
        assert!(page.more);
        let next = s.read_log_page(700, page.next_sequence, 2).unwrap();
        assert_eq!(next.records.len(), 1);
        assert!(!next.more && !next.truncated);
        s.trim_log_through(5).unwrap();
        assert!(s.read_log_page(0, 2, 100).unwrap().truncated);
    }

    #[test]
    fn written_batches_survive_reopen_and_the_log_can_be_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Record {
            version: 1,
            vector: Some(vec![1.0]),
            payload: b"{}".to_vec(),
        };
        {
            let s = Storage::open(dir.path(), 1 << 20).unwrap();
            for seq in 1..=3 {
                let entry = vec![(PointId::Num(seq), rec.clone())];
                s.write(seq, &encode_entry(&entry), &entry).unwrap();
            }
            s.flush().unwrap();
        }
        let s = Storage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.applied_seq().unwrap(), 3);
        assert_eq!(s.scan().count(), 3);
        s.trim_log_through(2).unwrap();
        let left: Vec<u64> = s.log_after(0).map(|e| e.unwrap().0).collect();
        assert_eq!(left, vec![3]);
    }

    fn files(dir: &Path, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(kind))
            .collect();
        names.sort();
        names
    }

    fn point(version: u64, value: f32, dims: usize) -> Record {
        Record {
            version,
            vector: Some(vec![value; dims]),
            payload: br#"{"v":1}"#.to_vec(),
        }
    }

    #[test]
    fn a_data_dir_with_vectors_and_log_inside_sled_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let live = point(3, 0.25, 4);
        let tomb = Record {
            version: 4,
            vector: None,
            payload: vec![],
        };
        {
            // The layout written before vector and log files existed.
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let points = db.open_tree("points").unwrap();
            points
                .insert(PointId::Num(1).to_bytes(), encode_record(&live))
                .unwrap();
            points
                .insert(PointId::Num(2).to_bytes(), encode_record(&tomb))
                .unwrap();
            let entry = vec![
                (PointId::Num(1), live.clone()),
                (PointId::Num(2), tomb.clone()),
            ];
            db.open_tree("oplog")
                .unwrap()
                .insert(7u64.to_be_bytes(), encode_entry(&entry))
                .unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(APPLIED_SEQ_KEY, &7u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        for _ in 0..2 {
            let s = Storage::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(s.get(&PointId::Num(1)).unwrap(), Some(live.clone()));
            assert_eq!(s.get(&PointId::Num(2)).unwrap(), Some(tomb.clone()));
            let log: Vec<(u64, Vec<(PointId, Record)>)> =
                s.log_after(0).map(|e| e.unwrap()).collect();
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].0, 7);
            assert_eq!(log[0].1[0].1, live);
            assert_eq!(s.applied_seq().unwrap(), 7);
            let raw = s.points.get(PointId::Num(1).to_bytes()).unwrap().unwrap();
            assert_eq!(raw[8], IN_VECTOR_FILE, "the vector moved out of sled");
        }
    }

    #[test]
    fn dead_vectors_are_compacted_away_on_open_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(dir.path(), 1 << 20).unwrap();
            // 3 ids rewritten 40 times with 1 KiB vectors: ~117 KiB dead, 3 KiB live.
            for round in 0..40u64 {
                let winners: Vec<(PointId, Record)> = (0..3u64)
                    .map(|i| {
                        (
                            PointId::Num(i),
                            point(round + 1, (round * 3 + i) as f32, 256),
                        )
                    })
                    .collect();
                s.apply(round + 1, &winners).unwrap();
            }
            s.flush().unwrap();
            assert_eq!(files(dir.path(), "vectors"), vec!["vectors-00000000.dat"]);
        }
        let s = Storage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(files(dir.path(), "vectors"), vec!["vectors-00000001.dat"]);
        assert_eq!(s.vectors.total_bytes(), 3 * 256 * 4);
        for i in 0..3u64 {
            let got = s.get(&PointId::Num(i)).unwrap().unwrap();
            assert_eq!(got, point(40, (39 * 3 + i) as f32, 256));
        }
        // Nothing left to compact: a second open keeps the same file.
        drop(s);
        let _s = Storage::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(files(dir.path(), "vectors"), vec!["vectors-00000001.dat"]);
    }

    #[test]
    fn the_log_rotates_files_and_trimming_deletes_the_ones_no_entry_needs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=40u64 {
            let entry = vec![(PointId::Num(seq), point(seq, 1.0, 1024))];
            s.write(seq, &encode_entry(&entry), &entry).unwrap();
        }
        s.flush().unwrap();
        let before = files(dir.path(), "oplog");
        assert!(
            before.len() >= 3,
            "4 KiB entries rotate past 64 KiB: {before:?}"
        );
        s.trim_log_through(35).unwrap();
        let after = files(dir.path(), "oplog");
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        let left: Vec<u64> = s.log_after(0).map(|e| e.unwrap().0).collect();
        assert_eq!(left, (36..=40).collect::<Vec<_>>());
        s.trim_log_through(40).unwrap();
        assert_eq!(
            files(dir.path(), "oplog").len(),
            1,
            "only the file appended to stays"
        );
        assert_eq!(
            s.get(&PointId::Num(40)).unwrap(),
            Some(point(40, 1.0, 1024))
        );
    }
}
