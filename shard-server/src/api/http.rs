//! HTTP JSON transport (Qdrant-style paths), health and readiness probes, and `/metrics`.
//! Bodies are parsed here (not by axum's `Json`) so that malformed JSON and oversized bodies
//! get the same `{"error":{"code","message"}}` shape as every other error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::status::http_error;
use super::{check_collection, observe, Backend};
use vecshard_core::convert::{id_from_json, id_to_json};
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::model::Point;
use vecshard_core::request::{
    DeleteTarget, ReadOptions, ScoredPoint, SearchRequest, SearchResults, WriteOutcome,
};

type Shared = Arc<dyn Backend>;

pub fn router(shard: Shared) -> Router {
    let body_limit = shard.max_request_bytes();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/collections/{c}", get(info))
        .route(
            "/collections/{c}/points",
            axum::routing::put(upsert).post(get_points),
        )
        .route("/collections/{c}/points/search", post(search))
        .route("/collections/{c}/points/search/batch", post(search_batch))
        .route("/collections/{c}/points/delete", post(delete))
        .route("/collections/{c}/points/count", post(count))
        .fallback(|| async { http_error(Error::not_found("no such endpoint; see docs/api.md")) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shard)
}

type Body = std::result::Result<Bytes, BytesRejection>;

fn parse<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => {
            Error::too_large(format!("request body exceeds the limit of {limit} bytes"))
        }
        other => Error::invalid(other.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })
}

fn respond(shard: &dyn Backend, op: &'static str, result: Result<Value>) -> Response {
    observe(shard.metrics(), op, &result);
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => http_error(e),
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

async fn readyz(State(shard): State<Shared>) -> Response {
    if shard.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading index").into_response()
    }
}

async fn metrics(State(shard): State<Shared>) -> Response {
    shard.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shard.metrics().render(),
    )
        .into_response()
}

async fn info(State(shard): State<Shared>, Path(c): Path<String>) -> Response {
    let result = async {
        check_collection(&*shard, &c)?;
        let i = shard.info().await?;
        Ok(json!({"result": {
            "name": i.name, "dimension": i.dimension, "metric": i.metric, "status": i.status,
            "points": i.points, "indexed_points": i.indexed_points, "pending_points": i.pending_points,
            "index": {"type": "hnsw", "m": i.hnsw_m, "ef_construction": i.hnsw_ef_construction,
                      "ef_search": i.hnsw_ef_search, "quantization": i.quantization},
            "indexed_fields": i.indexed_fields.iter().map(|f| json!({"name": f.name, "kind": f.kind})).collect::<Vec<_>>(),
            "wal_sequence": i.wal_sequence, "index_memory_bytes": i.index_memory_bytes,
        }}))
    }
    .await;
    respond(&*shard, "info", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertBody {
    points: Vec<PointBody>,
    #[serde(default)]
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointBody {
    id: Value,
    vector: Vec<f32>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
}

fn write_json(o: WriteOutcome, started: Instant) -> Value {
    json!({"result": {"status": "acknowledged", "sequence": o.sequence, "affected": o.affected, "version": o.version},
           "time_ms": elapsed_ms(started)})
}

async fn upsert(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body: UpsertBody = parse(body, shard.max_request_bytes())?;
        let points = body
            .points
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(Point {
                    id: id_from_json(&p.id, &format!("points[{i}].id"))?,
                    vector: p.vector,
                    payload: p.payload.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        shard
            .upsert(points, body.version, 0)
            .await
            .map(|o| write_json(o, started))
    }
    .await;
    respond(&*shard, "upsert", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    #[serde(default)]
    ids: Option<Vec<Value>>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    version: u64,
}

async fn delete(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body: DeleteBody = parse(body, shard.max_request_bytes())?;
        let target = match (body.ids, body.filter) {
            (Some(ids), None) => DeleteTarget::Ids(
                ids.iter()
                    .enumerate()
                    .map(|(i, v)| id_from_json(v, &format!("ids[{i}]")))
                    .collect::<Result<_>>()?,
            ),
            (None, Some(f)) => DeleteTarget::Filter(Filter::parse(&f, "filter")?),
            _ => return Err(Error::invalid("give exactly one of \"ids\" or \"filter\"")),
        };
        shard
            .delete(target, body.version, 0)
            .await
            .map(|o| write_json(o, started))
    }
    .await;
    respond(&*shard, "delete", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBody {
    ids: Vec<Value>,
    #[serde(default)]
    with_vector: bool,
    #[serde(default = "yes")]
    with_payload: bool,
}

fn yes() -> bool {
    true
}

fn point_json(p: ScoredPoint, with_score: bool) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), id_to_json(&p.id));
    if with_score {
        obj.insert("score".into(), json!(p.score));
    }
    obj.insert("version".into(), json!(p.version));
    if let Some(payload) = p.payload {
        obj.insert("payload".into(), Value::Object(payload));
    }
    if let Some(vector) = p.vector {
        obj.insert("vector".into(), json!(vector));
    }
    Value::Object(obj)
}

async fn get_points(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body: GetBody = parse(body, shard.max_request_bytes())?;
        let ids = body
            .ids
            .iter()
            .enumerate()
            .map(|(i, v)| id_from_json(v, &format!("ids[{i}]")))
            .collect::<Result<_>>()?;
        let found = shard.get(ids, body.with_vector, body.with_payload).await?;
        let points: Vec<Value> = found.into_iter().map(|p| point_json(p, false)).collect();
        Ok(json!({"result": points, "time_ms": elapsed_ms(started)}))
    }
    .await;
    respond(&*shard, "get", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    vector: Vec<f32>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    ef: Option<usize>,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    with_payload: bool,
    #[serde(default)]
    with_vector: bool,
    #[serde(default)]
    allow_partial: bool,
}

fn default_limit() -> usize {
    10
}

impl SearchBody {
    fn into_request(self) -> Result<SearchRequest> {
        Ok(SearchRequest {
            vector: self.vector,
            limit: self.limit,
            filter: self
                .filter
                .as_ref()
                .filter(|f| !f.is_null())
                .map(|f| Filter::parse(f, "filter"))
                .transpose()?,
            ef: self.ef,
            exact: self.exact,
            with_payload: self.with_payload,
            with_vector: self.with_vector,
        })
    }
}

fn hits_json(hits: Vec<ScoredPoint>) -> Value {
    Value::Array(hits.into_iter().map(|p| point_json(p, true)).collect())
}

/// `?timeout=SECONDS` (as Qdrant): the caller's deadline for a search.
fn timeout_param(query: Option<String>) -> Result<Option<Duration>> {
    let mut timeout = None;
    for pair in query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "timeout" {
            return Err(Error::invalid(format!(
                "unknown query parameter {key:?}; only timeout (seconds) is accepted"
            )));
        }
        let secs: f64 = value
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "timeout is {value:?}, it must be a number of seconds in (0, 3600]"
                ))
            })?;
        timeout = Some(Duration::from_secs_f64(secs));
    }
    Ok(timeout)
}

