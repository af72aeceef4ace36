//! Integration tests of the shard server: in-process over real gRPC and HTTP on 127.0.0.1:0,
//! and crash/shutdown tests of the real binary.

mod api;
mod bench;
mod cluster;
mod crash;
mod ctl;
mod support;
