//! Large values of a shard, outside sled: append-only files `<kind>-<generation>.dat` in the
//! data dir, one kind per use (`vectors`: the vector of each stored point; `oplog`: the
//! operation-log entries). sled holds small records that point into them: a `Location`
//! (generation, offset, length, checksum).
//!
//! Why not in sled: sled 0.34 keeps values it has written or read resident well past its
//! cache capacity (large ones most of all), so vectors and log entries in sled kept one or two
//! extra copies of every vector in memory: ~200 MiB for 116k × 384 after a restart's scan,
//! and growing with every write batch's log entry. Read here with `pread`, they stay in the
//! kernel's page cache, which the kernel can evict.
//!
//! Durability: appends go to the OS at once (a `kill -9` loses none) and reach the disk on
//! `sync`, which the storage calls before it fsyncs sled, so a durable record never points at
//! bytes that are not. Every location carries an xxh3 checksum of the bytes it points at.
//!
//! Space: a file is never rewritten in place. New generations are started (the log rotates by
//! size; vectors are compacted into a new generation when dead bytes outweigh live ones) and
//! old ones deleted once nothing points into them.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};

use vecshard_core::error::{Error, Result};

/// Where a stored value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub generation: u32,
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    pub checksum: u64,
}

impl Location {
    pub const ENCODED_LEN: usize = 4 + 8 + 4 + 8;

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<Location> {
        Some(Location {
            generation: u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?),
            offset: u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?),
            len: u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?),
            checksum: u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?),
        })
    }
}

struct Appender {
    generation: u32,
    file: File,
    end: u64,
}

pub struct BlobFiles {
    dir: PathBuf,
    kind: &'static str,
    /// Every generation present, for reads.
    readers: RwLock<BTreeMap<u32, File>>,
    /// The newest generation: the only one appended to.
    appender: Mutex<Appender>,
}

fn file_name(kind: &str, generation: u32) -> String {
    format!("{kind}-{generation:08}.dat")
}

fn generation_of(kind: &str, name: &str) -> Option<u32> {
    name.strip_prefix(kind)?
        .strip_prefix('-')?
        .strip_suffix(".dat")?
        .parse()
        .ok()
}

fn io_error(kind: &str, what: &str, generation: u32, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", file_name(kind, generation)))
}

fn open_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))
}

impl BlobFiles {
    /// Opens every generation of `kind` in `dir` (creating generation 0 in a new dir);
    /// appends go to the newest. Bytes past the last durable record (a crash mid-append) are
    /// left as dead.
    pub fn open(dir: &Path, kind: &'static str) -> Result<BlobFiles> {
        let mut readers = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::internal(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(generation) = name.to_str().and_then(|n| generation_of(kind, n)) {
                readers.insert(generation, open_file(&entry.path())?);
            }
        }
        let generation = readers.keys().next_back().copied().unwrap_or(0);
        let file = match readers.get(&generation) {
            Some(file) => file
                .try_clone()
                .map_err(|e| io_error(kind, "cannot reopen", generation, e))?,
            None => {
                let file = open_file(&dir.join(file_name(kind, generation)))?;
                readers.insert(
                    generation,
                    file.try_clone()
                        .map_err(|e| io_error(kind, "cannot reopen", generation, e))?,
                );
                file
            }
        };
        let end = file
            .metadata()
            .map_err(|e| io_error(kind, "cannot stat", generation, e))?
            .len();
        Ok(BlobFiles {
            dir: dir.to_path_buf(),
            kind,
            readers: RwLock::new(readers),
            appender: Mutex::new(Appender {
                generation,
                file,
                end,
            }),
        })
    }

