//! vecshard server: the gRPC and HTTP transports (`api`) over a shard (`vecshard-engine`) or a
//! router (`vecshard-router`), replication between the replicas of a shard (`replication`),
//! configuration from flags, environment and file (`config`), the local dev cluster (`dev`),
//! a shard's snapshots and restores (`snapshot`), TLS and API keys (`security`), and graceful start and stop of the listeners (`server`). The binary `vecshard-server`
//! wires these together.

pub mod api;
pub mod config;
pub mod dev;
pub mod replication;
pub mod security;
pub mod server;
pub mod snapshot;
