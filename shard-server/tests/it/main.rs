//! Integration tests of the shard server: in-process over real gRPC and HTTP on 127.0.0.1:0,
//! and crash/shutdown tests of the real binary. (The CLI's and the benchmark's suites live in
//! their crates, `ctl/tests` and `bench/tests`, and share `support.rs` by path.)

mod api;
mod cluster;
mod crash;
mod device;
mod docs_paths;
mod flat;
mod joining;
mod qdrant_table;
mod rebalance;
mod security;
mod snapshot;
mod support;
