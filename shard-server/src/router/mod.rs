//! The router: a stateless front door that serves the same API as a shard. Writes go to every
//! replica of the shard owning each id's partition, with a router-assigned version, and are
//! acknowledged per the write consistency; searches fan out to one replica of every shard and
//! the per-shard top-k lists are merged. The shard map comes from a file that is re-read when
//! its version grows. I/O: gRPC to shards, the shard-map file.

mod cache;
mod map_source;
mod merge;
mod replicas;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use vecshard_proto::shard_map::ShardMap;
use vecshard_proto::v1 as pb;

use crate::api::grpc::{id_from_pb, id_to_pb};
use crate::api::{Backend, ReadOptions, SearchResults};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::model::{
    check_batch_len, next_version, CollectionConfig, FieldKind, HnswParams, IndexedField, Metric,
    Point, PointId, Quantization, MAX_LIMIT,
};
use crate::shard::{DeleteTarget, ScoredPoint, SearchRequest, WriteOutcome};
use cache::{cache_key, ResultCache};
pub use map_source::MapSource;
pub use merge::{group_by_shard, merge_top_k};
pub use replicas::HedgePolicy;
use replicas::{LatencyWindow, Replica, ShardRoute};

/// How many replicas must acknowledge a write.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WriteConsistency {
    One,
    Quorum,
    All,
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
}

struct Topology {
    map: ShardMap,
    owners: Vec<usize>,
    shards: Vec<ShardRoute>,
}

pub struct Router {
    config: CollectionConfig,
    options: RouterOptions,
    topology: RwLock<Arc<Topology>>,
    metrics: Metrics,
    last_version: Mutex<u64>,
    cache: ResultCache,
}

/// What every shard route is built with.
struct RouteSettings {
    timeout: Duration,
    hedge: HedgePolicy,
    hedged_reads: prometheus_client::metrics::counter::Counter,
}

