//! vecshard shard server: durable vector storage (sled), HNSW search (usearch), payload
//! filters, and gRPC + HTTP APIs. The binary `vecshard-server` wires these together.

pub mod api;
pub mod blob_file;
pub mod config;
pub mod dataset;
pub mod dev;
pub mod error;
pub mod filter;
pub mod h2_channel;
pub mod huge_pages;
pub mod in_process;
pub mod index;
pub mod metrics;
pub mod model;
pub mod partitions;
pub mod replication;
pub mod router;
pub mod server;
pub mod shard;
pub mod storage;
