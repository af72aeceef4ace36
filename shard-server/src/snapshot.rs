//! A shard's side of backups: writing its snapshot (`CreateSnapshot`) and filling an empty data
//! directory from one before the shard opens (`--restore-from`). Layout, manifests and object
//! transfer are `vecshard-snapshot`'s.
//!
//! The cut: reading starts at committed sequence S0 (every acknowledged write is stored at or
//! below it); the stored records are read page by page while writes go on, then the log
//! entries after S0 up to the sequence S1 reached meanwhile are appended. Restoring the records
//! and then the log entries, last writer wins, yields exactly the replica's state at S1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vecshard_core::error::{Error, Result};
use vecshard_core::model::{unix_millis, CollectionConfig, PointId};
use vecshard_engine::restore::RestoreWriter;
use vecshard_engine::shard::Shard;
use vecshard_engine::storage::{decode_entry, encode_entry, Record};
use vecshard_proto::v1 as pb;
use vecshard_snapshot::catalog;
use vecshard_snapshot::manifest::{
    self, CollectionManifest, CollectionParams, ObjectEntry, PartitionEntry, ShardEntry,
    ShardManifest, FORMAT, GRAPH, GRAPH_KEYS, LOG, MANIFEST, RECORDS,
};
use vecshard_snapshot::objects::{self, frame, FrameReader, ObjectWriter};
use vecshard_snapshot::{Repository, StoreConfig};

/// Records per page read from storage and per frame written.
const PAGE: usize = 2_000;
/// How long a snapshot waits for the indexer to save a current graph.
const GRAPH_SAVE_WAIT: Duration = Duration::from_secs(120);

pub fn collection_params(config: &CollectionConfig, partitions: u32) -> CollectionParams {
    CollectionParams {
        name: config.name.clone(),
        dimension: config.dimension as u32,
        metric: config.metric.as_str().into(),
        partitions,
        quantization: config.quantization.as_str().into(),
        hnsw_m: config.hnsw.m as u32,
        hnsw_ef_construction: config.hnsw.ef_construction as u32,
    }
}

/// Live/tombstone state of each id the snapshot holds, for its partition fingerprints.
#[derive(Default)]
struct Fingerprints {
    versions: HashMap<Vec<u8>, (u64, bool)>,
}

impl Fingerprints {
    fn add(&mut self, records: &[(PointId, Record)]) {
        for (id, r) in records {
            let key = id.to_bytes();
            let newer = self.versions.get(&key).is_none_or(|(v, _)| r.version > *v);
            if newer {
                self.versions.insert(key, (r.version, r.vector.is_some()));
            }
        }
    }

    fn partitions(&self, n: u32) -> Vec<PartitionEntry> {
        vecshard_core::partitions::partition_stats(
            self.versions
                .iter()
                .filter(|(_, (_, live))| *live)
                .map(|(k, (v, _))| (k.as_slice(), *v)),
            n,
        )
        .iter()
        .map(PartitionEntry::from)
        .collect()
    }

    fn counts(&self) -> (u64, u64) {
        let live = self.versions.values().filter(|(_, l)| *l).count() as u64;
        (live, self.versions.len() as u64 - live)
    }
}

