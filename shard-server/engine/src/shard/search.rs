//! Reads: searches (planned by `planner`: exact scan, graph with a predicate, or value graphs),
//! gets by id and counts, each run on the read pool.

use super::*;

impl Shard {
    /// Checks a search before it queues: vector, limit, ef and filter.
    pub fn validate_search(&self, req: &mut SearchRequest) -> Result<()> {
        self.config.check_vector("query vector", &req.vector)?;
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(Error::invalid(format!(
                "limit is {}, it must be between 1 and {MAX_LIMIT}",
                req.limit
            )));
        }
        if let Some(ef) = req.ef {
            if ef > MAX_LIMIT {
                return Err(Error::invalid(format!(
                    "ef is {ef}, the limit is {MAX_LIMIT}"
                )));
            }
        }
        if let Some(f) = &req.filter {
            f.check(&self.config)?;
        }
        if self.config.metric == Metric::Cosine {
            normalize(&mut req.vector);
        }
        Ok(())
    }

    /// Runs blocking read work on the read threads, refusing (RESOURCE_EXHAUSTED) when
    /// `max_queued_requests` reads are already waiting rather than queueing without bound.
    pub(super) async fn run_read<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shard = self.clone();
        let answer = self
            .reads
            .submit(move || work(&shard))
            .map_err(|e| match e {
                Rejected::Full { capacity } => Error::exhausted(format!(
                    "{capacity} reads are already waiting, the limit is {capacity} \
                 (--max-queued-requests); retry with backoff"
                )),
                Rejected::Closed => Error::unavailable("shard is shutting down"),
            })?;
        answer
            .await
            .map_err(|_| Error::internal("read failed: its thread panicked"))?
    }

    pub async fn search(self: &Arc<Self>, mut req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        self.validate_search(&mut req)?;
        let started = Instant::now();
        let result = self
            .run_read(move |shard| shard.search_blocking(&req))
            .await;
        self.metrics
            .search_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub async fn search_batch(
        self: &Arc<Self>,
        mut reqs: Vec<SearchRequest>,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        if reqs.is_empty() || reqs.len() > self.options.max_batch_points {
            return Err(Error::invalid(format!(
                "batch has {} searches, it must have between 1 and {}",
                reqs.len(),
                self.options.max_batch_points
            )));
        }
        for (i, r) in reqs.iter_mut().enumerate() {
            self.validate_search(r)
                .map_err(|e| Error::invalid(format!("searches[{i}]: {e}")))?;
        }
        let started = Instant::now();
        if self.batch_for_device(&reqs) {
            let (answer, reqs) = self
                .run_read(move |shard| Ok((shard.search_batch_on_device(&reqs), reqs)))
                .await?;
            if let Some(answer) = answer {
                self.metrics
                    .search_duration
                    .observe(started.elapsed().as_secs_f64());
                return answer;
            }
            return self.search_batch_on_cpu(reqs, started).await;
        }
        self.search_batch_on_cpu(reqs, started).await
    }

    async fn search_batch_on_cpu(
        self: &Arc<Self>,
        reqs: Vec<SearchRequest>,
        started: Instant,
    ) -> Result<Vec<Vec<ScoredPoint>>> {
        // A batch is spread over the read threads: on one thread its searches would wait for
        // each other while the other threads idle (routers forward a client's batch to each
        // shard as one batch).
        let chunks = batch_chunks(reqs, self.options.search_threads);
        let answers = futures::future::join_all(chunks.into_iter().map(|chunk| {
            self.run_read(move |shard| {
                chunk
                    .iter()
                    .map(|r| shard.search_blocking(r))
                    .collect::<Result<Vec<_>>>()
            })
        }))
        .await;
        let result = answers
            .into_iter()
            .collect::<Result<Vec<Vec<_>>>>()
            .map(|parts| parts.into_iter().flatten().collect());
        self.metrics
            .search_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The search itself, on a validated request (query already normalised for cosine).
    pub fn search_blocking(&self, req: &SearchRequest) -> Result<Vec<ScoredPoint>> {
        let metric = self.config.metric;
        // Exact plans over rounded in-memory copies keep every near-tie of the k-th score;
        // those are re-ranked below with the stored vectors, so exact means exact.
        let mut recheck = false;
        let hits: Vec<ScoredPoint> = {
            let st = self.state.read();
            let allowed = allowed_slots(&st, req.filter.as_ref());
            let candidates = allowed.as_ref().unwrap_or(&st.live);
            let ef = req.ef.unwrap_or(self.config.hnsw.ef_search);
            let oversample = self.config.quantization.oversample();
            let selectivity = candidates.len() as f64 / st.live_len().max(1) as f64;
            let budget = graph_budget(req.limit, ef, oversample, selectivity);
            let cover = match (&req.filter, &allowed) {
                (Some(f), Some(a)) if !req.exact => self.value_graphs.cover(f, a),
                _ => None,
            };
            let value_graph_breadth =
                value_graph_breadth(req.limit, ef, self.options.value_graphs.breadth_factor);
            let choice = self.options.cost_model.choose(&PlanInput {
                // A flat index has no graph to walk: every plan is a scan.
                exact_requested: req.exact || !self.keeps_graph(),
                dimension: self.config.dimension,
                matching: candidates.len(),
                matching_span: match (candidates.min(), candidates.max()) {
                    (Some(lo), Some(hi)) => u64::from(hi - lo) + 1,
                    _ => 0,
                },
                live: st.live_len(),
                graph_breadth: budget.breadth,
                value_graph_breadth,
                exact_scan_threshold: self.options.exact_scan_threshold,
                cover: cover.as_ref().map(|c| {
                    let parts = c.graphs.iter().map(|p| GraphPart {
                        members: p.members,
                        allowed: p.allowed,
                    });
                    (parts.collect(), c.lag.len())
                }),
            });
            self.metrics.count_plan(choice.plan.name());
            tracing::debug!(
                plan = choice.plan.name(),
                matching = candidates.len(),
                live = st.live_len(),
                exact_cost_us = choice.exact_cost,
                graph_cost_us = choice.graph_cost,
                value_graph_cost_us = ?choice.value_graph_cost,
                "search planned"
            );
            let top = match choice.plan {
                Plan::Exact => {
                    // On the GPU when it can answer: it narrows the scan to the candidates
                    // the CPU plan could keep, which are then scored here as a scan would.
                    let from_device = self.device_candidates(&st, req, candidates);
                    let slots: Vec<u32> =
                        from_device.unwrap_or_else(|| candidates.iter().collect());
                    let (top, inexact) = exact_top(&st, metric, req, &slots);
                    recheck = inexact;
                    top
                }
                Plan::ValueGraphs => {
                    let (Some(cover), Some(allowed)) = (&cover, &allowed) else {
                        return Err(Error::internal("value-graph plan without a cover"));
                    };
                    let accept = |key: u64| allowed.contains(key as u32);
                    let mut slots: Vec<u32> = Vec::new();
                    for part in &cover.graphs {
                        // A predicate only when the filter excludes some of the graph's points.
                        let predicate: Option<&dyn Fn(u64) -> bool> =
                            (part.allowed < part.members).then_some(&accept);
                        let found =
                            part.graph
                                .index
                                .search(&req.vector, value_graph_breadth, predicate)?;
                        slots.extend(
                            found
                                .into_iter()
                                .map(|(k, _)| k as u32)
                                .filter(|s| allowed.contains(*s)),
                        );
                    }
                    // Every candidate is rescored: a value graph's points are alike, and the
                    // quantized distances alone rank them poorly (measured: recall 0.86 with
                    // limit × 2 rescored, docs/benchmarks.md); rescoring costs ~35 ns each.
                    slots.extend(cover.lag.iter());
                    slots.sort_unstable();
                    slots.dedup();
                    scoring::top_k(metric, st.score_all(metric, &req.vector, &slots), req.limit)
                }
                Plan::Graph => {
                    let accept = |key: u64| allowed.as_ref().is_none_or(|a| a.contains(key as u32));
                    let graph = match &allowed {
                        None => self.index.search(&req.vector, budget.breadth, None)?,
                        Some(_) => self
                            .index
                            .search(&req.vector, budget.breadth, Some(&accept))?,
                    };
                    // Replaced or deleted points may linger in the graph until the indexer
                    // removes them; pending points are not in it yet and are scanned exactly.
                    // A slot the indexer has just added is in the graph and still pending
                    // until it takes the state lock: scored once, as pending.
                    let pending = &st.pending & candidates;
                    let from_graph = graph
                        .into_iter()
                        .map(|(k, _)| k as u32)
                        .filter(|s| st.live.contains(*s) && !pending.contains(*s));
                    rescore(metric, from_graph, pending.iter(), budget, req.limit, |s| {
                        st.score(metric, &req.vector, s)
                    })
                }
            };
            hits_of(&st, top)
        };
        self.finish(req, hits, recheck)
    }

    /// Reads what the hits of `req` need from storage: stored vectors to re-rank an exact
    /// plan's near-ties (`recheck`), payloads and vectors asked for.
    pub(super) fn finish(
        &self,
        req: &SearchRequest,
        hits: Vec<ScoredPoint>,
        recheck: bool,
    ) -> Result<Vec<ScoredPoint>> {
        let metric = self.config.metric;
        if !(recheck || req.with_payload || req.with_vector) {
            return Ok(hits);
        }
        // Stored records are read after the state lock is released, once per hit: the same
        // read serves the exact re-ranking and the payload and vector asked for.
        let mut read = Vec::with_capacity(hits.len());
        for hit in hits {
            let record = self.storage.get(&hit.id)?;
            read.push((hit, record));
        }
        if recheck {
            read = rerank_with_stored_vectors(metric, read, &req.vector, req.limit);
        }
        read.into_iter()
            .map(|(mut hit, record)| {
                fill_from_record(
                    &mut hit,
                    record.unwrap_or_default(),
                    req.with_payload,
                    req.with_vector,
                )?;
                Ok(hit)
            })
            .collect()
    }

    /// Live points among `ids`, in the order asked; missing and deleted ids are left out.
    pub async fn get(
        self: &Arc<Self>,
        ids: Vec<PointId>,
        with_vector: bool,
        with_payload: bool,
    ) -> Result<Vec<ScoredPoint>> {
        self.check_batch_len(ids.len())?;
        ids.iter().try_for_each(PointId::validate)?;
        self.run_read(move |shard| {
            let found: Vec<ScoredPoint> = {
                let st = shard.state.read();
                ids.into_iter()
                    .filter_map(|id| {
                        let e = *st.by_id.get(&id)?;
                        if st.hidden.contains(e.slot?) {
                            return None;
                        }
                        Some(ScoredPoint {
                            id,
                            score: 0.0,
                            version: e.version,
                            payload: None,
                            vector: None,
                        })
                    })
                    .collect()
            };
            found
                .into_iter()
                .map(|mut hit| {
                    if with_payload || with_vector {
                        let record = shard.storage.get(&hit.id)?.unwrap_or_default();
                        fill_from_record(&mut hit, record, with_payload, with_vector)?;
                    }
                    Ok(hit)
                })
                .collect()
        })
        .await
    }

    /// A page of live, visible points in id order from `offset` on (Qdrant's scroll). The
    /// page's ids come from the in-memory view (one pass over the matching slots keeping the
    /// `limit + 1` smallest ids), payloads and vectors from storage.
    pub async fn scroll(self: &Arc<Self>, req: ScrollRequest) -> Result<ScrollPage> {
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
        self.run_read(move |shard| {
            let (mut page, next_offset) = {
                let st = shard.state.read();
                let slots = match &req.filter {
                    Some(f) => st.visible(&st.payloads.evaluate(f, &st.live)),
                    None => st.visible(&st.live),
                };
                let ids = slots
                    .iter()
                    .map(|slot| &st.slot_ids[slot as usize])
                    .filter(|id| req.offset.as_ref().is_none_or(|o| *id >= o));
                let mut smallest = smallest_k(ids, req.limit + 1);
                let next_offset = (smallest.len() > req.limit)
                    .then(|| smallest.pop())
                    .flatten();
                let page: Vec<ScoredPoint> = smallest
                    .into_iter()
                    .map(|id| ScoredPoint {
                        id: id.clone(),
                        score: 0.0,
                        version: st.by_id.get(id).map_or(0, |e| e.version),
                        payload: None,
                        vector: None,
                    })
                    .collect();
                (page, next_offset.cloned())
            };
            if req.with_payload || req.with_vector {
                for hit in &mut page {
                    let record = shard.storage.get(&hit.id)?.unwrap_or_default();
                    fill_from_record(hit, record, req.with_payload, req.with_vector)?;
                }
            }
            Ok(ScrollPage {
                points: page,
                next_offset,
            })
        })
        .await
    }

    pub async fn count(self: &Arc<Self>, filter: Option<Filter>) -> Result<u64> {
        if let Some(f) = &filter {
            f.check(&self.config)?;
        }
        self.run_read(move |shard| {
            let st = shard.state.read();
            Ok(match &filter {
                Some(f) => st.visible(&st.payloads.evaluate(f, &st.live)).len(),
                None => st.visible_len(),
            })
        })
        .await
    }
}

/// The slots a search of `filter` may return, or `None` for every live slot (no filter and
/// nothing hidden). Points of partitions held but not served here (moving) are never
/// candidates.
pub(super) fn allowed_slots(st: &State, filter: Option<&Filter>) -> Option<RoaringBitmap> {
    let allowed = filter.map(|f| st.payloads.evaluate(f, &st.live));
    match allowed {
        _ if st.hidden.is_empty() => allowed,
        Some(a) => Some(st.visible(&a)),
        None => Some(st.visible(&st.live)),
    }
}

/// The exact plan's answer from the scores of `slots`: the best `limit`, or, over rounded
/// in-memory copies, every near-tie of the k-th as well (`true`: to be re-ranked with the
/// stored vectors).
pub(super) fn exact_top(
    st: &State,
    metric: Metric,
    req: &SearchRequest,
    slots: &[u32],
) -> (Vec<(u32, f32)>, bool) {
    let scored = st.score_all(metric, &req.vector, slots);
    match st.copy_score_error() {
        None => (scoring::top_k(metric, scored, req.limit), false),
        Some(error) => (
            scoring::near_top_k(metric, scored, req.limit, 2.0 * error),
            true,
        ),
    }
}

/// Hits of ranked slots (ids and versions), before payloads and vectors are read.
pub(super) fn hits_of(st: &State, top: Vec<(u32, f32)>) -> Vec<ScoredPoint> {
    top.into_iter()
        .map(|(slot, score)| {
            let id = st.slot_ids[slot as usize].clone();
            let version = st.by_id.get(&id).map_or(0, |e| e.version);
            ScoredPoint {
                id,
                score,
                version,
                payload: None,
                vector: None,
            }
        })
        .collect()
}

/// The `k` smallest items, in ascending order: one pass with a bounded max-heap.
pub(super) fn smallest_k<T: Ord>(items: impl Iterator<Item = T>, k: usize) -> Vec<T> {
    let mut heap = std::collections::BinaryHeap::with_capacity(k + 1);
    for item in items {
        if heap.len() < k {
            heap.push(item);
        } else if heap.peek().is_some_and(|top| item < *top) {
            heap.pop();
            heap.push(item);
        }
    }
    heap.into_sorted_vec()
}

/// Splits a batch, in order, into at most `threads` runs of near-equal length (at least one
/// search each), one per read thread.
pub(super) fn batch_chunks<T>(items: Vec<T>, threads: usize) -> Vec<Vec<T>> {
    let parts = threads.clamp(1, items.len().max(1));
    let (base, extra) = (items.len() / parts, items.len() % parts);
    let mut items = items.into_iter();
    (0..parts)
        .map(|p| items.by_ref().take(base + usize::from(p < extra)).collect())
        .filter(|c: &Vec<T>| !c.is_empty())
        .collect()
}

/// Breadth of a value-graph walk: `factor` times the asked breadth (and the limit). The points
/// of one value are close to each other (one topic, one tenant), and the walk needs a wider
/// beam to rank a crowded neighbourhood: measured on wordnet-minilm-384 (7,964 `noun.plant`
/// points), recall@10 0.86 at breadth 64, 0.94 at 128, 0.97 at 192 (docs/benchmarks.md).
/// Every candidate is rescored, so the quantization adds no ranking error on top.
pub(super) fn value_graph_breadth(limit: usize, ef: usize, factor: usize) -> usize {
    ef.max(limit).saturating_mul(factor.max(1))
}

/// Scores the hits again with their vectors as stored (full precision) and keeps the best
/// `limit`. A hit whose point was deleted meanwhile is dropped.
pub(super) fn rerank_with_stored_vectors(
    metric: Metric,
    read: Vec<(ScoredPoint, Option<Record>)>,
    query: &[f32],
    limit: usize,
) -> Vec<(ScoredPoint, Option<Record>)> {
    let mut rescored: Vec<(ScoredPoint, Option<Record>)> = read
        .into_iter()
        .filter_map(|(mut hit, record)| {
            hit.score = scoring::score(metric, query, record.as_ref()?.vector.as_ref()?);
            Some((hit, record))
        })
        .collect();
    // Stable: equal scores keep the order of the in-memory ranking.
    rescored.sort_by(|(a, _), (b, _)| scoring::better(metric, &(0, a.score), &(0, b.score)));
    rescored.truncate(limit);
    rescored
}

/// Sets a hit's payload and vector, as asked, from its stored record: the vector exactly as
/// it was written, not the in-memory copy, which may be f16 (see `vectors::Precision`).
pub(super) fn fill_from_record(
    hit: &mut ScoredPoint,
    record: Record,
    payload: bool,
    vector: bool,
) -> Result<()> {
    if payload {
        hit.payload = Some(if record.payload.is_empty() {
            Map::new()
        } else {
            serde_json::from_slice(&record.payload).map_err(|e| {
                Error::internal(format!("stored payload of {} is unreadable: {e}", hit.id))
            })?
        });
    }
    if vector {
        hit.vector = record.vector;
    }
    Ok(())
}
