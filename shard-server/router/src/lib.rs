//! The router: a stateless front door that serves the same API as a shard. Writes go to every
//! replica of the shard owning each id's partition, with a router-assigned version, and are
//! acknowledged per the write consistency; searches fan out to one replica of every shard and
//! the per-shard top-k lists are merged. The shard map comes from a file that is re-read when
//! its version grows. I/O: gRPC to shards, the shard-map file.

mod cache;
pub mod h2_channel;
mod map_source;
mod merge;
mod read;
mod replicas;
mod status;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use vecshard_proto::shard_map::ShardMap;
use vecshard_proto::v1 as pb;

use cache::ResultCache;
pub use map_source::MapSource;
pub use merge::{group_by_shard, merge_top_k};
pub use replicas::HedgePolicy;
use replicas::{LatencyWindow, Replica, ShardRoute};
use vecshard_core::convert::config_from_info;
use vecshard_core::error::{Error, Result};
use vecshard_core::metrics::Metrics;
use vecshard_core::model::{check_batch_len, next_version, CollectionConfig};

/// How many replicas must acknowledge a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteConsistency {
    One,
    Quorum,
    All,
}

impl std::str::FromStr for WriteConsistency {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "one" => Ok(WriteConsistency::One),
            "quorum" => Ok(WriteConsistency::Quorum),
            "all" => Ok(WriteConsistency::All),
            other => Err(format!(
                "write consistency {other:?} is not one of one, quorum, all"
            )),
        }
    }
}

