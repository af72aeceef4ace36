//! Running rebalancing steps: `SetOwnership`, `PullPartitions` and `PartitionStats` on the
//! shards' internal service, and the shard map read from and published to a `MapStore` (a
//! file for `vecshard-server dev`, a ConfigMap for the operator). I/O at the edge of the pure
//! `steps` and `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use futures::future::try_join_all;
use vecshard_proto::shard_map::{Ownership, ShardAssignment, ShardMap};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::points_internal_client::PointsInternalClient;
use vecshard_security::{current_client, SecureChannel};

use crate::plan::Batch;
use crate::steps::{map_for_abort, map_for_step, Progress, Step};

/// Where the collection's shard map lives.
pub trait MapStore: Sync {
    fn read(&self) -> impl Future<Output = Result<ShardMap>> + Send;
    fn publish(&self, map: &ShardMap) -> impl Future<Output = Result<()>> + Send;
}

/// A shard map in a JSON file, replaced atomically (routers re-read it every second).
#[derive(Clone, Debug)]
pub struct FileMapStore(pub PathBuf);

impl MapStore for FileMapStore {
    async fn read(&self) -> Result<ShardMap> {
        let text = std::fs::read_to_string(&self.0)
            .with_context(|| format!("reading {}", self.0.display()))?;
        let map: ShardMap = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a shard map", self.0.display()))?;
        map.validate().map_err(anyhow::Error::msg)?;
        Ok(map)
    }

    async fn publish(&self, map: &ShardMap) -> Result<()> {
        let tmp = self.0.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(map)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.0).with_context(|| format!("replacing {}", self.0.display()))
    }
}

/// The shards of one collection, reached over their internal gRPC service.
#[derive(Clone, Debug)]
pub struct Shards {
    pub collection: String,
    /// Deadline of each call; a backfill page and a partition copy get `copy_timeout`.
    pub timeout: Duration,
    pub copy_timeout: Duration,
}

/// What one step did, for status, events and metrics.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    pub points: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub published: Option<u64>,
}

fn channel(addr: &str, timeout: Duration) -> Result<SecureChannel> {
    current_client()
        .channel(addr, Duration::from_secs(2), Some(timeout))
        .map_err(|e| anyhow::anyhow!("replica address {addr:?}: {e}"))
}

impl Shards {
    pub fn new(collection: &str) -> Shards {
        Shards {
            collection: collection.to_string(),
            timeout: Duration::from_secs(10),
            copy_timeout: Duration::from_secs(600),
        }
    }

    /// A replica's internal service, with the caller's TLS and key (`current_client`).
    fn client(&self, addr: &str, timeout: Duration) -> Result<PointsInternalClient<SecureChannel>> {
        Ok(PointsInternalClient::new(channel(addr, timeout)?).max_decoding_message_size(256 << 20))
    }

    /// Runs the recorded step of `progress` to completion and returns the progress with the
    /// next step (the caller records it). Safe to call again with the same progress after a
    /// failure or a crash.
    pub async fn run_step<M: MapStore>(
        &self,
        store: &M,
        progress: &Progress,
    ) -> Result<(Progress, StepReport)> {
        let mut report = StepReport::default();
        let Some(batch) = progress.current().cloned() else {
            return Ok((progress.clone(), report));
        };
        let published = store.read().await?;
        let mut next = progress.clone();
        match progress.step {
            Step::DualWrite | Step::ReadsSwitch | Step::WritesSwitch => {
                let map = map_for_step(&published, progress).expect("a map-changing step");
                let (dropped, version) = self.switch(store, &published, &map).await?;
                report.dropped = dropped;
                report.published = Some(version);
                next.map_version = version;
            }
            Step::Backfill => {
                let (points, bytes) = self.backfill(&published, &batch).await?;
                report.points = points;
                report.bytes = bytes;
                next.points_moved += points;
                next.bytes_moved += bytes;
            }
            Step::Verify => self.verify(&published, &batch).await?,
            Step::Done => {}
        }
        Ok((next.advanced(), report))
    }

