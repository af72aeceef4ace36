//! Rebalancing: changing a collection's shard count while it serves reads and writes.
//!
//! - `plan`: which partitions move where (pure; the fewest moves, in batches);
//! - `steps`: the recorded steps of each batch and the shard map each one publishes (pure);
//! - `exec`: running a step against the shards (`PointsInternal`) and a map store (I/O).
//!
//! A batch of partitions P moves from shard S to shard T in five steps, each recorded by the
//! caller before it runs and each safe to run again after a crash:
//! 1. `DualWrite`: T takes writes of P, the map sends writes of P to S and T (both must meet
//!    the write consistency); every replica's ownership moves to the new map version first,
//!    so a router with the old map is refused and reloads (the fence);
//! 2. `Backfill`: every replica of T copies P from every replica of S (last writer wins);
//! 3. `Verify`: per-partition counts and checksums of P agree on all replicas of S and T
//!    (differences are copied both ways and checked again);
//! 4. `ReadsSwitch`: T serves reads of P, S stops; writes still go to both;
//! 5. `WritesSwitch`: writes of P go to T only; S drops P.

pub mod exec;
pub mod plan;
pub mod steps;

pub use exec::{FileMapStore, MapStore, Shards};
pub use plan::{plan_moves, Batch};
pub use steps::{Progress, Step};