/// Writes this replica's snapshot under `<collection>/<id>/<shard>/` and returns its manifest.
pub async fn create(
    shard: &Arc<Shard>,
    request: pb::CreateSnapshotRequest,
) -> Result<pb::CreateSnapshotResponse> {
    manifest::check_snapshot_id(&request.snapshot_id)?;
    let store = request
        .store
        .as_ref()
        .map(StoreConfig::from)
        .ok_or_else(|| Error::invalid("store: required (where to write the snapshot)"))?;
    let repo = Repository::open(&store)?;
    let staging = shard
        .options()
        .data_dir
        .join("snapshot-staging")
        .join(&request.snapshot_id);
    std::fs::create_dir_all(&staging)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", staging.display())))?;
    let result = write(shard, &repo, &request, &staging).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn write(
    shard: &Arc<Shard>,
    repo: &Repository,
    request: &pb::CreateSnapshotRequest,
    staging: &Path,
) -> Result<pb::CreateSnapshotResponse> {
    let started = Instant::now();
    let started_at = unix_millis();
    let config = shard.config();
    let shard_name = shard.options().shard_name.clone();
    let partitions = match request.partition_count {
        0 => shard.options().partitions,
        n => n,
    };
    let id = request.snapshot_id.as_str();
    let object = |name: &str| repo.path(&[&config.name, id, &shard_name, name]);
    let ownership = shard.ownership();
    let lists = ownership.lists().clone();
    // A replica told its partitions snapshots only those it serves reads for: not the ones
    // still being copied in, nor those given away and awaiting their drop.
    let only: Option<(u32, Vec<u32>)> =
        (lists.map_version > 0).then(|| (lists.partitions, lists.readable.clone()));
    let readable = |records: Vec<(PointId, Record)>| -> Vec<(PointId, Record)> {
        match &only {
            None => records,
            Some(_) => records
                .into_iter()
                .filter(|(id, _)| ownership.can_read(id))
                .collect(),
        }
    };

    let s0 = shard.committed_sequence();
    let graph_saved = shard.save_graph_now(GRAPH_SAVE_WAIT).await;
    let graph = shard.copy_saved_graph(staging)?;
    if !graph_saved {
        tracing::warn!(
            graph,
            "no graph save finished in time; the snapshot carries the last saved graph, if any"
        );
    }

    let mut prints = Fingerprints::default();
    let mut records = ObjectWriter::create(repo, object(RECORDS), RECORDS);
    let mut after = Vec::new();
    loop {
        let page = match shard.scan(after, PAGE, only.clone()).await {
            Ok(page) => page,
            Err(e) => {
                records.abort().await;
                return Err(e);
            }
        };
        if !page.records.is_empty() {
            prints.add(&page.records);
            let mut out = Vec::new();
            frame(&encode_entry(&page.records), &mut out);
            if let Err(e) = records.write(&out).await {
                records.abort().await;
                return Err(e);
            }
        }
        if page.done {
            break;
        }
        after = page.next_after;
    }
    let records = records.finish().await?;

    // The log entries committed while the records were read.
    let s1 = shard.committed_sequence();
    let mut log = ObjectWriter::create(repo, object(LOG), LOG);
    let mut sequence = s0;
    while sequence < s1 {
        let page = match shard.read_log(0, sequence, PAGE).await {
            Ok(page) if page.truncated => {
                log.abort().await;
                return Err(Error::unavailable(format!(
                    "the operation log was trimmed past sequence {s0} while the snapshot read \
                     the records: raise --wal-retention or take the snapshot at a quieter time"
                )));
            }
            Ok(page) => page,
            Err(e) => {
                log.abort().await;
                return Err(e);
            }
        };
        let entries = readable(page.records);
        if !entries.is_empty() {
            prints.add(&entries);
            let mut out = Vec::new();
            frame(&encode_entry(&entries), &mut out);
            log.write(&out).await?;
        }
        if page.next_sequence <= sequence {
            break;
        }
        sequence = page.next_sequence;
        if !page.more {
            break;
        }
    }
    let log = log.finish().await?;

    let mut entries: Vec<ObjectEntry> = vec![records, log];
    if graph {
        for name in [GRAPH, GRAPH_KEYS] {
            entries
                .push(objects::upload_file(repo, object(name), name, &staging.join(name)).await?);
        }
    }
    let (points, tombstones) = prints.counts();
    let manifest = ShardManifest {
        format: FORMAT,
        snapshot_id: id.to_string(),
        shard: shard_name.clone(),
        collection: collection_params(config, partitions),
        sequence: sequence.max(s0),
        started_sequence: s0,
        map_version: lists.map_version,
        points,
        tombstones,
        graph,
        objects: entries,
        partitions: prints.partitions(partitions),
        started_at: manifest::rfc3339(started_at),
        finished_at: manifest::rfc3339(unix_millis()),
    };
    let bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::internal(format!("shard manifest: {e}")))?;
    let stored = objects::put_bytes(repo, &object(MANIFEST), MANIFEST, bytes.clone()).await?;
    tracing::info!(
        snapshot = id,
        location = %repo.url,
        points,
        tombstones,
        graph,
        bytes = manifest.objects.iter().map(|o| o.size).sum::<u64>(),
        ms = started.elapsed().as_millis() as u64,
        "shard snapshot written"
    );
    Ok(pb::CreateSnapshotResponse {
        manifest: bytes,
        manifest_sha256: stored.sha256,
        manifest_size: stored.size,
    })
}

