//! The points endpoints in Qdrant's shapes: upsert, retrieve, delete, search (and batch), the
//! universal query (and batch), scroll and count.

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::http::{envelope, known_fields, params, parse_object, respond, Body, Shared};
use super::qdrant::{
    above_threshold, check_using, mmr_select, point_json, query_target, refuse_fields, selector,
    vector_input, with_vector, PayloadSelector, QueryTarget, Selector,
};
use super::{check_collection, Backend};
use vecshard_core::convert::id_from_json;
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::model::{Metric, Point, PointId, MAX_LIMIT};
use vecshard_core::request::{
    DeleteTarget, ReadOptions, ScoredPoint, ScrollRequest, SearchRequest, WriteOutcome,
};

/// Fields Qdrant accepts that name features vecshard lacks.
const SHARD_KEY: (&str, &str) = ("shard_key", "shard_key (custom sharding)");

/// Qdrant's `UpdateResult` with vecshard's write outcome beside. vecshard answers only once the
/// write is applied (on the replicas its write consistency asks for): `completed` when the
/// client asked to wait, `acknowledged` otherwise, as Qdrant does.
pub(super) fn write_result(o: WriteOutcome, wait: bool) -> Value {
    json!({"operation_id": o.sequence, "status": if wait { "completed" } else { "acknowledged" },
           "sequence": o.sequence, "affected": o.affected, "version": o.version})
}

fn filter_of(body: &Map<String, Value>) -> Result<Option<Filter>> {
    body.get("filter")
        .filter(|f| !f.is_null())
        .map(|f| Filter::parse(f, "filter"))
        .transpose()
}

fn usize_field(body: &Map<String, Value>, name: &str, default: usize) -> Result<usize> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
            Error::invalid(format!("{name} must be a non-negative integer, got {v}"))
        }),
    }
}

fn point_from_json(v: &Value, i: usize) -> Result<Point> {
    let at = |e: Error| Error::invalid(format!("points[{i}]: {e}"));
    let obj = v
        .as_object()
        .ok_or_else(|| Error::invalid(format!("points[{i}] must be an object")))?;
    known_fields(obj, &["id", "vector", "payload"]).map_err(at)?;
    let vector = obj
        .get("vector")
        .ok_or_else(|| Error::invalid(format!("points[{i}].vector is required")))?;
    Ok(Point {
        id: id_from_json(
            obj.get("id").unwrap_or(&Value::Null),
            &format!("points[{i}].id"),
        )?,
        vector: vector_input(vector, &format!("points[{i}].vector"))?,
        payload: payload_object(obj.get("payload"), &format!("points[{i}].payload"))?,
    })
}

fn payload_object(v: Option<&Value>, path: &str) -> Result<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(other) => Err(Error::invalid(format!(
            "{path} must be an object, got {other}"
        ))),
    }
}

/// Qdrant's column form: `{"batch": {"ids": [..], "vectors": [..], "payloads": [..]}}`.
fn points_from_batch(batch: &Value) -> Result<Vec<Point>> {
    let list = |name: &str| batch.get(name).and_then(Value::as_array);
    let ids = list("ids").ok_or_else(|| Error::invalid("batch.ids must be a list"))?;
    let vectors = match batch.get("vectors") {
        Some(Value::Array(v)) => v.clone(),
        Some(Value::Object(named)) if named.len() == 1 && named.contains_key("") => named[""]
            .as_array()
            .cloned()
            .ok_or_else(|| Error::invalid("batch.vectors[\"\"] must be a list"))?,
        _ => return Err(Error::invalid("batch.vectors must be a list of vectors")),
    };
    if vectors.len() != ids.len() {
        return Err(Error::invalid(format!(
            "batch has {} ids and {} vectors; they must match",
            ids.len(),
            vectors.len()
        )));
    }
    let payloads = list("payloads");
    if payloads.is_some_and(|p| p.len() != ids.len()) {
        return Err(Error::invalid("batch.payloads must have one entry per id"));
    }
    ids.iter()
        .zip(&vectors)
        .enumerate()
        .map(|(i, (id, vector))| {
            Ok(Point {
                id: id_from_json(id, &format!("batch.ids[{i}]"))?,
                vector: vector_input(vector, &format!("batch.vectors[{i}]"))?,
                payload: payload_object(
                    payloads.and_then(|p| p.get(i)),
                    &format!("batch.payloads[{i}]"),
                )?,
            })
        })
        .collect()
}

