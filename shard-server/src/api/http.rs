//! HTTP JSON transport in Qdrant's REST shapes (`qdrant.rs`; the official clients and the RAG
//! frameworks' Qdrant integrations work against it), health and readiness probes, `/metrics`
//! and `/cluster`. Every answer is `{"result", "status": "ok", "time"}` (plus vecshard's
//! `time_ms`), every error `{"status": {"error"}, "error": {"code", "message"}}`. Bodies are
//! parsed here (not by axum's `Json`) so that malformed JSON and oversized bodies get the same
//! error shape as every other error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::status::http_error;
use super::{http_collections as collections, http_payload as payload, http_points as points};
use super::{observe, Backend};
use vecshard_core::error::{Error, Result};

pub(super) type Shared = Arc<dyn Backend>;

pub fn router(shard: Shared) -> Router {
    let body_limit = shard.max_request_bytes();
    let unsupported = collections::unsupported_routes();
    Router::new()
        .route("/", get(collections::root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster))
        .route("/collections", get(collections::list))
        .route(
            "/collections/{c}",
            get(collections::info)
                .put(collections::create)
                .delete(collections::delete_collection)
                .patch(collections::update_collection),
        )
        .route("/collections/{c}/exists", get(collections::exists))
        .route("/collections/{c}/index", put(collections::create_index))
        .route(
            "/collections/{c}/index/{field}",
            delete(collections::delete_index),
        )
        .route(
            "/collections/{c}/points",
            put(points::upsert).post(points::retrieve),
        )
        .route("/collections/{c}/points/{id}", get(points::retrieve_one))
        .route("/collections/{c}/points/search", post(points::search))
        .route(
            "/collections/{c}/points/search/batch",
            post(points::search_batch),
        )
        .route("/collections/{c}/points/query", post(points::query))
        .route(
            "/collections/{c}/points/query/batch",
            post(points::query_batch),
        )
        .route("/collections/{c}/points/scroll", post(points::scroll))
        .route("/collections/{c}/points/count", post(points::count))
        .route("/collections/{c}/points/delete", post(points::delete))
        .route(
            "/collections/{c}/points/payload",
            post(payload::set).put(payload::overwrite),
        )
        .route(
            "/collections/{c}/points/payload/delete",
            post(payload::delete_keys),
        )
        .route(
            "/collections/{c}/points/payload/clear",
            post(payload::clear),
        )
        .merge(unsupported)
        .fallback(|| async {
            http_error(Error::not_found(
                "no such endpoint; docs/api.md lists the endpoints vecshard serves",
            ))
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shard)
}

pub(super) type Body = std::result::Result<Bytes, BytesRejection>;

/// The request body as a JSON object (an empty body is `{}`).
pub(super) fn parse_object(body: Body, limit: usize) -> Result<Map<String, Value>> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => {
            Error::too_large(format!("request body exceeds the limit of {limit} bytes"))
        }
        other => Error::invalid(other.body_text()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(Error::invalid(format!(
            "request body must be a JSON object, got {}",
            kind_of(&other)
        ))),
        Err(e) => Err(Error::invalid(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Refuses fields an endpoint does not know, naming them and the accepted ones: a typo
/// (`"filtr"`) must not silently drop a filter.
pub(super) fn known_fields(body: &Map<String, Value>, accepted: &[&str]) -> Result<()> {
    match body.keys().find(|k| !accepted.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(Error::invalid(format!(
            "unknown field {k:?}; this endpoint accepts {}",
            accepted.join(", ")
        ))),
    }
}

/// A successful answer: Qdrant's envelope with vecshard's `time_ms` beside.
pub(super) fn envelope(result: Value, started: Instant) -> Value {
    let secs = started.elapsed().as_secs_f64();
    json!({"result": result, "status": "ok", "time": secs, "time_ms": secs * 1000.0})
}

pub(super) fn respond(shard: &dyn Backend, op: &'static str, result: Result<Value>) -> Response {
    observe(shard.metrics(), op, &result);
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => http_error(e),
    }
}

/// The query parameters of a request: `timeout` (seconds, as Qdrant), `wait` (writes), and
/// Qdrant's `ordering` / `consistency`, accepted and not needed (see docs/api.md).
#[derive(Debug, Default)]
pub(super) struct Params {
    pub timeout: Option<Duration>,
    pub wait: bool,
}

pub(super) fn params(query: Option<String>) -> Result<Params> {
    let mut out = Params::default();
    for pair in query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "timeout" => {
                let secs: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "timeout is {value:?}, it must be a number of seconds in (0, 3600]"
                        ))
                    })?;
                out.timeout = Some(Duration::from_secs_f64(secs));
            }
            "wait" => {
                out.wait = match value {
                    "true" | "" => true,
                    "false" => false,
                    other => {
                        return Err(Error::invalid(format!(
                            "wait is {other:?}, it must be true or false"
                        )))
                    }
                }
            }
            "ordering" | "consistency" => {}
            other => {
                return Err(Error::invalid(format!(
                    "unknown query parameter {other:?}; accepted: timeout (seconds), wait, \
                     ordering, consistency"
                )))
            }
        }
    }
    Ok(out)
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