    /// One step toward `target` (the shards the collection should end with): with nothing in
    /// progress, a plan (recorded before anything moves); with a plan for another target, the
    /// current batch is abandoned if its reads have not switched (then planned again), or
    /// completed first; otherwise the recorded step runs. Returns the progress to record:
    /// `None` once the map is balanced over `target`.
    pub async fn step_toward<M: MapStore>(
        &self,
        store: &M,
        progress: Option<Progress>,
        target: &[ShardAssignment],
        batch_size: usize,
        now_unix_ms: u64,
    ) -> Result<(Option<Progress>, StepReport)> {
        let names =
            |t: &[ShardAssignment]| -> Vec<String> { t.iter().map(|s| s.name.clone()).collect() };
        let Some(mut progress) = progress else {
            let published = store.read().await?;
            let plan = Progress::start(&published, target.to_vec(), batch_size, now_unix_ms);
            return Ok((
                (plan.step != Step::Done).then_some(plan),
                StepReport::default(),
            ));
        };
        if progress.step == Step::Done {
            return Ok((None, StepReport::default()));
        }
        if names(&progress.target) != names(target) {
            if progress.step.can_abort() {
                tracing::info!(
                    step = progress.step.as_str(),
                    "target changed; abandoning the batch in progress"
                );
                let report = self.abort(store, &progress, &names(target)).await?;
                return Ok((None, report));
            }
            // Past the read switch: this batch completes, the rest is planned again.
            progress.batches.truncate(progress.batch + 1);
        }
        let (next, report) = self.run_step(store, &progress).await?;
        Ok((Some(next), report))
    }

    /// Abandons the current batch (before reads switched): the move leaves the map and the
    /// receiver drops its copies. `keep`: the shards that stay in the map even if empty.
    pub async fn abort<M: MapStore>(
        &self,
        store: &M,
        progress: &Progress,
        keep: &[String],
    ) -> Result<StepReport> {
        let Some(batch) = progress.current() else {
            return Ok(StepReport::default());
        };
        if !progress.step.can_abort() {
            bail!(
                "batch {} is past its read switch and must complete",
                progress.batch + 1
            );
        }
        let published = store.read().await?;
        let map = map_for_abort(&published, batch, keep);
        let (dropped, version) = self.switch(store, &published, &map).await?;
        Ok(StepReport {
            dropped,
            published: Some(version),
            ..StepReport::default()
        })
    }

    /// Installs `map`'s ownership on every replica of every shard in `published` or `map`,
    /// then publishes `map` (when it is new). Ownership first: a router still on the old map
    /// is refused by every shard and reloads, instead of writing to one side of a move. The
    /// version is raised above any a replica already holds (a step that pushed ownership and
    /// stopped before publishing leaves replicas ahead of the published map), so the map
    /// routers get is never older than what the shards enforce. Returns the records dropped
    /// and the version in force.
    async fn switch<M: MapStore>(
        &self,
        store: &M,
        published: &ShardMap,
        map: &ShardMap,
    ) -> Result<(u64, u64)> {
        let floor = self.installed_version(published, map).await?;
        let mut map = map.clone();
        if map.version <= floor {
            map.version = floor + 1;
        }
        let dropped = self.push_ownership(published, &map).await?;
        if map.version != published.version {
            store.publish(&map).await?;
            tracing::info!(version = map.version, "shard map published");
        }
        Ok((dropped, map.version))
    }

    /// The highest shard-map version any replica of the two maps' shards has installed.
    async fn installed_version(&self, published: &ShardMap, map: &ShardMap) -> Result<u64> {
        let addrs: BTreeSet<&String> = published
            .shards
            .iter()
            .chain(&map.shards)
            .flat_map(|s| s.all_replicas())
            .collect();
        let versions = try_join_all(addrs.into_iter().map(|addr| async move {
            let info = PointsClient::new(channel(addr, self.timeout)?)
                .info(pb::InfoRequest {
                    collection: self.collection.clone(),
                })
                .await
                .with_context(|| format!("reading the partition ownership of {addr}"))?;
            Ok::<u64, anyhow::Error>(info.into_inner().map_version)
        }))
        .await?;
        Ok(versions.into_iter().max().unwrap_or(0))
    }

    /// `SetOwnership` per `map` on every replica of the shards of `published` and `map`; all
    /// must answer. Returns the records dropped.
    pub async fn push_ownership(&self, published: &ShardMap, map: &ShardMap) -> Result<u64> {
        let mut replicas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for shard in published.shards.iter().chain(&map.shards) {
            replicas
                .entry(shard.name.clone())
                .or_default()
                .extend(shard.all_replicas().cloned());
        }
        let calls = replicas.into_iter().flat_map(|(shard, addrs)| {
            let ownership = map.ownership_of(&shard);
            addrs
                .into_iter()
                .map(move |addr| self.set_ownership(addr, ownership.clone()))
        });
        Ok(try_join_all(calls).await?.into_iter().sum())
    }