/// What `--restore-from` asks for.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub store: StoreConfig,
    /// Collection whose snapshot to restore (default: this shard's collection).
    pub collection: Option<String>,
    /// Snapshot id or `latest`.
    pub snapshot: String,
    /// Snapshot shard to restore (default: this shard's name, or the shard at the same index
    /// `-N` of its name).
    pub shard: Option<String>,
}

/// Present in the data directory while a restore is writing it: a restore that a crash
/// interrupted starts over.
const RESTORING: &str = "RESTORING";

/// The snapshot shard this shard restores: the one named, the one with the same name, or the
/// one at the same index (`docs-1` restores `old-1`).
pub fn pick_shard<'a>(
    m: &'a CollectionManifest,
    asked: Option<&str>,
    mine: &str,
) -> Result<&'a ShardEntry> {
    if let Some(name) = asked {
        return m.shard(name);
    }
    if let Ok(entry) = m.shard(mine) {
        return Ok(entry);
    }
    let index = mine
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .or_else(|| mine.parse::<usize>().ok());
    let map: Option<vecshard_proto::shard_map::ShardMap> =
        serde_json::from_value(m.shard_map.clone()).ok();
    let by_index =
        index.and_then(|i| map.and_then(|map| map.shards.get(i).map(|s| s.name.clone())));
    match by_index {
        Some(name) => m.shard(&name),
        None => m.shard(mine),
    }
}

/// Fills `data_dir` from the snapshot when it holds no data yet; leaves a directory with data
/// alone (a restarted pod keeps what it has and catches up from its peers). Every object is
/// verified against its manifest before anything is written, and the written points against
/// the manifest's per-partition checksums before the shard serves them.
pub async fn restore_if_empty(
    request: &RestoreRequest,
    data_dir: &Path,
    config: &CollectionConfig,
    partitions: u32,
    shard_name: &str,
) -> Result<bool> {
    let marker = data_dir.join(RESTORING);
    if !marker.exists() && holds_data(data_dir) {
        tracing::info!(
            data_dir = %data_dir.display(),
            "the data directory holds data; not restoring from the snapshot"
        );
        return Ok(false);
    }
    if marker.exists() {
        tracing::warn!("a restore was interrupted; starting it over");
        clear_dir(data_dir)?;
    }
    std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&marker, b"restore in progress\n"))
        .map_err(|e| Error::internal(format!("cannot write {}: {e}", marker.display())))?;
    let started = Instant::now();
    let repo = Repository::open(&request.store)?;
    let collection = request.collection.as_deref().unwrap_or(&config.name);
    let id = catalog::resolve(&repo, collection, &request.snapshot).await?;
    let m = catalog::read_manifest(&repo, collection, &id).await?;
    check_compatible(&m.collection, config, partitions, &id)?;
    let entry = pick_shard(&m, request.shard.as_deref(), shard_name)?;
    let object = |name: &str| repo.path(&[collection, &id, &entry.name, name]);
    let sm: ShardManifest =
        objects::get_json(&repo, &object(MANIFEST), Some(&entry.manifest)).await?;
    manifest::check_format(sm.format, &format!("shard manifest of {}", entry.name))?;

    // Download and verify every object before writing anything.
    let download = data_dir.join("restore-download");
    std::fs::create_dir_all(&download)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", download.display())))?;
    for o in &sm.objects {
        objects::download_verified(&repo, &object(&o.name), o, &download.join(&o.name)).await?;
    }
    let verified_ms = started.elapsed().as_millis() as u64;

    let (dir, config_owned, sm_owned) = (data_dir.to_path_buf(), config.clone(), sm.clone());
    let restored = tokio::task::spawn_blocking(move || {
        write_records(
            &dir,
            &config_owned,
            &sm_owned,
            &dir.join("restore-download"),
        )
    })
    .await
    .map_err(|e| Error::internal(format!("restore task: {e}")))??;
    let want: Vec<PartitionEntry> = sm.partitions.clone();
    if restored != want {
        let first = want
            .iter()
            .zip(&restored)
            .find(|(a, b)| a != b)
            .map(|(a, _)| a.partition)
            .or_else(|| want.get(restored.len()).map(|p| p.partition))
            .unwrap_or(0);
        return Err(Error::invalid(format!(
            "restored shard {} does not match its manifest (partition {first} differs): the \
             snapshot's records and manifest disagree",
            entry.name
        )));
    }
    if sm.graph {
        for name in [GRAPH, GRAPH_KEYS] {
            std::fs::rename(download.join(name), data_dir.join(name))
                .map_err(|e| Error::internal(format!("cannot move {name} into place: {e}")))?;
        }
    }
    let _ = std::fs::remove_dir_all(&download);
    std::fs::remove_file(&marker)
        .map_err(|e| Error::internal(format!("cannot remove {}: {e}", marker.display())))?;
    let _ = std::fs::File::open(data_dir).and_then(|d| d.sync_all());
    tracing::info!(
        snapshot = %id,
        from_shard = %entry.name,
        points = sm.points,
        graph = sm.graph,
        verified_ms,
        ms = started.elapsed().as_millis() as u64,
        "restored from the snapshot"
    );
    Ok(true)
}

