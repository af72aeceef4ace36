//! vecshard's backups, without the storage engine: where snapshots are kept (`store`), what
//! they are made of (`manifest`), moving objects in and out with their checksums (`objects`),
//! the snapshots of a collection (`catalog`: list, prune, verify) and taking a collection's
//! snapshot over the shards' internal API (`take`). The shard server writes its own shard's
//! objects and restores from them (`vecshard-server`'s `snapshot` module).

pub mod args;
pub mod catalog;
pub mod manifest;
pub mod objects;
pub mod schedule;
pub mod store;
pub mod take;

pub use manifest::{CollectionManifest, ShardManifest};
pub use store::{Repository, StoreConfig};
