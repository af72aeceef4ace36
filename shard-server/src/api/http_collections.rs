//! Collection-level endpoints in Qdrant's shapes: the server's version, the list, info,
//! exists, create (answered for the collection served), payload indexes (as declared), and a
//! clear refusal for every Qdrant feature vecshard does not serve.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, MethodRouter};
use axum::Router;
use serde_json::{json, Value};

use super::http::{envelope, parse_object, respond, Body, Shared};
use super::qdrant::{
    check_create, check_payload_index, collection_info, unsupported, QDRANT_API_VERSION,
};
use super::status::http_error;
use super::{check_collection, Backend};
use vecshard_core::error::{Error, Result};

/// `GET /`: what `qdrant-client` checks its compatibility against, and vecshard's version.
pub async fn root() -> Response {
    axum::Json(json!({
        "title": "vecshard (Qdrant-compatible API)",
        "version": QDRANT_API_VERSION,
        "vecshard_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

pub async fn list(State(shard): State<Shared>) -> Response {
    let started = Instant::now();
    let result = Ok(envelope(
        json!({"collections": [{"name": shard.collection()}]}),
        started,
    ));
    respond(&*shard, "info", result)
}

pub async fn exists(State(shard): State<Shared>, Path(c): Path<String>) -> Response {
    let started = Instant::now();
    let result = Ok(envelope(
        json!({"exists": c == shard.collection()}),
        started,
    ));
    respond(&*shard, "info", result)
}

pub async fn info(State(shard): State<Shared>, Path(c): Path<String>) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let i = shard.info().await?;
        Ok(envelope(collection_info(&i, shard.shard_count()), started))
    }
    .await;
    respond(&*shard, "info", result)
}

/// Where collections come from, for the refusals of collection management.
const MANAGED: &str = "collections are managed as VectorCollection resources in Kubernetes \
                       (kubectl apply / delete), or by the flags of vecshard-server dev";

pub async fn create(State(shard): State<Shared>, Path(c): Path<String>, body: Body) -> Response {
    let started = Instant::now();
    let result = async {
        let body = parse_object(body, shard.max_request_bytes())?;
        check_served(&*shard, &c)?;
        check_create(&shard.info().await?, &Value::Object(body))?;
        Ok(envelope(json!(true), started))
    }
    .await;
    respond(&*shard, "create_collection", result)
}

/// `create_collection` names the collection served, or is refused with how collections are
/// made.
pub(super) fn check_served(shard: &dyn Backend, c: &str) -> Result<()> {
    if c == shard.collection() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "collection {c:?} cannot be created through the API: this server serves {:?}; \
         {MANAGED}",
        shard.collection()
    )))
}

pub(super) fn delete_refused(c: &str) -> Error {
    Error::invalid(format!(
        "collection {c:?} cannot be deleted through the API; {MANAGED}"
    ))
}

pub(super) fn update_refused(c: &str) -> Error {
    Error::invalid(format!(
        "collection {c:?} cannot be changed through the API: its parameters are the \
         VectorCollection's spec; {MANAGED}"
    ))
}

pub(super) fn index_drop_refused(field: &str) -> Error {
    Error::invalid(format!(
        "the index of {field:?} cannot be dropped through the API: indexed fields are the \
         collection's spec (VectorCollection spec.indexedFields, or --index-field of \
         vecshard-server)"
    ))
}

pub async fn delete_collection(State(shard): State<Shared>, Path(c): Path<String>) -> Response {
    let result: Result<Value> = Err(delete_refused(&c));
    respond(&*shard, "delete_collection", result)
}

pub async fn update_collection(State(shard): State<Shared>, Path(c): Path<String>) -> Response {
    let result: Result<Value> = Err(update_refused(&c));
    respond(&*shard, "update_collection", result)
}

pub async fn create_index(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        check_payload_index(&shard.info().await?, &Value::Object(body))?;
        Ok(envelope(
            json!({"operation_id": 0, "status": "completed"}),
            started,
        ))
    }
    .await;
    respond(&*shard, "create_index", result)
}

pub async fn delete_index(
    State(shard): State<Shared>,
    Path((c, field)): Path<(String, String)>,
) -> Response {
    let result = check_collection(&*shard, &c).and_then(|()| Err(index_drop_refused(&field)));
    respond(&*shard, "delete_index", result)
}

/// Qdrant endpoints whose features vecshard lacks, each answered with an error that names the
/// feature (never a 404 that reads like a typo, never a wrong answer).
pub fn unsupported_routes() -> Router<Shared> {
    let refuse = |feature: &'static str| -> MethodRouter<Shared> {
        any(move || async move { http_error(unsupported(feature)) })
    };
    [
        ("/collections/{c}/points/recommend", "recommend"),
        ("/collections/{c}/points/recommend/batch", "recommend"),
        (
            "/collections/{c}/points/recommend/groups",
            "recommend groups",
        ),
        ("/collections/{c}/points/discover", "discover"),
        ("/collections/{c}/points/discover/batch", "discover"),
        ("/collections/{c}/points/search/groups", "search groups"),
        ("/collections/{c}/points/query/groups", "query groups"),
        (
            "/collections/{c}/points/search/matrix/pairs",
            "the distance matrix",
        ),
        (
            "/collections/{c}/points/search/matrix/offsets",
            "the distance matrix",
        ),
        ("/collections/{c}/facet", "facet counts"),
        (
            "/collections/{c}/points/vectors",
            "updating vectors alone (upsert the point)",
        ),
        (
            "/collections/{c}/points/vectors/delete",
            "deleting named vectors",
        ),
        ("/collections/{c}/points/batch", "batch update operations"),
        (
            "/collections/{c}/snapshots",
            "snapshots through the Qdrant API (use vecshardctl snapshot or VectorSnapshot)",
        ),
        (
            "/collections/{c}/snapshots/{name}",
            "snapshots through the Qdrant API (use vecshardctl snapshot or VectorSnapshot)",
        ),
        (
            "/snapshots",
            "snapshots through the Qdrant API (use vecshardctl snapshot or VectorSnapshot)",
        ),
        ("/collections/aliases", "collection aliases"),
        ("/collections/{c}/aliases", "collection aliases"),
        ("/aliases", "collection aliases"),
        ("/collections/{c}/shards", "custom shard keys"),
        (
            "/collections/{c}/cluster",
            "Qdrant's cluster API (see GET /cluster)",
        ),
    ]
    .into_iter()
    .fold(Router::new(), |router, (path, feature)| {
        router.route(path, refuse(feature))
    })
}