    /// Appends the values (one write) and returns their locations, in order.
    pub fn append<B: AsRef<[u8]>>(&self, values: &[B]) -> Result<Vec<Location>> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut appender = self.appender.lock();
        let mut bytes = Vec::with_capacity(values.iter().map(|v| v.as_ref().len()).sum());
        let mut locations = Vec::with_capacity(values.len());
        for value in values {
            let value = value.as_ref();
            let len = u32::try_from(value.len())
                .map_err(|_| Error::internal("a stored value exceeds 4 GiB"))?;
            locations.push(Location {
                generation: appender.generation,
                offset: appender.end + bytes.len() as u64,
                len,
                checksum: xxhash_rust::xxh3::xxh3_64(value),
            });
            bytes.extend_from_slice(value);
        }
        appender
            .file
            .write_all_at(&bytes, appender.end)
            .map_err(|e| io_error(self.kind, "cannot append to", appender.generation, e))?;
        appender.end += bytes.len() as u64;
        Ok(locations)
    }

    /// Makes every append so far durable (fsync).
    pub fn sync(&self) -> Result<()> {
        let appender = self.appender.lock();
        appender
            .file
            .sync_data()
            .map_err(|e| io_error(self.kind, "cannot fsync", appender.generation, e))
    }

    /// The value at `location`, checked against its checksum.
    pub fn read(&self, location: &Location) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; location.len as usize];
        {
            let readers = self.readers.read();
            let file = readers.get(&location.generation).ok_or_else(|| {
                Error::internal(format!(
                    "a record points into {}, which is missing",
                    file_name(self.kind, location.generation)
                ))
            })?;
            file.read_exact_at(&mut bytes, location.offset)
                .map_err(|e| io_error(self.kind, "cannot read", location.generation, e))?;
        }
        if xxhash_rust::xxh3::xxh3_64(&bytes) != location.checksum {
            return Err(Error::internal(format!(
                "value at {}:{} fails its checksum",
                file_name(self.kind, location.generation),
                location.offset
            )));
        }
        Ok(bytes)
    }

    /// The generation appends go to, and its size so far.
    pub fn current(&self) -> (u32, u64) {
        let appender = self.appender.lock();
        (appender.generation, appender.end)
    }

    /// Bytes in every generation (live and dead).
    pub fn total_bytes(&self) -> u64 {
        self.readers
            .read()
            .values()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Starts a new, empty generation; later appends go there. Returns its number.
    pub fn start_generation(&self) -> Result<u32> {
        let mut appender = self.appender.lock();
        let generation = appender.generation + 1;
        let file = open_file(&self.dir.join(file_name(self.kind, generation)))?;
        file.set_len(0)
            .map_err(|e| io_error(self.kind, "cannot truncate", generation, e))?;
        let reader = file
            .try_clone()
            .map_err(|e| io_error(self.kind, "cannot reopen", generation, e))?;
        self.readers.write().insert(generation, reader);
        *appender = Appender {
            generation,
            file,
            end: 0,
        };
        Ok(generation)
    }

    /// Deletes every generation that `keep` refuses, except the one appended to.
    pub fn remove_generations(&self, keep: impl Fn(u32) -> bool) -> Result<()> {
        let current = self.appender.lock().generation;
        let mut readers = self.readers.write();
        let doomed: Vec<u32> = readers
            .keys()
            .copied()
            .filter(|g| *g != current && !keep(*g))
            .collect();
        for generation in doomed {
            readers.remove(&generation);
            std::fs::remove_file(self.dir.join(file_name(self.kind, generation)))
                .map_err(|e| io_error(self.kind, "cannot delete", generation, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_values_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let locations = {
            let files = BlobFiles::open(dir.path(), "t").unwrap();
            let l = files.append(&[&b"ab"[..], &b"cde"[..]]).unwrap();
            files.sync().unwrap();
            l
        };
        let files = BlobFiles::open(dir.path(), "t").unwrap();
        assert_eq!(files.read(&locations[0]).unwrap(), b"ab");
        assert_eq!(files.read(&locations[1]).unwrap(), b"cde");
        // Appends continue after what is there; another kind is another set of files.
        let more = files.append(&[b"f"]).unwrap();
        assert_eq!(more[0].offset, 5);
        assert_eq!(BlobFiles::open(dir.path(), "u").unwrap().current(), (0, 0));
        let mut encoded = Vec::new();
        more[0].encode_into(&mut encoded);
        assert_eq!(Location::decode(&encoded), Some(more[0]));
    }

    #[test]
    fn a_corrupted_value_is_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let files = BlobFiles::open(dir.path(), "t").unwrap();
        let location = files.append(&[b"hello"]).unwrap()[0];
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(file_name("t", 0)))
            .unwrap()
            .write_all_at(b"J", 0)
            .unwrap();
        let err = files.read(&location).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn new_generations_take_the_appends_and_old_ones_can_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let files = BlobFiles::open(dir.path(), "t").unwrap();
        let old = files.append(&[b"old"]).unwrap()[0];
        assert_eq!(files.start_generation().unwrap(), 1);
        let new = files.append(&[b"new"]).unwrap()[0];
        assert_eq!((new.generation, new.offset), (1, 0));
        assert_eq!(files.read(&old).unwrap(), b"old");
        files.remove_generations(|_| false).unwrap();
        assert!(files.read(&old).is_err());
        assert_eq!(files.read(&new).unwrap(), b"new");
        assert!(!dir.path().join(file_name("t", 0)).exists());
        let reopened = BlobFiles::open(dir.path(), "t").unwrap();
        assert_eq!(reopened.append(&[b"x"]).unwrap()[0].generation, 1);
    }
}