    async fn set_ownership(&self, addr: String, o: Ownership) -> Result<u64> {
        let request = pb::SetOwnershipRequest {
            collection: self.collection.clone(),
            ownership: Some(pb::Ownership {
                map_version: o.map_version,
                partition_count: o.partitions,
                readable: o.readable,
                writable: o.writable,
            }),
        };
        let answer = self
            .client(&addr, self.timeout)?
            .set_ownership(request)
            .await
            .with_context(|| format!("setting the partition ownership of {addr}"))?;
        Ok(answer.into_inner().dropped)
    }

    fn replicas_of<'a>(map: &'a ShardMap, shard: &str) -> Result<&'a [String]> {
        map.shard(shard)
            .map(|s| s.replicas.as_slice())
            .with_context(|| format!("shard {shard} is not in the shard map"))
    }

    /// Every replica of the receiver copies the batch from every replica of the giver.
    async fn backfill(&self, map: &ShardMap, batch: &Batch) -> Result<(u64, u64)> {
        let sources = Self::replicas_of(map, &batch.from)?.to_vec();
        let receivers = Self::replicas_of(map, &batch.to)?;
        let copies = receivers
            .iter()
            .map(|r| self.pull(r, sources.clone(), &batch.partitions, map.partitions));
        let answers = try_join_all(copies).await?;
        // Points moved: what the first receiver took in (the others took the same).
        let first = answers.first().cloned().unwrap_or_default();
        Ok((first.applied, first.bytes))
    }

    async fn pull(
        &self,
        addr: &str,
        sources: Vec<String>,
        partitions: &[u32],
        partition_count: u32,
    ) -> Result<pb::PullPartitionsResponse> {
        let request = pb::PullPartitionsRequest {
            collection: self.collection.clone(),
            sources,
            partition_count,
            partitions: partitions.to_vec(),
        };
        Ok(self
            .client(addr, self.copy_timeout)?
            .pull_partitions(request)
            .await
            .with_context(|| format!("{addr} copying partitions {partitions:?}"))?
            .into_inner())
    }

    /// Per-partition counts and checksums of the batch agree on every replica of both
    /// shards. Differences (a write in flight, or one that reached only one side and was not
    /// acknowledged) are copied both ways and checked again; a difference that persists fails
    /// the step, which is then run again.
    async fn verify(&self, map: &ShardMap, batch: &Batch) -> Result<()> {
        let mut all: Vec<String> = Self::replicas_of(map, &batch.from)?.to_vec();
        all.extend(Self::replicas_of(map, &batch.to)?.iter().cloned());
        let wanted: BTreeSet<u32> = batch.partitions.iter().copied().collect();
        let mut diverged = BTreeSet::new();
        for attempt in 1..=8 {
            let stats =
                try_join_all(all.iter().map(|r| self.stats(r, map.partitions, &wanted))).await?;
            diverged = stats
                .iter()
                .skip(1)
                .flat_map(|other| vecshard_core::partitions::diverged(&stats[0], other))
                .collect();
            if diverged.is_empty() {
                return Ok(());
            }
            tracing::info!(attempt, partitions = ?diverged, "replicas differ on moving partitions; copying both ways");
            let list: Vec<u32> = diverged.iter().copied().collect();
            try_join_all(all.iter().map(|r| {
                let others: Vec<String> = all.iter().filter(|o| *o != r).cloned().collect();
                self.pull(r, others, &list, map.partitions)
            }))
            .await?;
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        bail!(
            "partitions {diverged:?} still differ between the replicas of {} and {}",
            batch.from,
            batch.to
        )
    }

    async fn stats(
        &self,
        addr: &str,
        partition_count: u32,
        wanted: &BTreeSet<u32>,
    ) -> Result<Vec<pb::PartitionStat>> {
        let answer = self
            .client(addr, self.timeout)?
            .partition_stats(pb::PartitionStatsRequest {
                collection: self.collection.clone(),
                partition_count,
            })
            .await
            .with_context(|| format!("reading partition fingerprints of {addr}"))?;
        Ok(answer
            .into_inner()
            .partitions
            .into_iter()
            .filter(|s| wanted.contains(&s.partition))
            .collect())
    }
}
