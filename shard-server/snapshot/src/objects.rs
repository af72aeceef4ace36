//! Objects in and out of a repository with their SHA-256: uploads stream through
//! object_store's `BufWriter` (multipart above its 10 MiB buffer, so a shard is never held in
//! memory whole), downloads stream to a file and are refused, naming the object, when their
//! size or checksum differs from the manifest's.

use std::path::Path as FsPath;

use bytes::Bytes;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vecshard_core::error::{Error, Result};

use crate::manifest::ObjectEntry;
use crate::store::{store_error, Repository};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An object being written: bytes go to the store as they come, and into its checksum.
pub struct ObjectWriter {
    name: String,
    path: Path,
    writer: BufWriter,
    hasher: Sha256,
    size: u64,
    /// A write failed: the writer must not be used again (object_store's BufWriter panics
    /// when written or aborted after a failure left it shut down).
    failed: bool,
}

impl ObjectWriter {
    pub fn create(repo: &Repository, path: Path, name: &str) -> ObjectWriter {
        ObjectWriter {
            name: name.to_string(),
            writer: BufWriter::new(repo.store.clone(), path.clone()),
            path,
            hasher: Sha256::new(),
            size: 0,
            failed: false,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::unavailable(format!(
                "writing object {}: an earlier write failed",
                self.path
            )));
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let written = self.writer.write_all(bytes).await;
        self.failed = written.is_err();
        written.map_err(|e| {
            Error::unavailable(format!(
                "writing object {}: {}",
                self.path,
                crate::store::one_line(&e.to_string())
            ))
        })
    }

    /// Completes the upload; the object exists only once this returns.
    pub async fn finish(mut self) -> Result<ObjectEntry> {
        if self.failed {
            return Err(Error::unavailable(format!(
                "completing object {}: an earlier write failed",
                self.path
            )));
        }
        if let Err(e) = self.writer.shutdown().await {
            return Err(Error::unavailable(format!(
                "completing object {}: {}",
                self.path,
                crate::store::one_line(&e.to_string())
            )));
        }
        Ok(ObjectEntry {
            name: self.name,
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
        })
    }

    /// Gives the upload up (its parts are discarded by the store). After a failed write the
    /// writer is only dropped: an unfinished multipart upload is then left to the store's
    /// lifecycle rules, and is never visible as an object.
    pub async fn abort(mut self) {
        if !self.failed {
            let _ = self.writer.abort().await;
        }
    }
}

/// Uploads a local file, streaming it.
pub async fn upload_file(
    repo: &Repository,
    path: Path,
    name: &str,
    file: &FsPath,
) -> Result<ObjectEntry> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::internal(format!("cannot open {}: {e}", file.display())))?;
    let mut out = ObjectWriter::create(repo, path, name);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                out.abort().await;
                return Err(Error::internal(format!(
                    "cannot read {}: {e}",
                    file.display()
                )));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = out.write(&buf[..n]).await {
            out.abort().await;
            return Err(e);
        }
    }
    out.finish().await
}

/// Stores a small object (a manifest) in one request.
pub async fn put_bytes(
    repo: &Repository,
    path: &Path,
    name: &str,
    bytes: Vec<u8>,
) -> Result<ObjectEntry> {
    let entry = ObjectEntry {
        name: name.to_string(),
        size: bytes.len() as u64,
        sha256: hex(&Sha256::digest(&bytes)),
    };
    repo.store
        .put(path, PutPayload::from(Bytes::from(bytes)))
        .await
        .map_err(|e| store_error("storing", path, e))?;
    Ok(entry)
}

/// Reads a whole small object.
pub async fn get_bytes(repo: &Repository, path: &Path) -> Result<Bytes> {
    let got = repo
        .store
        .get(path)
        .await
        .map_err(|e| store_error("reading", path, e))?;
    got.bytes()
        .await
        .map_err(|e| store_error("reading", path, e))
}

/// Checks bytes against their manifest entry.
pub fn verify_bytes(bytes: &[u8], entry: &ObjectEntry, path: &Path) -> Result<()> {
    let sum = hex(&Sha256::digest(bytes));
    if bytes.len() as u64 != entry.size || sum != entry.sha256 {
        return Err(corrupt(path, entry, bytes.len() as u64, &sum));
    }
    Ok(())
}

fn corrupt(path: &Path, entry: &ObjectEntry, size: u64, sum: &str) -> Error {
    Error::invalid(format!(
        "snapshot object {path} is corrupt: {size} bytes with SHA-256 {sum}, the manifest \
         records {} bytes with SHA-256 {}",
        entry.size, entry.sha256
    ))
}

/// Reads a JSON object, verified against its entry when one is given.
pub async fn get_json<T: DeserializeOwned>(
    repo: &Repository,
    path: &Path,
    entry: Option<&ObjectEntry>,
) -> Result<T> {
    let bytes = get_bytes(repo, path).await?;
    if let Some(entry) = entry {
        verify_bytes(&bytes, entry, path)?;
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("snapshot object {path} is not a manifest: {e}")))
}