pub async fn upsert(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let outcome = upsert_body(&*shard, &body).await?;
        Ok(envelope(write_result(outcome, params.wait), started))
    }
    .await;
    respond(&*shard, "upsert", result)
}

/// An upsert body: `points` (a list) or `batch` (columns), and an optional `version`.
pub(super) async fn upsert_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
) -> Result<WriteOutcome> {
    known_fields(
        body,
        &["points", "batch", "version", "shard_key", "update_filter"],
    )?;
    refuse_fields(
        body,
        &[
            SHARD_KEY,
            ("update_filter", "update_filter (conditional upserts)"),
        ],
    )?;
    let points = match (body.get("points"), body.get("batch")) {
        (Some(Value::Array(list)), None) => list
            .iter()
            .enumerate()
            .map(|(i, p)| point_from_json(p, i))
            .collect::<Result<Vec<_>>>()?,
        (None, Some(batch)) => points_from_batch(batch)?,
        _ => {
            return Err(Error::invalid(
                "give exactly one of \"points\" (a list of points) or \"batch\"",
            ))
        }
    };
    let version = usize_field(body, "version", 0)? as u64;
    shard.upsert(points, version, 0).await
}

pub async fn delete(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let outcome = delete_body(&*shard, &body).await?;
        Ok(envelope(write_result(outcome, params.wait), started))
    }
    .await;
    respond(&*shard, "delete", result)
}

/// A delete body: point ids or a filter, and an optional `version`.
pub(super) async fn delete_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
) -> Result<WriteOutcome> {
    known_fields(body, &["points", "ids", "filter", "version", "shard_key"])?;
    refuse_fields(body, &[SHARD_KEY])?;
    let target = match selector(body)? {
        Selector::Ids(ids) => DeleteTarget::Ids(ids),
        Selector::Filter(f) => DeleteTarget::Filter(f),
    };
    let version = usize_field(body, "version", 0)? as u64;
    shard.delete(target, version, 0).await
}

pub async fn retrieve(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        Ok(envelope(retrieve_body(&*shard, &body).await?, started))
    }
    .await;
    respond(&*shard, "get", result)
}

/// A retrieve body: `ids` and the selectors; the points found, as a list.
pub(super) async fn retrieve_body(shard: &dyn Backend, body: &Map<String, Value>) -> Result<Value> {
    known_fields(
        body,
        &[
            "ids",
            "with_payload",
            "with_vector",
            "with_vectors",
            "shard_key",
        ],
    )?;
    refuse_fields(body, &[SHARD_KEY])?;
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("ids must be a list of point ids"))?
        .iter()
        .enumerate()
        .map(|(i, v)| id_from_json(v, &format!("ids[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let payload = PayloadSelector::parse(body.get("with_payload"), true)?;
    let vector = with_vector(body.get("with_vector").or(body.get("with_vectors")))?;
    let found = shard.get(ids, vector, payload.wanted()).await?;
    let points: Vec<Value> = found
        .into_iter()
        .map(|p| point_json(p, false, &payload))
        .collect();
    Ok(Value::Array(points))
}

pub async fn retrieve_one(
    State(shard): State<Shared>,
    Path((c, id)): Path<(String, String)>,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        // A path segment of digits is a numeric id, as Qdrant reads it.
        let id = match id.parse::<u64>() {
            Ok(n) => PointId::Num(n),
            Err(_) => id_from_json(&Value::String(id.clone()), "id")?,
        };
        let found = shard.get(vec![id.clone()], true, true).await?;
        let point = found
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found(format!("point {id} not found")))?;
        Ok(envelope(
            point_json(point, false, &PayloadSelector::All),
            started,
        ))
    }
    .await;
    respond(&*shard, "get", result)
}