fn build_topology(
    map: ShardMap,
    previous: Option<&Topology>,
    settings: &RouteSettings,
) -> Result<Topology> {
    let known: BTreeMap<&str, &Arc<Replica>> = previous
        .into_iter()
        .flat_map(|t| t.shards.iter().flat_map(|s| s.replicas.iter()))
        .map(|r| (r.addr.as_str(), r))
        .collect();
    let shards = map
        .shards
        .iter()
        .map(|s| {
            let replicas = s
                .replicas
                .iter()
                .map(|addr| match known.get(addr.as_str()) {
                    Some(r) => Ok((*r).clone()),
                    None => Replica::connect(addr, settings.timeout).map(Arc::new),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(ShardRoute {
                name: s.name.clone(),
                replicas,
                latencies: LatencyWindow::new(),
                hedge: settings.hedge,
                hedged_reads: settings.hedged_reads.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Topology {
        owners: map.owners(),
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
            cache,
        });
        let changes = router.options.shard_map.changes().await?;
        tokio::spawn(watch_map(Arc::downgrade(&router), changes));
        Ok(router)
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Hybrid logical clock: wall-clock milliseconds << 16, never going back.
    fn next_version(&self) -> u64 {
        next_version(&mut self.last_version.lock())
    }

    fn check_batch(&self, n: usize) -> Result<()> {
        check_batch_len(n, self.options.max_batch_points)
    }

    /// Sends one write to every replica of a shard; succeeds once `required` acknowledge.
    /// The other replicas' calls continue in the background.
    async fn write_to_shard(
        &self,
        shard: &ShardRoute,
        request: WriteRequest,
    ) -> Result<pb::WriteResponse> {
        let n = shard.replicas.len();
        let required = self.options.write_consistency.required(n);
        let (tx, mut rx) = mpsc::channel(n);
        let give_up = std::time::Instant::now() + self.options.request_timeout;
        for replica in &shard.replicas {
            let (replica, request, tx) = (replica.clone(), request.clone(), tx.clone());
            tokio::spawn(async move {
                let result = request.send_until(&replica, give_up).await;
                let _ = tx.send((replica.addr.clone(), result)).await;
            });
        }
        drop(tx);
        let (mut acks, mut failures) = (Vec::new(), Vec::new());
        while let Some((addr, result)) = rx.recv().await {
            match result {
                Ok(resp) => {
                    acks.push(resp);
                    if acks.len() >= required {
                        break;
                    }
                }
                // A replica refusing the input refuses it for all: report it as is.
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(Error::invalid(status.message()))
                }
                Err(status) => failures.push(format!("{addr}: {}", status.message())),
            }
        }
        if acks.len() >= required {
            let affected = acks.iter().map(|a| a.affected).max().unwrap_or(0);
            let mut best = acks.swap_remove(0);
            best.affected = affected;
            return Ok(best);
        }
        Err(Error::unavailable(format!(
            "shard {}: {} of {n} replicas acknowledged, write consistency {:?} needs {required} ({})",
            shard.name,
            acks.len(),
            self.options.write_consistency,
            failures.join("; ")
        )))
    }

    async fn write_grouped(
        &self,
        groups: Vec<(usize, WriteRequest)>,
        version: u64,
    ) -> Result<WriteOutcome> {
        let topology = self.topology();
        let calls = groups.into_iter().map(|(shard, request)| {
            let topology = topology.clone();
            async move { self.write_to_shard(&topology.shards[shard], request).await }
        });
        let results = join_all(calls).await;
        // Even a failed write may have reached some replicas: cached results may be stale.
        self.cache.invalidate();
        let mut affected = 0;
        for r in results {
            affected += r?.affected;
        }
        Ok(WriteOutcome {
            sequence: 0,
            affected,
            version,
        })
    }
}

impl Router {
    /// Sends the searches as one batch to one replica of every shard and merges each query's
    /// per-shard lists. With `allow_partial`, shards that cannot answer are left out and
    /// named instead of failing the whole search (unless none answers).
    async fn fan_out_search(
        &self,
        reqs: &[&SearchRequest],
        options: ReadOptions,
    ) -> Result<SearchResults> {
        let topology = self.topology();
        let deadline = options.timeout.map(|t| std::time::Instant::now() + t);
        let batch = pb::SearchBatchRequest {
            collection: self.config.name.clone(),
            searches: reqs
                .iter()
                .map(|r| search_to_pb(r, &self.config.name))
                .collect(),
            allow_partial: false,
        };
        let calls = topology.shards.iter().map(|route| {
            let batch = batch.clone();
            async move {
                route
                    .read(deadline, batch, |mut c, r| async move {
                        c.search_batch(r).await
                    })
                    .await
            }
        });
        let mut per_query: Vec<Vec<Vec<ScoredPoint>>> = reqs.iter().map(|_| Vec::new()).collect();
        let mut unavailable_shards = Vec::new();
        let mut first_error = None;
        for (result, route) in join_all(calls).await.into_iter().zip(&topology.shards) {
            let response = match result {
                Ok(r) => r,
                Err(e @ (Error::Unavailable { .. } | Error::DeadlineExceeded { .. }))
                    if options.allow_partial =>
                {
                    unavailable_shards.push(route.name.clone());
                    first_error.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (q, resp) in response.results.into_iter().enumerate() {
                let hits = resp
                    .result
                    .into_iter()
                    .map(scored_from_pb)
                    .collect::<Result<Vec<_>>>()?;
                per_query[q].push(hits);
            }
        }
        if unavailable_shards.len() == topology.shards.len() {
            return Err(first_error.unwrap_or_else(|| Error::unavailable("no shards")));
        }
        if !unavailable_shards.is_empty() {
            self.metrics.partial_results.inc();
        }
        Ok(SearchResults {
            results: per_query
                .into_iter()
                .zip(reqs)
                .map(|(lists, r)| merge_top_k(self.config.metric, lists, r.limit))
                .collect(),
            unavailable_shards,
        })
    }
}

/// One write, ready to send to any replica of a shard.
#[derive(Clone)]
enum WriteRequest {
    Upsert(pb::UpsertRequest),
    Delete(pb::DeleteRequest),
}

impl WriteRequest {
    /// Sends the write, and sends it again while the replica is unreachable (UNAVAILABLE: no
    /// connection, its name not resolvable yet, the connection lost), with growing pauses,
    /// until `give_up`. A replica that is restarting, or whose DNS record is still being
    /// published, then delays writes instead of failing them. Safe to repeat: the write
    /// carries its router-assigned version, and a replica applies a version once (a repeat
    /// of a write that did arrive changes nothing).
    async fn send_until(
        &self,
        replica: &Replica,
        give_up: std::time::Instant,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut pause = Duration::from_millis(20);
        loop {
            let result = self.send(replica).await;
            match &result {
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && std::time::Instant::now() + pause < give_up =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                _ => return result,
            }
        }
    }

    async fn send(
        &self,
        replica: &Replica,
    ) -> std::result::Result<pb::WriteResponse, tonic::Status> {
        let mut client = replica.client.clone();
        let started = std::time::Instant::now();
        let result = match self {
            WriteRequest::Upsert(r) => client.upsert(r.clone()).await,
            WriteRequest::Delete(r) => client.delete(r.clone()).await,
        };
        replica.observe(&result, started.elapsed());
        result.map(tonic::Response::into_inner)
    }
}

fn route_settings(options: &RouterOptions, metrics: &Metrics) -> RouteSettings {
    RouteSettings {
        timeout: options.request_timeout,
        hedge: options.hedge,
        hedged_reads: metrics.hedged_reads.clone(),
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
        let current = router.topology();
        match change {
            Ok(map) if map.version > current.map.version => {
                let settings = route_settings(&router.options, &router.metrics);
                match build_topology(map, Some(&current), &settings) {
                    Ok(t) => {
                        tracing::info!(version = t.map.version, "shard map updated");
                        *router.topology.write() = Arc::new(t);
                    }
                    Err(e) => tracing::warn!(error = %e, "new shard map rejected"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "shard map unreadable; keeping the current one"),
        }
    }
}

fn config_from_info(info: &pb::CollectionInfo, collection: &str) -> Result<CollectionConfig> {
    let metric = match info.metric.as_str() {
        "cosine" => Metric::Cosine,
        "dot" => Metric::Dot,
        "l2" => Metric::L2,
        other => {
            return Err(Error::internal(format!(
                "shard reports unknown metric {other:?}"
            )))
        }
    };
    let quantization = match info.quantization.as_str() {
        "f32" => Quantization::F32,
        "f16" => Quantization::F16,
        "b1" => Quantization::B1,
        _ => Quantization::I8,
    };
    let indexed_fields = info
        .indexed_fields
        .iter()
        .filter_map(|f| {
            let kind = match f.kind.as_str() {
                "keyword" => FieldKind::Keyword,
                "integer" => FieldKind::Integer,
                "float" => FieldKind::Float,
                _ => return None,
            };
            Some(IndexedField {
                name: f.name.clone(),
                kind,
            })
        })
        .collect();
    if info.name != collection {
        return Err(Error::invalid(format!(
            "shard serves collection {:?}, the shard map names {collection:?}",
            info.name
        )));
    }
    Ok(CollectionConfig {
        name: info.name.clone(),
        dimension: info.dimension as usize,
        metric,
        hnsw: HnswParams {
            m: info.hnsw_m as usize,
            ef_construction: info.hnsw_ef_construction as usize,
            ef_search: info.hnsw_ef_search as usize,
        },
        quantization,
        indexed_fields,
    })
}

fn point_to_pb(p: Point) -> pb::Point {
    pb::Point {
        id: Some(id_to_pb(p.id)),
        vector: p.vector,
        payload_json: serde_json::Value::Object(p.payload).to_string(),
    }
}

fn scored_from_pb(p: pb::ScoredPoint) -> Result<ScoredPoint> {
    Ok(ScoredPoint {
        id: id_from_pb(p.id, "result id")?,
        score: p.score,
        version: p.version,
        payload: (!p.payload_json.is_empty())
            .then(|| crate::api::payload_from_text(&p.payload_json, "payload"))
            .transpose()?,
        vector: (!p.vector.is_empty()).then_some(p.vector),
    })
}

fn search_to_pb(r: &SearchRequest, collection: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: collection.to_string(),
        vector: r.vector.clone(),
        limit: r.limit as u32,
        filter_json: r
            .filter
            .as_ref()
            .map(|f| f.to_json().to_string())
            .unwrap_or_default(),
        ef: r.ef.unwrap_or(0) as u32,
        exact: r.exact,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
        allow_partial: false,
    }
}

#[tonic::async_trait]
impl Backend for Router {
    fn collection(&self) -> &str {
        &self.config.name
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn max_request_bytes(&self) -> usize {
        self.options.max_batch_bytes
    }
    fn is_ready(&self) -> bool {
        true
    }

    async fn upsert(&self, points: Vec<Point>, version: u64) -> Result<WriteOutcome> {
        let started = std::time::Instant::now();
        self.check_batch(points.len())?;
        for (i, p) in points.iter().enumerate() {
            p.id.validate()
                .map_err(|e| Error::invalid(format!("points[{i}]: {e}")))?;
            self.config
                .check_vector("vector", &p.vector)
                .map_err(|e| Error::invalid(format!("points[{i}] (id {}): {e}", p.id)))?;
        }
        let version = if version == 0 {
            self.next_version()
        } else {
            version
        };
        let topology = self.topology();
        let groups = group_by_shard(&points, |p| &p.id, &topology.owners);
        let mut slots: Vec<Option<Point>> = points.into_iter().map(Some).collect();
        let requests = groups
            .into_iter()
            .map(|(shard, members)| {
                let points = members
                    .into_iter()
                    .filter_map(|i| slots[i].take())
                    .map(point_to_pb)
                    .collect();
                (
                    shard,
                    WriteRequest::Upsert(pb::UpsertRequest {
                        collection: self.config.name.clone(),
                        points,
                        version,
                    }),
                )
            })
            .collect();
        let outcome = self.write_grouped(requests, version).await;
        self.metrics
            .upsert_duration
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn delete(&self, target: DeleteTarget, version: u64) -> Result<WriteOutcome> {
        let version = if version == 0 {
            self.next_version()
        } else {
            version
        };
        let topology = self.topology();
        let collection = self.config.name.clone();
        let requests = match target {
            DeleteTarget::Ids(ids) => {
                self.check_batch(ids.len())?;
                ids.iter().try_for_each(PointId::validate)?;
                group_by_shard(&ids, |i| i, &topology.owners)
                    .into_iter()
                    .map(|(shard, members)| {
                        let ids = members
                            .into_iter()
                            .map(|i| id_to_pb(ids[i].clone()))
                            .collect();
                        (
                            shard,
                            WriteRequest::Delete(pb::DeleteRequest {
                                collection: collection.clone(),
                                ids,
                                filter_json: String::new(),
                                version,
                            }),
                        )
                    })
                    .collect()
            }
            DeleteTarget::Filter(filter) => {
                filter.check(&self.config)?;
                let filter_json = filter.to_json().to_string();
                (0..topology.shards.len())
                    .map(|shard| {
                        (
                            shard,
                            WriteRequest::Delete(pb::DeleteRequest {
                                collection: collection.clone(),
                                ids: vec![],
                                filter_json: filter_json.clone(),
                                version,
                            }),
                        )
                    })
                    .collect()
            }
        };
        self.write_grouped(requests, version).await
    }

    async fn get(
        &self,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        self.check_batch(ids.len())?;
        ids.iter().try_for_each(PointId::validate)?;
        let topology = self.topology();
        let groups = group_by_shard(&ids, |i| i, &topology.owners);
        let calls = groups.into_keys().map(|shard| {
            let route = &topology.shards[shard];
            let request = pb::GetRequest {
                collection: self.config.name.clone(),
                ids: ids
                    .iter()
                    .filter(|id| {
                        topology.owners[vecshard_proto::shard_map::partition_of(
                            &id.to_bytes(),
                            topology.owners.len() as u32,
                        ) as usize]
                            == shard
                    })
                    .cloned()
                    .map(id_to_pb)
                    .collect(),
                with_vector,
                with_payload: Some(with_payload),
            };
            async move {
                route
                    .read(None, request, |mut c, r| async move { c.get(r).await })
                    .await
            }
        });
        let mut found: BTreeMap<PointId, ScoredPoint> = BTreeMap::new();
        for result in join_all(calls).await {
            for p in result?.points {
                let s = scored_from_pb(pb::ScoredPoint {
                    id: p.id,
                    score: 0.0,
                    payload_json: p.payload_json,
                    vector: p.vector,
                    version: p.version,
                })?;
                let s = ScoredPoint {
                    payload: s.payload.or_else(|| with_payload.then(Default::default)),
                    ..s
                };
                found.insert(s.id.clone(), s);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    async fn search_batch(
        &self,
        reqs: Vec<SearchRequest>,
        options: ReadOptions,
    ) -> Result<SearchResults> {
        let started = std::time::Instant::now();
        if reqs.is_empty() || reqs.len() > self.options.max_batch_points {
            return Err(Error::invalid(format!(
                "batch has {} searches, it must have between 1 and {}",
                reqs.len(),
                self.options.max_batch_points
            )));
        }
        for (i, r) in reqs.iter().enumerate() {
            let at = |e: Error| {
                if reqs.len() > 1 {
                    Error::invalid(format!("searches[{i}]: {e}"))
                } else {
                    e
                }
            };
            self.config
                .check_vector("query vector", &r.vector)
                .map_err(at)?;
            if r.limit == 0 || r.limit > MAX_LIMIT {
                return Err(at(Error::invalid(format!(
                    "limit is {}, it must be between 1 and {MAX_LIMIT}",
                    r.limit
                ))));
            }
            if let Some(f) = &r.filter {
                f.check(&self.config).map_err(at)?;
            }
        }
        // Answer what the cache holds; fan out only the rest.
        let generation = self.cache.generation();
        // No keys (and no lookups counted) when the cache is off: a key copies the vector.
        let keys: Option<Vec<Vec<u8>>> = self
            .cache
            .enabled()
            .then(|| reqs.iter().map(cache_key).collect());
        let mut results: Vec<Option<Vec<ScoredPoint>>> = match &keys {
            Some(keys) => keys.iter().map(|k| self.cache.get(k)).collect(),
            None => vec![None; reqs.len()],
        };
        let misses: Vec<usize> = (0..reqs.len()).filter(|i| results[*i].is_none()).collect();
        if keys.is_some() {
            self.metrics
                .count_cache(reqs.len() - misses.len(), misses.len());
        }
        let mut unavailable_shards = Vec::new();
        if !misses.is_empty() {
            let asked: Vec<&SearchRequest> = misses.iter().map(|i| &reqs[*i]).collect();
            let merged = self.fan_out_search(&asked, options).await?;
            // A partial answer must not be served later as if it were whole.
            let complete = merged.unavailable_shards.is_empty();
            for (i, hits) in misses.into_iter().zip(merged.results) {
                if let (true, Some(keys)) = (complete, &keys) {
                    self.cache.put(keys[i].clone(), generation, hits.clone());
                }
                results[i] = Some(hits);
            }
            unavailable_shards = merged.unavailable_shards;
        }
        self.metrics
            .search_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(SearchResults {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
            unavailable_shards,
        })
    }

    async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        if let Some(f) = &filter {
            f.check(&self.config)?;
        }
        let filter_json = filter.map(|f| f.to_json().to_string()).unwrap_or_default();
        let topology = self.topology();
        let calls = topology.shards.iter().map(|route| {
            let request = pb::CountRequest {
                collection: self.config.name.clone(),
                filter_json: filter_json.clone(),
            };
            async move {
                route
                    .read(None, request, |mut c, r| async move { c.count(r).await })
                    .await
            }
        });
        let mut total = 0;
        for r in join_all(calls).await {
            total += r?.count;
        }
        Ok(total)
    }

    async fn cluster(&self) -> Result<pb::ClusterStatus> {
        let topology = self.topology();
        Ok(
            status::cluster_status(&topology, &self.config.name, self.options.request_timeout)
                .await,
        )
    }

    async fn info(&self) -> Result<pb::CollectionInfo> {
        let topology = self.topology();
        let calls = topology.shards.iter().map(|route| async move {
            route
                .read(None, pb::InfoRequest::default(), |mut c, r| async move {
                    c.info(r).await
                })
                .await
        });
        let mut total: Option<pb::CollectionInfo> = None;
        for r in join_all(calls).await {
            let info = r?;
            total = Some(match total {
                None => info,
                Some(mut t) => {
                    t.points += info.points;
                    t.indexed_points += info.indexed_points;
                    t.pending_points += info.pending_points;
                    t.index_memory_bytes += info.index_memory_bytes;
                    t.wal_sequence = t.wal_sequence.max(info.wal_sequence);
                    if info.status != "green" {
                        t.status = info.status;
                    }
                    t
                }
            });
        }
        total.ok_or_else(|| Error::unavailable("no shards"))
    }
}
