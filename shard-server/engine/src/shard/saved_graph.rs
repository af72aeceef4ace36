//! The HNSW graph saved next to the shard's data, so that a restart loads it instead of
//! inserting every vector again (on the benchmark's 116,659 × 384 i8 shard: about a second
//! against ~25 s on 2 cores; for millions of vectors the difference is minutes to hours).
//!
//! Two files in the data dir: `graph.usearch` (usearch's own format: the graph and its
//! quantized vectors) and `graph.keys` (what each graph key held: the point id and the
//! version of the record whose vector it is, plus the index parameters and the graph file's
//! length and checksum). Both are written to temporary names, fsynced and renamed, the keys
//! file last: it is the commit point, and a graph file that does not match the checksum it
//! records is ignored (the graph is then rebuilt from the stored vectors, as with no save).
//!
//! Graph keys are the shard's slots, which are numbered afresh at every start (slots follow
//! the scan of the stored points). A loaded graph's keys are therefore renamed to the new
//! slots of the same (id, version); a key whose point was updated or deleted after the save
//! is removed, and points written after the save are indexed as usual. The saved graph can
//! only be behind the durable data, never ahead of it: versions decide what is reused.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::index::VectorIndex;
use crate::shard::state::Entry;
use vecshard_core::error::{Error, Result};
use vecshard_core::model::{CollectionConfig, Metric, PointId, Quantization};

const GRAPH_FILE: &str = "graph.usearch";
const KEYS_FILE: &str = "graph.keys";
const MAGIC: &[u8; 8] = b"VSGKEYS1";

/// What the graph was built with; a saved graph is reused only under the same parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphParams {
    pub dimension: usize,
    pub metric: Metric,
    pub quantization: Quantization,
    pub m: usize,
    pub ef_construction: usize,
}

impl GraphParams {
    pub fn of(config: &CollectionConfig) -> Self {
        GraphParams {
            dimension: config.dimension,
            metric: config.metric,
            quantization: config.quantization,
            m: config.hnsw.m,
            ef_construction: config.hnsw.ef_construction,
        }
    }
}

/// One key of a saved graph: the point and version whose vector it holds (`version` 0: the
/// point had already been replaced or deleted when the graph was saved).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedKey {
    pub key: u64,
    pub id: PointId,
    pub version: u64,
}

/// What to do with a loaded graph's keys.
#[derive(Debug, Default, PartialEq)]
pub struct Reuse {
    /// `(saved key, slot now)`: the same vector, to be renamed.
    pub moves: Vec<(u64, u64)>,
    /// Saved keys whose point has changed since: removed from the graph.
    pub stale: Vec<u64>,
}

/// Matches saved keys with the points as loaded: a key is reused when its point's current
/// record has the saved version (then its vector is the one in the graph), else it is stale.
pub fn plan_reuse(saved: &[SavedKey], current: impl Fn(&PointId) -> Option<Entry>) -> Reuse {
    let mut reuse = Reuse::default();
    let mut taken = roaring::RoaringBitmap::new();
    for k in saved {
        let slot = current(&k.id)
            .filter(|e| k.version != 0 && e.version == k.version)
            .and_then(|e| e.slot);
        match slot {
            Some(slot) if taken.insert(slot) => reuse.moves.push((k.key, u64::from(slot))),
            _ => reuse.stale.push(k.key),
        }
    }
    reuse
}