/// A nearest-neighbour search as a search or query body asks for it, and what is done to its
/// hits afterwards (offset, score threshold, payload selector).
struct Knn {
    req: SearchRequest,
    /// Hits answered (after `offset`).
    limit: usize,
    offset: usize,
    /// Maximal marginal relevance with this diversity over the `req.limit` nearest; the
    /// vectors it needs are dropped from the answer unless `vectors_asked`.
    mmr: Option<f32>,
    vectors_asked: bool,
    threshold: Option<f32>,
    payload: PayloadSelector,
    allow_partial: bool,
}

/// Fields of a search body (`points/search`, `search/batch`).
const SEARCH_FIELDS: &[&str] = &[
    "vector",
    "filter",
    "params",
    "limit",
    "offset",
    "with_payload",
    "with_vector",
    "with_vectors",
    "score_threshold",
    "ef",
    "exact",
    "allow_partial",
    "shard_key",
];

/// Fields of a query body (`points/query`, `query/batch`).
const QUERY_FIELDS: &[&str] = &[
    "query",
    "using",
    "prefetch",
    "filter",
    "params",
    "limit",
    "offset",
    "with_payload",
    "with_vector",
    "with_vectors",
    "score_threshold",
    "lookup_from",
    "ef",
    "exact",
    "allow_partial",
    "shard_key",
];

fn knn(body: &Map<String, Value>, vector: Vec<f32>) -> Result<Knn> {
    refuse_fields(
        body,
        &[
            SHARD_KEY,
            ("prefetch", "prefetch (hybrid and multi-stage queries)"),
            (
                "lookup_from",
                "lookup_from (vectors from another collection)",
            ),
        ],
    )?;
    let search_params = match body.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => {
            return Err(Error::invalid(format!(
                "params must be an object, got {other}"
            )))
        }
    };
    known_fields(
        &search_params,
        &["hnsw_ef", "exact", "quantization", "indexed_only", "acorn"],
    )
    .map_err(|e| Error::invalid(format!("params: {e}")))?;
    let ef =
        match (search_params.get("hnsw_ef"), body.get("ef")) {
            (Some(v), _) | (None, Some(v)) if !v.is_null() => Some(v.as_u64().ok_or_else(|| {
                Error::invalid(format!("params.hnsw_ef must be an integer, got {v}"))
            })? as usize),
            _ => None,
        };
    let exact = [search_params.get("exact"), body.get("exact")]
        .into_iter()
        .flatten()
        .any(|v| v.as_bool() == Some(true));
    let limit = usize_field(body, "limit", 10)?;
    let offset = usize_field(body, "offset", 0)?;
    if limit == 0 || limit.saturating_add(offset) > MAX_LIMIT {
        return Err(Error::invalid(format!(
            "limit is {limit} and offset {offset}; limit must be between 1 and {MAX_LIMIT}, \
             and limit + offset at most {MAX_LIMIT}"
        )));
    }
    let threshold =
        match body.get("score_threshold") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                Error::invalid(format!("score_threshold must be a number, got {v}"))
            })? as f32),
        };
    let payload = PayloadSelector::parse(body.get("with_payload"), false)?;
    let vectors_asked = with_vector(body.get("with_vector").or(body.get("with_vectors")))?;
    Ok(Knn {
        req: SearchRequest {
            vector,
            limit: limit + offset,
            filter: filter_of(body)?,
            ef,
            exact,
            with_payload: payload.wanted(),
            with_vector: vectors_asked,
        },
        limit,
        offset,
        mmr: None,
        vectors_asked,
        threshold,
        payload,
        allow_partial: body.get("allow_partial").and_then(Value::as_bool) == Some(true),
    })
}

