//! Durable state of a shard in sled (the only module that imports sled): the current record of
//! every point (live or tombstone), the operation log that replicas catch up from, and metadata.
//! Durability comes from `flush`, which fsyncs; the shard's committer calls it once per group.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{CollectionConfig, PointId};

const CONFIG_KEY: &[u8] = b"collection";
const APPLIED_SEQ_KEY: &[u8] = b"applied_seq";

/// One point's stored state at some version. `vector: None` is a tombstone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub version: u64,
    pub vector: Option<Vec<f32>>,
    /// Payload as JSON object text.
    pub payload: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let dims = self.vector.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(13 + dims * 4 + self.payload.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(u8::from(self.vector.is_some()));
        out.extend_from_slice(&(dims as u32).to_le_bytes());
        for v in self.vector.iter().flatten() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let version = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let live = *bytes.get(8)? == 1;
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
}

/// One operation-log entry: every (id, record) a write batch carried, winners or not.
pub fn encode_entry(entries: &[(PointId, Record)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, record) in entries {
        let id = id.to_bytes();
        let record = record.encode();
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
        let record = Record::decode(&take(&mut bytes)?)?;
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

/// One operation-log item from sled: its sequence number and entries.
fn decode_log_item(
    item: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(u64, Vec<(PointId, Record)>)> {
    let (k, v) = item.map_err(|e| Error::storage("read log", e))?;
    let seq = u64::from_be_bytes(
        k.as_ref()
            .try_into()
            .map_err(|_| Error::internal("bad log key"))?,
    );
    let entries =
        decode_entry(&v).ok_or_else(|| Error::internal(format!("log entry {seq} is corrupt")))?;
    Ok((seq, entries))
}

pub struct Storage {
    db: sled::Db,
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
        Ok(Storage {
            points: tree("points")?,
            oplog: tree("oplog")?,
            meta: tree("meta")?,
            db,
        })
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
        self.oplog
            .insert(seq.to_be_bytes(), log_entry)
            .map_err(|e| Error::storage("append log", e))?;
        self.apply(seq, winners)
    }

    /// Writes winning records and marks `seq` applied (also used to replay the log on start).
    pub fn apply(&self, seq: u64, winners: &[(PointId, Record)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (id, record) in winners {
            batch.insert(id.to_bytes(), record.encode());
        }
        self.points
            .apply_batch(batch)
            .map_err(|e| Error::storage("write points", e))?;
        self.meta
            .insert(APPLIED_SEQ_KEY, &seq.to_be_bytes())
            .map_err(|e| Error::storage("write applied sequence", e))?;
        Ok(())
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<()> {
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
            .map(decode_log_item)
    }

    /// Drops log entries at or below `seq` (they are already applied to the points).
    pub fn trim_log_through(&self, seq: u64) -> Result<()> {
        for key in self.oplog.range(..=seq.to_be_bytes()).keys() {
            let key = key.map_err(|e| Error::storage("trim log", e))?;
            self.oplog
                .remove(key)
                .map_err(|e| Error::storage("trim log", e))?;
        }
        Ok(())
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
                let (seq, entries) = decode_log_item(item)?;
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

    pub fn get(&self, id: &PointId) -> Result<Option<Record>> {
        let bytes = self
            .points
            .get(id.to_bytes())
            .map_err(|e| Error::storage("read point", e))?;
        Ok(bytes.and_then(|b| Record::decode(&b)))
    }

    /// Every stored record, live and tombstone.
    pub fn scan(&self) -> impl Iterator<Item = Result<(PointId, Record)>> + '_ {
        self.points.iter().map(|item| {
            let (k, v) = item.map_err(|e| Error::storage("scan points", e))?;
            let id = PointId::from_bytes(&k).ok_or_else(|| Error::internal("bad point key"))?;
            let record = Record::decode(&v)
                .ok_or_else(|| Error::internal(format!("record of {id} is corrupt")))?;
            Ok((id, record))
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
            let record = Record::decode(&v)
                .ok_or_else(|| Error::internal(format!("record of {id} is corrupt")))?;
            records.push((id, record));
        }
        Ok(ScanPage {
            records,
            next_after: last,
            done: true,
        })
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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
        assert_eq!(Record::decode(&live.encode()), Some(live.clone()));
        assert_eq!(Record::decode(&tomb.encode()), Some(tomb.clone()));
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
}