fn encode_keys(params: &GraphParams, graph_len: u64, graph_sum: u64, keys: &[SavedKey]) -> Vec<u8> {
    let params = serde_json::to_vec(params).expect("graph parameters serialise");
    let mut out = Vec::with_capacity(64 + params.len() + keys.len() * 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(params.len() as u32).to_le_bytes());
    out.extend_from_slice(&params);
    out.extend_from_slice(&graph_len.to_le_bytes());
    out.extend_from_slice(&graph_sum.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        let id = k.id.to_bytes();
        out.extend_from_slice(&k.key.to_le_bytes());
        out.extend_from_slice(&k.version.to_le_bytes());
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(&id);
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A decoded keys file.
#[derive(Debug, PartialEq)]
struct KeysFile {
    params: GraphParams,
    graph_len: u64,
    graph_sum: u64,
    keys: Vec<SavedKey>,
}

fn decode_keys(bytes: &[u8]) -> std::result::Result<KeysFile, String> {
    let body_len = bytes
        .len()
        .checked_sub(8)
        .ok_or("the keys file is truncated")?;
    let (body, sum) = bytes.split_at(body_len);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes")) {
        return Err("the keys file fails its checksum".into());
    }
    let mut r = body;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        if r.len() < n {
            return Err("the keys file is truncated".into());
        }
        let (head, rest) = r.split_at(n);
        r = rest;
        Ok(head)
    };
    if take(8)? != MAGIC {
        return Err("the keys file has an unknown format".into());
    }
    let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize;
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let params_len = u32_at(take(4)?);
    let params = serde_json::from_slice(take(params_len)?)
        .map_err(|e| format!("the keys file's parameters are unreadable: {e}"))?;
    let graph_len = u64_at(take(8)?);
    let graph_sum = u64_at(take(8)?);
    let count = u64_at(take(8)?);
    let mut keys = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        let key = u64_at(take(8)?);
        let version = u64_at(take(8)?);
        let id_len = u32_at(take(4)?);
        let id = PointId::from_bytes(take(id_len)?).ok_or("the keys file holds a bad id")?;
        keys.push(SavedKey { key, id, version });
    }
    Ok(KeysFile {
        params,
        graph_len,
        graph_sum,
        keys,
    })
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