/// Applies offset, threshold and payload selector to one query's hits.
fn finish_hits(metric: Metric, knn: &Knn, hits: Vec<ScoredPoint>, skip: Option<&PointId>) -> Value {
    let mut hits: Vec<ScoredPoint> = hits.into_iter().filter(|h| Some(&h.id) != skip).collect();
    if let Some(diversity) = knn.mmr {
        hits = mmr_select(metric, hits, knn.offset + knn.limit, diversity);
        if !knn.vectors_asked {
            hits.iter_mut().for_each(|h| h.vector = None);
        }
    }
    let mut hits: Vec<ScoredPoint> = hits.into_iter().skip(knn.offset).take(knn.limit).collect();
    above_threshold(metric, &mut hits, knn.threshold);
    Value::Array(
        hits.into_iter()
            .map(|p| point_json(p, true, &knn.payload))
            .collect(),
    )
}

/// Adds `"partial": true` and the missing shards when some shards could not answer.
fn with_partial(mut body: Value, unavailable_shards: Vec<String>) -> Value {
    if !unavailable_shards.is_empty() {
        body["partial"] = json!(true);
        body["unavailable_shards"] = json!(unavailable_shards);
    }
    body
}

/// The searches of a batch of knn requests, run as one batch; one hit list per request.
async fn run_knn(
    shard: &dyn Backend,
    knns: &[Knn],
    timeout: Option<std::time::Duration>,
) -> Result<(Vec<Vec<ScoredPoint>>, Vec<String>)> {
    let options = ReadOptions {
        allow_partial: knns.iter().any(|k| k.allow_partial),
        timeout,
    };
    let reqs = knns.iter().map(|k| k.req.clone()).collect();
    let out = shard.search_batch(reqs, options).await?;
    Ok((out.results, out.unavailable_shards))
}

fn search_knn(body: &Map<String, Value>) -> Result<Knn> {
    known_fields(body, SEARCH_FIELDS)?;
    let vector = body
        .get("vector")
        .ok_or_else(|| Error::invalid("vector is required"))?;
    knn(body, vector_input(vector, "vector")?)
}

pub async fn search(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let (hits, unavailable) = search_body(&*shard, &body, params.timeout).await?;
        Ok(with_partial(envelope(hits, started), unavailable))
    }
    .await;
    respond(&*shard, "search", result)
}

/// Hits and the shards that could not answer (when the body allows a partial answer).
pub(super) type Answer = (Value, Vec<String>);

/// A search body (`points/search`): the list of hits.
pub(super) async fn search_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    run_one_knn(shard, search_knn(body)?, timeout).await
}

/// A search body whose vector comes apart from it (Qdrant's gRPC `Search`: the vector is
/// not turned into JSON and back).
pub(super) async fn search_vector_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    vector: Vec<f32>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    known_fields(body, SEARCH_FIELDS)?;
    run_one_knn(shard, knn(body, vector)?, timeout).await
}

async fn run_one_knn(
    shard: &dyn Backend,
    knn: Knn,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    let metric = shard.metric();
    let (mut results, unavailable) = run_knn(shard, std::slice::from_ref(&knn), timeout).await?;
    let hits = finish_hits(metric, &knn, results.pop().unwrap_or_default(), None);
    Ok((hits, unavailable))
}

fn batch_items(body: &Map<String, Value>) -> Result<&Vec<Value>> {
    known_fields(body, &["searches", "allow_partial"])?;
    body.get("searches")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("searches must be a list"))
}

fn at_index(i: usize) -> impl Fn(Error) -> Error {
    move |e| Error::invalid(format!("searches[{i}]: {e}"))
}

pub async fn search_batch(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let (lists, unavailable) = search_batch_body(&*shard, &body, params.timeout).await?;
        Ok(with_partial(envelope(lists, started), unavailable))
    }
    .await;
    respond(&*shard, "search_batch", result)
}

/// A search batch body (`searches`): a list of hit lists, one per search.
pub(super) async fn search_batch_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    let batch_partial = body.get("allow_partial").and_then(Value::as_bool) == Some(true);
    let mut knns = batch_items(body)?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let obj = s
                .as_object()
                .ok_or_else(|| Error::invalid("must be an object"));
            obj.and_then(search_knn).map_err(at_index(i))
        })
        .collect::<Result<Vec<_>>>()?;
    knns.iter_mut()
        .for_each(|k| k.allow_partial |= batch_partial);
    let metric = shard.metric();
    let (results, unavailable) = run_knn(shard, &knns, timeout).await?;
    let lists: Vec<Value> = knns
        .iter()
        .zip(results)
        .map(|(k, hits)| finish_hits(metric, k, hits, None))
        .collect();
    Ok((Value::Array(lists), unavailable))
}