fn check_compatible(
    snap: &CollectionParams,
    config: &CollectionConfig,
    partitions: u32,
    id: &str,
) -> Result<()> {
    let mut wrong = Vec::new();
    if snap.dimension != config.dimension as u32 {
        wrong.push(format!(
            "dimension: the snapshot has {}, this collection {}",
            snap.dimension, config.dimension
        ));
    }
    if snap.metric != config.metric.as_str() {
        wrong.push(format!(
            "metric: the snapshot has {}, this collection {}",
            snap.metric,
            config.metric.as_str()
        ));
    }
    if snap.partitions != partitions {
        wrong.push(format!(
            "partitions: the snapshot has {}, this collection {partitions}",
            snap.partitions
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "snapshot {id} cannot be restored here: {}",
            wrong.join("; ")
        )))
    }
}

/// Writes the downloaded records and log into the data directory's storage; returns the
/// fingerprints of what it holds afterwards.
fn write_records(
    data_dir: &Path,
    config: &CollectionConfig,
    sm: &ShardManifest,
    download: &Path,
) -> Result<Vec<PartitionEntry>> {
    let writer = RestoreWriter::create(data_dir, config)?;
    let mut records = FrameReader::open(&download.join(RECORDS))?;
    while let Some(bytes) = records.next_frame()? {
        let page = decode_entry(&bytes)
            .ok_or_else(|| Error::invalid(format!("{RECORDS} holds an unreadable frame")))?;
        writer.write(&page)?;
    }
    let mut log = FrameReader::open(&download.join(LOG))?;
    while let Some(bytes) = log.next_frame()? {
        let page = decode_entry(&bytes)
            .ok_or_else(|| Error::invalid(format!("{LOG} holds an unreadable frame")))?;
        writer.apply_newer(page)?;
    }
    let restored = writer.finish(sm.collection.partitions)?;
    Ok(restored
        .partitions
        .iter()
        .map(PartitionEntry::from)
        .collect())
}

fn holds_data(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut entries| entries.any(|e| e.is_ok_and(|e| e.file_name() != "lost+found")))
        .unwrap_or(false)
}

/// Empties a data directory a restore had started to fill (a volume's `lost+found` stays).
fn clear_dir(dir: &Path) -> Result<()> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::internal(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "lost+found")
        .map(|e| e.path())
        .collect();
    for path in entries {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::internal(format!("cannot remove {}: {e}", path.display())))?;
    }
    Ok(())
}
