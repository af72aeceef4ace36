//! vecshard's storage engine: a shard of a collection (`shard`: the group-commit writer, the
//! HNSW indexer with graph saves and slot compaction, search planning over the payload index
//! and per-value graphs, the reads replicas copy from), its durable state in sled
//! (`storage`, the only sled import) and blob files (`blob_file`), the HNSW index (`index`,
//! the only usearch import), and transparent huge pages (`huge_pages`).
//!
//! All of vecshard's `unsafe` code lives in this crate (`huge_pages`, `shard/f16_kernels.rs`),
//! except the CUDA calls of `vecshard-gpu` (`shard-server/gpu/src/cuda.rs`).

pub mod blob_file;
pub mod huge_pages;
pub mod index;
pub mod restore;
pub mod shard;
pub mod storage;