/// One query of the universal query API, ready to run: a search (with the id of the point
/// whose vector it uses, left out of its answer), or a scroll when there is no query.
enum Planned {
    Knn(Knn, Option<PointId>),
    Scroll(ScrollRequest, usize, PayloadSelector),
}

async fn plan_query(shard: &dyn Backend, body: &Map<String, Value>) -> Result<Planned> {
    known_fields(body, QUERY_FIELDS)?;
    check_using(body.get("using"))?;
    plan_target(shard, body, query_target(body.get("query"))?).await
}

async fn plan_target(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    target: QueryTarget,
) -> Result<Planned> {
    match target {
        QueryTarget::Vector(v) => Ok(Planned::Knn(knn(body, v)?, None)),
        QueryTarget::Mmr {
            vector,
            diversity,
            candidates,
        } => {
            let mut knn = knn(body, vector)?;
            knn.req.limit = knn.req.limit.max(candidates.unwrap_or(0)).min(MAX_LIMIT);
            knn.req.with_vector = true;
            knn.mmr = Some(diversity);
            Ok(Planned::Knn(knn, None))
        }
        QueryTarget::Point(id) => {
            let mut knn = knn(body, Vec::new())?;
            let point = shard.get(vec![id.clone()], true, false).await?;
            knn.req.vector = point
                .into_iter()
                .next()
                .and_then(|p| p.vector)
                .ok_or_else(|| Error::not_found(format!("point {id} (the query) not found")))?;
            // The point itself is left out: one more hit makes up for it.
            knn.req.limit += 1;
            Ok(Planned::Knn(knn, Some(id)))
        }
        QueryTarget::None => {
            let knn = knn(body, Vec::new())?;
            let payload = knn.payload.clone();
            Ok(Planned::Scroll(
                ScrollRequest {
                    offset: None,
                    limit: knn.req.limit,
                    filter: knn.req.filter,
                    with_payload: payload.wanted(),
                    with_vector: knn.req.with_vector,
                },
                knn.offset,
                payload,
            ))
        }
    }
}

/// Runs planned queries: the searches as one batch, the scrolls one by one. Each answer is
/// Qdrant's `QueryResponse`, `{"points": [..]}`.
async fn run_queries(
    shard: &dyn Backend,
    planned: Vec<Planned>,
    timeout: Option<std::time::Duration>,
) -> Result<(Vec<Value>, Vec<String>)> {
    let metric = shard.metric();
    let knns: Vec<&Knn> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Knn(k, _) => Some(k),
            Planned::Scroll(..) => None,
        })
        .collect();
    let (mut results, unavailable) = if knns.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let options = ReadOptions {
            allow_partial: knns.iter().any(|k| k.allow_partial),
            timeout,
        };
        let out = shard
            .search_batch(knns.iter().map(|k| k.req.clone()).collect(), options)
            .await?;
        (out.results, out.unavailable_shards)
    };
    results.reverse();
    let mut answers = Vec::with_capacity(planned.len());
    for p in planned {
        let points = match p {
            Planned::Knn(knn, skip) => {
                let hits = results.pop().unwrap_or_default();
                finish_hits(metric, &knn, hits, skip.as_ref())
            }
            Planned::Scroll(req, skip, payload) => {
                let page = shard.scroll(req).await?;
                Value::Array(
                    page.points
                        .into_iter()
                        .skip(skip)
                        .map(|p| point_json(p, true, &payload))
                        .collect(),
                )
            }
        };
        answers.push(json!({ "points": points }));
    }
    Ok((answers, unavailable))
}