/// xxh3 of a whole file, read in 1 MiB pieces, and its length.
fn file_checksum(path: &Path) -> Result<(u64, u64)> {
    let mut file = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| io("cannot read", path, e))?;
        if n == 0 {
            return Ok((hasher.digest(), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot fsync", path, e))
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// Saves `index` with the keys it holds into `dir` (see the module comment for the order).
/// The caller keeps the graph unchanged until this returns. Returns the graph file's size.
pub fn save(
    dir: &Path,
    params: &GraphParams,
    index: &VectorIndex,
    keys: &[SavedKey],
) -> Result<u64> {
    let (graph_tmp, keys_tmp) = (tmp_path(dir, GRAPH_FILE), tmp_path(dir, KEYS_FILE));
    index.save(&graph_tmp)?;
    sync_file(&graph_tmp)?;
    let (graph_sum, graph_len) = file_checksum(&graph_tmp)?;
    let mut file = File::create(&keys_tmp).map_err(|e| io("cannot create", &keys_tmp, e))?;
    file.write_all(&encode_keys(params, graph_len, graph_sum, keys))
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cannot write", &keys_tmp, e))?;
    for (from, to) in [(graph_tmp, GRAPH_FILE), (keys_tmp, KEYS_FILE)] {
        let to = dir.join(to);
        std::fs::rename(&from, &to).map_err(|e| io("cannot rename to", &to, e))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot fsync", dir, e))?;
    Ok(graph_len)
}

/// Loads the graph saved in `dir` into `index` and returns its keys, when there is one that
/// was built with `params` and is intact; `Ok(None)` (with the reason logged) otherwise, in
/// which case `index` is left empty.
pub fn load(
    dir: &Path,
    params: &GraphParams,
    index: &VectorIndex,
) -> Result<Option<Vec<SavedKey>>> {
    // Left by a save that a crash interrupted; the next save would overwrite them anyway.
    for name in [GRAPH_FILE, KEYS_FILE] {
        let _ = std::fs::remove_file(tmp_path(dir, name));
    }
    let keys_path = dir.join(KEYS_FILE);
    let bytes = match std::fs::read(&keys_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &keys_path, e)),
    };
    let skip = |reason: String| {
        tracing::warn!(reason, "not using the saved graph; rebuilding it");
        Ok(None)
    };
    let file = match decode_keys(&bytes) {
        Ok(file) => file,
        Err(reason) => return skip(reason),
    };
    if file.params != *params {
        return skip(format!(
            "it was built with {:?}, the collection now asks for {params:?}",
            file.params
        ));
    }
    let graph_path = dir.join(GRAPH_FILE);
    let (sum, len) = match file_checksum(&graph_path) {
        Ok(found) => found,
        Err(e) => return skip(e.to_string()),
    };
    if (sum, len) != (file.graph_sum, file.graph_len) {
        return skip(format!(
            "{GRAPH_FILE} ({len} bytes) does not match the checksum its keys file records"
        ));
    }
    if let Err(e) = index.load(&graph_path) {
        return skip(e.to_string());
    }
    Ok(Some(file.keys))
}

/// Links (or, across file systems, copies) the saved graph of `dir` into `dest` as
/// `graph.usearch` and `graph.keys`, when there is one that is intact (a save can replace the
/// files between the two links: the copy is then checked against the checksum its keys file
/// records, and refused). Returns whether `dest` holds an intact pair.
pub fn copy_intact(dir: &Path, dest: &Path) -> Result<bool> {
    for name in [GRAPH_FILE, KEYS_FILE] {
        let (from, to) = (dir.join(name), dest.join(name));
        let _ = std::fs::remove_file(&to);
        match std::fs::hard_link(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(_) => {
                std::fs::copy(&from, &to).map_err(|e| io("cannot copy", &from, e))?;
            }
        }
    }
    let keys_path = dest.join(KEYS_FILE);
    let bytes = std::fs::read(&keys_path).map_err(|e| io("cannot read", &keys_path, e))?;
    let Ok(file) = decode_keys(&bytes) else {
        return Ok(false);
    };
    let (sum, len) = file_checksum(&dest.join(GRAPH_FILE))?;
    Ok((sum, len) == (file.graph_sum, file.graph_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GraphParams {
        GraphParams {
            dimension: 4,
            metric: Metric::Cosine,
            quantization: Quantization::I8,
            m: 16,
            ef_construction: 128,
        }
    }

    fn key(key: u64, id: u64, version: u64) -> SavedKey {
        SavedKey {
            key,
            id: PointId::Num(id),
            version,
        }
    }

    #[test]
    fn keys_round_trip_and_any_flipped_byte_is_caught() {
        let keys = vec![
            key(0, 7, 3),
            SavedKey {
                key: 9,
                id: PointId::Str("doc-9".into()),
                version: 12,
            },
            key(4, 1, 0),
        ];
        let bytes = encode_keys(&params(), 1234, 99, &keys);
        let decoded = decode_keys(&bytes).unwrap();
        assert_eq!(
            decoded,
            KeysFile {
                params: params(),
                graph_len: 1234,
                graph_sum: 99,
                keys
            }
        );
        for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode_keys(&bad).is_err(), "byte {i}");
        }
        assert!(decode_keys(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_keys(&[]).is_err());
    }

    #[test]
    fn reuse_keeps_keys_whose_version_is_current_and_drops_the_rest() {
        let current = |id: &PointId| match id {
            PointId::Num(1) => Some(Entry {
                version: 5,
                slot: Some(10),
            }),
            // Updated after the save: the graph holds the old vector.
            PointId::Num(2) => Some(Entry {
                version: 8,
                slot: Some(11),
            }),
            // Deleted after the save.
            PointId::Num(3) => Some(Entry {
                version: 9,
                slot: None,
            }),
            _ => None,
        };
        let saved = [
            key(0, 1, 5),
            key(1, 2, 6),
            key(2, 3, 4),
            key(3, 4, 1), // unknown now (e.g. its partition moved away)
            key(4, 2, 0), // already replaced when saved
        ];
        assert_eq!(
            plan_reuse(&saved, current),
            Reuse {
                moves: vec![(0, 10)],
                stale: vec![1, 2, 3, 4],
            }
        );
    }

    #[test]
    fn a_slot_is_given_to_one_saved_key_only() {
        let current = |_: &PointId| {
            Some(Entry {
                version: 2,
                slot: Some(0),
            })
        };
        let saved = [key(5, 1, 2), key(6, 1, 2)];
        assert_eq!(
            plan_reuse(&saved, current),
            Reuse {
                moves: vec![(5, 0)],
                stale: vec![6],
            }
        );
    }
}