/// Adds `"partial": true` and the missing shards when some shards could not answer.
fn with_partial(mut body: Value, unavailable_shards: Vec<String>) -> Value {
    if !unavailable_shards.is_empty() {
        body["partial"] = json!(true);
        body["unavailable_shards"] = json!(unavailable_shards);
    }
    body
}

async fn search(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body: SearchBody = parse(body, shard.max_request_bytes())?;
        let options = ReadOptions {
            allow_partial: body.allow_partial,
            timeout: timeout_param(query)?,
        };
        let SearchResults {
            mut results,
            unavailable_shards,
        } = shard
            .search_batch(vec![body.into_request()?], options)
            .await?;
        let hits = results.pop().unwrap_or_default();
        Ok(with_partial(
            json!({"result": hits_json(hits), "time_ms": elapsed_ms(started)}),
            unavailable_shards,
        ))
    }
    .await;
    respond(&*shard, "search", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBatchBody {
    searches: Vec<SearchBody>,
    #[serde(default)]
    allow_partial: bool,
}

async fn search_batch(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body: SearchBatchBody = parse(body, shard.max_request_bytes())?;
        let options = ReadOptions {
            allow_partial: body.allow_partial || body.searches.iter().any(|s| s.allow_partial),
            timeout: timeout_param(query)?,
        };
        let reqs = body
            .searches
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.into_request().map_err(|e| Error::invalid(format!("searches[{i}]: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let out = shard.search_batch(reqs, options).await?;
        Ok(with_partial(
            json!({"result": out.results.into_iter().map(hits_json).collect::<Vec<_>>(), "time_ms": elapsed_ms(started)}),
            out.unavailable_shards,
        ))
    }
    .await;
    respond(&*shard, "search_batch", result)
}

/// Every replica as this server sees it (docs/cluster.md).
async fn cluster(State(shard): State<Shared>) -> Response {
    let result = shard.cluster().await.map(|c| {
        json!({"result": {
            "collection": c.collection,
            "map_version": c.map_version,
            "partitions": c.partitions,
            "shards": c.shards.into_iter().map(|s| json!({
                "name": s.name,
                "diverged_partitions": s.diverged_partitions,
                "replicas": s.replicas.into_iter().map(|r| json!({
                    "address": r.address,
                    "reachable": r.reachable,
                    "error": r.error,
                    "points": r.points,
                    "wal_sequence": r.wal_sequence,
                    "checksum": format!("{:016x}", r.checksum),
                    "status": r.status,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }})
    });
    respond(&*shard, "cluster", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountBody {
    #[serde(default)]
    filter: Option<Value>,
}

async fn count(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let result = async {
        check_collection(&*shard, &c)?;
        let body: CountBody = parse(body, shard.max_request_bytes())?;
        let filter = body
            .filter
            .as_ref()
            .filter(|f| !f.is_null())
            .map(|f| Filter::parse(f, "filter"))
            .transpose()?;
        Ok(json!({"result": {"count": shard.count(filter).await?}}))
    }
    .await;
    respond(&*shard, "count", result)
}