impl WriteConsistency {
    pub fn required(self, replicas: usize) -> usize {
        match self {
            WriteConsistency::One => 1,
            WriteConsistency::Quorum => replicas / 2 + 1,
            WriteConsistency::All => replicas,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RouterOptions {
    pub shard_map: MapSource,
    pub write_consistency: WriteConsistency,
    /// Deadline of each call to a shard.
    pub request_timeout: Duration,
    pub max_batch_points: usize,
    pub max_batch_bytes: usize,
    /// Result cache size in entries (0 disables it) and the age after which entries expire.
    pub cache_entries: usize,
    pub cache_ttl: Duration,
    pub hedge: HedgePolicy,
    /// How the router connects to the replicas: TLS with its client certificate, API key.
    pub client: vecshard_security::ClientSecurity,
}

struct Topology {
    map: ShardMap,
    /// Per partition, the shard that serves its reads and takes its writes.
    owners: Vec<usize>,
    /// Per partition, the shard that also takes its writes while it moves.
    second_writers: Vec<Option<usize>>,
    shards: Vec<ShardRoute>,
}

pub struct Router {
    config: CollectionConfig,
    options: RouterOptions,
    topology: RwLock<Arc<Topology>>,
    metrics: Metrics,
    last_version: Mutex<u64>,
    cache: ResultCache,
    /// The version of the installed shard map, for writes that wait on a replica the next map
    /// may no longer count (it stopped, or is catching up again).
    map_version: tokio::sync::watch::Sender<u64>,
}

/// What every shard route is built with.
struct RouteSettings {
    timeout: Duration,
    hedge: HedgePolicy,
    hedged_reads: prometheus_client::metrics::counter::Counter,
    client: vecshard_security::ClientSecurity,
}

fn build_topology(
    map: ShardMap,
    previous: Option<&Topology>,
    settings: &RouteSettings,
) -> Result<Topology> {
    let known: BTreeMap<&str, &Arc<Replica>> = previous
        .into_iter()
        .flat_map(|t| {
            t.shards
                .iter()
                .flat_map(|s| s.replicas.iter().chain(&s.joining))
        })
        .map(|r| (r.addr.as_str(), r))
        .collect();
    // A replica moving between joining and serving keeps its connection and latency record.
    let clients = |addrs: &[String]| {
        addrs
            .iter()
            .map(|addr| match known.get(addr.as_str()) {
                Some(r) => Ok((*r).clone()),
                None => Replica::connect(addr, settings.timeout, &settings.client).map(Arc::new),
            })
            .collect::<Result<Vec<_>>>()
    };
    let shards = map
        .shards
        .iter()
        .map(|s| {
            Ok(ShardRoute {
                name: s.name.clone(),
                replicas: clients(&s.replicas)?,
                joining: clients(&s.joining)?,
                latencies: LatencyWindow::new(),
                hedge: settings.hedge,
                hedged_reads: settings.hedged_reads.clone(),
                map_version: map.version,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topology {
        owners: map.owners(),
        second_writers: map.second_writers(),
        map,
        shards,
    })
}

impl Router {
    /// Reads the shard map and learns the collection's parameters from a shard (waiting up to
    /// `wait` for one to answer, so a router can start together with its shards).
    pub async fn open(options: RouterOptions, wait: Duration) -> Result<Arc<Router>> {
        let map = options.shard_map.read().await?;
        let metrics = Metrics::new();
        let topology = build_topology(map, None, &route_settings(&options, &metrics))?;
        let deadline = tokio::time::Instant::now() + wait;
        let info = 'wait: loop {
            let mut last_error = String::new();
            for shard in &topology.shards {
                match shard
                    .call(None, |mut c| async move {
                        c.info(pb::InfoRequest::default()).await
                    })
                    .await
                {
                    Ok(info) => break 'wait info,
                    Err(e) => last_error = format!("shard {}: {}", shard.name, e.message()),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::unavailable(format!(
                    "no shard answered within {wait:?} ({last_error})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let config = config_from_info(&info, &topology.map.collection)?;
        tracing::info!(collection = %config.name, shards = topology.shards.len(), version = topology.map.version, "router ready");
        let cache = ResultCache::new(options.cache_entries, options.cache_ttl);
        let router = Arc::new(Router {
            config,
            options,
            topology: RwLock::new(Arc::new(topology)),
            metrics,
            last_version: Mutex::new(0),
            map_version: tokio::sync::watch::Sender::new(0),
            cache,
        });
        let changes = router.options.shard_map.changes().await?;
        tokio::spawn(watch_map(Arc::downgrade(&router), changes));
        Ok(router)
    }

    /// The collection served.
    pub fn collection(&self) -> &str {
        &self.config.name
    }

    /// Shards in the current shard map.
    pub fn shard_count(&self) -> usize {
        self.topology().shards.len()
    }

    /// The collection's similarity measure.
    pub fn metric(&self) -> vecshard_core::model::Metric {
        self.config.metric
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Largest request body or message accepted.
    pub fn max_request_bytes(&self) -> usize {
        self.options.max_batch_bytes
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Hybrid logical clock: wall-clock milliseconds << 16, never going back.
    pub(crate) fn next_version(&self) -> u64 {
        next_version(&mut self.last_version.lock())
    }

    pub(crate) fn check_batch(&self, n: usize) -> Result<()> {
        check_batch_len(n, self.options.max_batch_points)
    }

    /// Runs `op`; when a shard refuses it because it was routed with an older shard map
    /// (a rebalancing step), reloads the map from its source and runs it again, a few times
    /// with short pauses (an ownership change reaches every replica moments before the new
    /// map is published). Every operation retried this way is safe to repeat: writes carry
    /// their version, reads change nothing.
    pub(crate) async fn on_current_map<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut pause = Duration::from_millis(10);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(Error::StaleMap { message }) if attempt < STALE_MAP_ATTEMPTS => {
                    self.metrics.stale_map_retries.inc();
                    tracing::debug!(attempt, %message, "shard map changed under a request; reloading it");
                    self.reload_map().await;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads the map from its source now (not waiting for the watch) and installs it if newer.
    async fn reload_map(&self) {
        match self.options.shard_map.read().await {
            Ok(map) => self.install(map),
            Err(e) => tracing::warn!(error = %e, "shard map unreadable; keeping the current one"),
        }
    }

    /// Replaces the topology with `map` if it is newer than the current one.
    fn install(&self, map: ShardMap) {
        let current = self.topology();
        if map.version <= current.map.version {
            return;
        }
        let settings = route_settings(&self.options, &self.metrics);
        match build_topology(map, Some(&current), &settings) {
            Ok(t) => {
                let mut slot = self.topology.write();
                if t.map.version > slot.map.version {
                    tracing::info!(version = t.map.version, "shard map updated");
                    self.map_version.send_replace(t.map.version);
                    *slot = Arc::new(t);
                }
            }
            Err(e) => tracing::warn!(error = %e, "new shard map rejected"),
        }
    }
}

/// Tries of an operation refused for a stale shard map (pauses 10 ms doubling to 500 ms: about
/// 3 s in all, longer than a rebalancing step's ownership change takes).
const STALE_MAP_ATTEMPTS: u32 = 10;

fn route_settings(options: &RouterOptions, metrics: &Metrics) -> RouteSettings {
    RouteSettings {
        timeout: options.request_timeout,
        hedge: options.hedge,
        hedged_reads: metrics.hedged_reads.clone(),
        client: options.client.clone(),
    }
}

/// Applies each new shard map from the source whose version is higher than the current one.
async fn watch_map(
    router: std::sync::Weak<Router>,
    mut changes: futures::stream::BoxStream<'static, Result<ShardMap>>,
) {
    use futures::StreamExt;
    while let Some(change) = changes.next().await {
        let Some(router) = router.upgrade() else {
            return;
        };
        match change {
            Ok(map) => router.install(map),
            Err(e) => tracing::warn!(error = %e, "shard map unreadable; keeping the current one"),
        }
    }
}
