//! The router's reads: searches fan out to one replica of every shard (hedged, cached) and the
//! per-shard top-k lists are merged; gets go to the owners of the ids; counts and info add up
//! every shard's answer.

use std::collections::BTreeMap;

use futures::future::join_all;
use vecshard_core::convert::{
    retrieved_from_pb, scored_from_pb, scroll_page_from_pb, scroll_to_pb, search_to_pb,
};
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::model::{PointId, MAX_LIMIT};
use vecshard_core::request::{
    ReadOptions, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest, SearchResults,
};
use vecshard_proto::v1 as pb;

use crate::cache::cache_key;
use crate::merge::{group_by_shard, merge_top_k};
use crate::{status, Router};

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

    pub async fn get(
        &self,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        self.check_batch(ids.len())?;
        ids.iter().try_for_each(PointId::validate)?;
        self.on_current_map(|| self.get_once(&ids, with_vector, with_payload))
            .await
    }

    async fn get_once(
        &self,
        ids: &[PointId],
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        let topology = self.topology();
        let groups = group_by_shard(ids, |i| i, &topology.owners);
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
                    .map(pb::PointId::from)
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
                let s = retrieved_from_pb(p)?;
                let s = ScoredPoint {
                    payload: s.payload.or_else(|| with_payload.then(Default::default)),
                    ..s
                };
                found.insert(s.id.clone(), s);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    pub async fn search_batch(
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
            let merged = self
                .on_current_map(|| self.fan_out_search(&asked, options))
                .await?;
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

    pub async fn count(&self, filter: Option<Filter>) -> Result<u64> {
        if let Some(f) = &filter {
            f.check(&self.config)?;
        }
        let filter_json = filter.map(|f| f.to_json().to_string()).unwrap_or_default();
        self.on_current_map(|| self.count_once(&filter_json)).await
    }

    async fn count_once(&self, filter_json: &str) -> Result<u64> {
        let topology = self.topology();
        let calls = topology.shards.iter().map(|route| {
            let request = pb::CountRequest {
                collection: self.config.name.clone(),
                filter_json: filter_json.to_string(),
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

    /// A page of points in id order: every shard gives its first `limit` points from the
    /// offset on, and the merge keeps the `limit` smallest ids (`ScrollPage::merge`).
    pub async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage> {
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(Error::invalid(format!(
                "limit is {}, it must be between 1 and {MAX_LIMIT}",
                req.limit
            )));
        }
        if let Some(f) = &req.filter {
            f.check(&self.config)?;
        }
        if let Some(offset) = &req.offset {
            offset.validate()?;
        }
        let request = scroll_to_pb(&req, &self.config.name);
        self.on_current_map(|| self.scroll_once(&request, req.with_payload))
            .await
            .map(|pages| ScrollPage::merge(pages, req.limit))
    }

    async fn scroll_once(
        &self,
        request: &pb::ScrollRequest,
        with_payload: bool,
    ) -> Result<Vec<ScrollPage>> {
        let topology = self.topology();
        let calls = topology.shards.iter().map(|route| async move {
            route
                .read(None, request.clone(), |mut c, r| async move {
                    c.scroll(r).await
                })
                .await
        });
        join_all(calls)
            .await
            .into_iter()
            .map(|r| scroll_page_from_pb(r?, with_payload))
            .collect()
    }

    pub async fn cluster(&self) -> Result<pb::ClusterStatus> {
        let topology = self.topology();
        Ok(
            status::cluster_status(&topology, &self.config.name, self.options.request_timeout)
                .await,
        )
    }

    pub async fn info(&self) -> Result<pb::CollectionInfo> {
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
                    if !t.device.split(" | ").any(|d| d == info.device) {
                        t.device = format!("{} | {}", t.device, info.device);
                    }
                    t
                }
            });
        }
        let mut total = total.ok_or_else(|| Error::unavailable("no shards"))?;
        // The map the router routes with; shards' own ownership lists are per shard.
        total.map_version = topology.map.version;
        total.readable_partitions.clear();
        total.writable_partitions.clear();
        total.max_version = 0;
        Ok(total)
    }
}