pub async fn query(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let (answer, unavailable) = query_body(&*shard, &body, params.timeout).await?;
        Ok(with_partial(envelope(answer, started), unavailable))
    }
    .await;
    respond(&*shard, "query", result)
}

/// A query body (the universal query API): `{"points": [..]}`.
pub(super) async fn query_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    let planned = plan_query(shard, body).await?;
    let (mut answers, unavailable) = run_queries(shard, vec![planned], timeout).await?;
    Ok((answers.pop().unwrap_or_default(), unavailable))
}

/// A query body whose query is a vector given apart from it (Qdrant's gRPC `Query` with a
/// dense `nearest`: the vector is not turned into JSON and back).
pub(super) async fn query_vector_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    vector: Vec<f32>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    known_fields(body, QUERY_FIELDS)?;
    check_using(body.get("using"))?;
    let planned = plan_target(shard, body, QueryTarget::Vector(vector)).await?;
    let (mut answers, unavailable) = run_queries(shard, vec![planned], timeout).await?;
    Ok((answers.pop().unwrap_or_default(), unavailable))
}

pub async fn query_batch(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let (answers, unavailable) = query_batch_body(&*shard, &body, params.timeout).await?;
        Ok(with_partial(envelope(answers, started), unavailable))
    }
    .await;
    respond(&*shard, "query_batch", result)
}

/// A query batch body (`searches`): a list of `{"points": [..]}`, one per query.
pub(super) async fn query_batch_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    timeout: Option<std::time::Duration>,
) -> Result<Answer> {
    let mut planned = Vec::new();
    for (i, s) in batch_items(body)?.iter().enumerate() {
        let obj = s
            .as_object()
            .ok_or_else(|| at_index(i)(Error::invalid("must be an object")))?;
        planned.push(plan_query(shard, obj).await.map_err(at_index(i))?);
    }
    let (answers, unavailable) = run_queries(shard, planned, timeout).await?;
    Ok((Value::Array(answers), unavailable))
}

pub async fn scroll(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        Ok(envelope(scroll_body(&*shard, &body).await?, started))
    }
    .await;
    respond(&*shard, "scroll", result)
}

/// A scroll body: `{"points": [..], "next_page_offset": id or null}`.
pub(super) async fn scroll_body(shard: &dyn Backend, body: &Map<String, Value>) -> Result<Value> {
    known_fields(
        body,
        &[
            "offset",
            "limit",
            "filter",
            "with_payload",
            "with_vector",
            "with_vectors",
            "order_by",
            "shard_key",
        ],
    )?;
    refuse_fields(
        body,
        &[
            SHARD_KEY,
            ("order_by", "scroll order_by (ordering by a payload field)"),
        ],
    )?;
    let payload = PayloadSelector::parse(body.get("with_payload"), true)?;
    let req = ScrollRequest {
        offset: body
            .get("offset")
            .filter(|o| !o.is_null())
            .map(|o| id_from_json(o, "offset"))
            .transpose()?,
        limit: usize_field(body, "limit", 10)?,
        filter: filter_of(body)?,
        with_payload: payload.wanted(),
        with_vector: with_vector(body.get("with_vector").or(body.get("with_vectors")))?,
    };
    let page = shard.scroll(req).await?;
    let points: Vec<Value> = page
        .points
        .into_iter()
        .map(|p| point_json(p, false, &payload))
        .collect();
    let next = page
        .next_offset
        .as_ref()
        .map_or(Value::Null, vecshard_core::convert::id_to_json);
    Ok(json!({"points": points, "next_page_offset": next}))
}

pub async fn count(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let count = count_body(&*shard, &body).await?;
        Ok(envelope(json!({ "count": count }), started))
    }
    .await;
    respond(&*shard, "count", result)
}

/// A count body: the number of points its filter matches.
pub(super) async fn count_body(shard: &dyn Backend, body: &Map<String, Value>) -> Result<u64> {
    // Counts are always exact: `exact: false` gets the exact count too.
    known_fields(body, &["filter", "exact", "shard_key"])?;
    refuse_fields(body, &[SHARD_KEY])?;
    shard.count(filter_of(body)?).await
}
