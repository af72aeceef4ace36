//! `vecshardctl snapshot`: take, list, verify, delete and prune snapshots of a collection in a
//! repository (`s3://bucket/prefix`, `file:///dir` or a path), with the same code the operator
//! runs (`vecshard-snapshot`). Restoring is done by starting servers from a snapshot
//! (`vecshard-server dev --restore-from`, `vecshard-server shard --restore-from`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use vecshard_proto::shard_map::ShardMap;
use vecshard_snapshot::args::StoreArgs;
use vecshard_snapshot::{catalog, take, Repository};

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Take a snapshot of every shard (the most caught-up replica of each) and commit it.
    Create {
        /// Repository to write to.
        #[arg(long)]
        to: String,
        /// The collection's shard map (a dev cluster's DATA_DIR/shard-map.json); without it,
        /// --addr is snapshotted as a single shard.
        #[arg(long)]
        shard_map: Option<PathBuf>,
        /// Snapshot id (default: the UTC time and a random suffix).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The complete snapshots of the collection, oldest first.
    List {
        #[arg(long)]
        from: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Read every object of a snapshot and check its size and SHA-256.
    Verify {
        #[arg(long)]
        from: String,
        /// Snapshot id or `latest`.
        #[arg(long, default_value = "latest")]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete one snapshot (its manifest first).
    Delete {
        #[arg(long)]
        from: String,
        #[arg(long)]
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Keep the newest RETAIN snapshots; delete older ones and the objects of incomplete ones.
    Prune {
        #[arg(long)]
        from: String,
        #[arg(long)]
        retain: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub async fn run(command: SnapshotCommand, addr: &str, collection: &str) -> Result<()> {
    match command {
        SnapshotCommand::Create {
            to,
            shard_map,
            id,
            store,
        } => {
            let store = store.store(&to)?;
            let map = match shard_map {
                Some(path) => Some(
                    serde_json::from_str::<ShardMap>(
                        &std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| format!("{} is not a shard map", path.display()))?,
                ),
                None => None,
            };
            let started = Instant::now();
            let m = match &map {
                Some(map) => take::take(&store, map, id).await?,
                None => take::take_single(&store, collection, addr, id).await?,
            };
            let secs = started.elapsed().as_secs_f64();
            out!(
                "snapshot {} of {}: {} points, {} shards, {:.1} MiB in {:.1} s ({:.1} MiB/s)",
                m.snapshot_id,
                m.collection.name,
                m.points,
                m.shards.len(),
                mib(m.bytes),
                secs,
                mib(m.bytes) / secs.max(1e-9)
            );
            for s in &m.shards {
                out!(
                    "  {}: {} points, {:.1} MiB, from {}",
                    s.name,
                    s.points,
                    mib(s.bytes),
                    s.replica
                );
            }
        }
        SnapshotCommand::List { from, store } => {
            let repo = Repository::open(&store.store(&from)?)?;
            let list = catalog::list(&repo, collection).await?;
            if list.is_empty() {
                out!("no snapshots of {collection} in {from}");
            }
            for m in list {
                out!(
                    "{}  {}  {} points  {} shards  {:.1} MiB",
                    m.snapshot_id,
                    m.finished_at,
                    m.points,
                    m.shards.len(),
                    mib(m.bytes)
                );
            }
        }
        SnapshotCommand::Verify { from, id, store } => {
            let repo = Repository::open(&store.store(&from)?)?;
            let id = catalog::resolve(&repo, collection, &id).await?;
            let started = Instant::now();
            let bytes = catalog::verify(&repo, collection, &id).await?;
            out!(
                "snapshot {id}: every object matches its manifest ({:.1} MiB read in {:.1} s)",
                mib(bytes),
                started.elapsed().as_secs_f64()
            );
        }
        SnapshotCommand::Delete { from, id, store } => {
            let repo = Repository::open(&store.store(&from)?)?;
            let n = catalog::delete(&repo, collection, &id).await?;
            out!("snapshot {id} deleted ({n} objects)");
        }
        SnapshotCommand::Prune {
            from,
            retain,
            store,
        } => {
            let repo = Repository::open(&store.store(&from)?)?;
            let pruned = catalog::prune(&repo, collection, retain, &[], None).await?;
            out!(
                "deleted {} expired snapshots {:?} and {} incomplete ones {:?} ({} objects)",
                pruned.expired.len(),
                pruned.expired,
                pruned.orphans.len(),
                pruned.orphans,
                pruned.objects
            );
        }
    }
    Ok(())
}