/// Streams an object into `file`, checking its size and SHA-256 against `entry` (the file is
/// removed when they differ).
pub async fn download_verified(
    repo: &Repository,
    path: &Path,
    entry: &ObjectEntry,
    file: &FsPath,
) -> Result<()> {
    let got = repo
        .store
        .get(path)
        .await
        .map_err(|e| store_error("reading", path, e))?;
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", file.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| store_error("reading", path, e))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::internal(format!("cannot write {}: {e}", file.display())))?;
    }
    out.sync_all()
        .await
        .map_err(|e| Error::internal(format!("cannot fsync {}: {e}", file.display())))?;
    let sum = hex(&hasher.finalize());
    if size != entry.size || sum != entry.sha256 {
        let _ = tokio::fs::remove_file(file).await;
        return Err(corrupt(path, entry, size, &sum));
    }
    Ok(())
}

/// Reads an object and checks it against `entry` without keeping it (verification only).
pub async fn verify_object(repo: &Repository, path: &Path, entry: &ObjectEntry) -> Result<()> {
    let got = repo
        .store
        .get(path)
        .await
        .map_err(|e| store_error("reading", path, e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| store_error("reading", path, e))?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    let sum = hex(&hasher.finalize());
    if size != entry.size || sum != entry.sha256 {
        return Err(corrupt(path, entry, size, &sum));
    }
    Ok(())
}

/// Frames for the record streams (`records.bin`, `log.bin`): each frame is a little-endian
/// u32 length and that many bytes.
pub fn frame(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads the frames of a local file one at a time.
pub struct FrameReader {
    file: std::io::BufReader<std::fs::File>,
    name: String,
}

impl FrameReader {
    pub fn open(file: &FsPath) -> Result<FrameReader> {
        let f = std::fs::File::open(file)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", file.display())))?;
        Ok(FrameReader {
            file: std::io::BufReader::with_capacity(1 << 20, f),
            name: file.display().to_string(),
        })
    }

    /// The next frame, `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut len = [0u8; 4];
        match self.file.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::internal(format!("reading {}: {e}", self.name))),
        }
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        self.file
            .read_exact(&mut frame)
            .map_err(|e| Error::invalid(format!("{} ends inside a frame: {e}", self.name)))?;
        Ok(Some(frame))
    }
}

/// Deletes every object under `prefix`; returns how many.
pub async fn delete_prefix(repo: &Repository, prefix: &Path) -> Result<usize> {
    let mut listed = repo.store.list(Some(prefix));
    let mut n = 0;
    while let Some(meta) = listed.next().await {
        let meta = meta.map_err(|e| store_error("listing", prefix, e))?;
        match repo.store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
            Err(e) => return Err(store_error("deleting", &meta.location, e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn local_repo(dir: &std::path::Path) -> Repository {
        Repository::open(&StoreConfig {
            url: format!("file://{}", dir.display()),
            ..StoreConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn streamed_objects_carry_their_checksum_and_a_flipped_byte_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let repo = local_repo(dir.path());
        let path = repo.path(&["docs", "s1", "docs-0", "records.bin"]);
        let mut w = ObjectWriter::create(&repo, path.clone(), "records.bin");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(700_000) {
            w.write(chunk).await.unwrap();
        }
        let entry = w.finish().await.unwrap();
        assert_eq!(entry.size, data.len() as u64);
        assert_eq!(entry.sha256, hex(&Sha256::digest(&data)));

        let out = dir.path().join("copy");
        download_verified(&repo, &path, &entry, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);

        // Flip one byte in the stored object: the download is refused, naming the object.
        let stored = dir.path().join("docs/s1/docs-0/records.bin");
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[1_234_567] ^= 0x01;
        std::fs::write(&stored, bytes).unwrap();
        let err = download_verified(&repo, &path, &entry, &out)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("docs/s1/docs-0/records.bin") && err.contains("corrupt"),
            "{err}"
        );
        assert!(!out.exists(), "a corrupt download is removed");
        let err = verify_object(&repo, &path, &entry).await.unwrap_err();
        assert!(err.to_string().contains("corrupt"));

        // A missing object is named too.
        let missing = repo.path(&["docs", "s1", "docs-0", "graph.usearch"]);
        let err = download_verified(&repo, &missing, &entry, &out)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "NOT_FOUND");
        assert!(err.to_string().contains("graph.usearch"), "{err}");
    }

    #[test]
    fn frames_round_trip_and_a_cut_frame_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        frame(b"alpha", &mut out);
        frame(b"", &mut out);
        frame(&[7u8; 100_000], &mut out);
        let file = dir.path().join("f");
        std::fs::write(&file, &out).unwrap();
        let mut r = FrameReader::open(&file).unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap(), b"alpha");
        assert_eq!(r.next_frame().unwrap().unwrap(), b"");
        assert_eq!(r.next_frame().unwrap().unwrap().len(), 100_000);
        assert!(r.next_frame().unwrap().is_none());
        std::fs::write(&file, &out[..out.len() - 10]).unwrap();
        let mut r = FrameReader::open(&file).unwrap();
        r.next_frame().unwrap();
        r.next_frame().unwrap();
        assert!(r.next_frame().is_err());
    }
}
