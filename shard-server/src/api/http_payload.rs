//! Qdrant's payload operations: set (merge keys), overwrite, delete keys, clear. vecshard stores
//! a point as one record, so each is a read of the selected points (ids, or every point a
//! filter matches, page by page) and an upsert of them with the changed payload, vector
//! unchanged. An upsert of the same point racing with one of these wins or loses as a whole
//! (last writer wins by version), as docs/api.md says.

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{Map, Value};

use super::http::{envelope, known_fields, params, parse_object, respond, Body, Shared};
use super::http_points::write_result;
use super::qdrant::{refuse_fields, selector, Selector};
use super::{check_collection, Backend};
use vecshard_core::error::{Error, Result};
use vecshard_core::model::{Point, PointId};
use vecshard_core::request::{ScoredPoint, ScrollRequest, WriteOutcome};

/// Points read and rewritten per upsert.
const CHUNK: usize = 256;

/// How a payload changes.
pub(super) enum Change {
    Merge(Map<String, Value>),
    Replace(Map<String, Value>),
    DeleteKeys(Vec<String>),
}

impl Change {
    fn apply(&self, payload: &mut Map<String, Value>) {
        match self {
            Change::Merge(m) => payload.extend(m.clone()),
            Change::Replace(m) => *payload = m.clone(),
            Change::DeleteKeys(keys) => keys.iter().for_each(|k| remove_path(payload, k)),
        }
    }
}

/// Removes a top-level key, or a dotted path through nested objects.
fn remove_path(payload: &mut Map<String, Value>, key: &str) {
    if payload.remove(key).is_some() {
        return;
    }
    let Some((head, rest)) = key.split_once('.') else {
        return;
    };
    if let Some(Value::Object(inner)) = payload.get_mut(head) {
        remove_path(inner, rest);
    }
}

/// Rewrites `points` with the change; the outcome of the last upsert, with every one's count.
async fn rewrite(
    shard: &dyn Backend,
    points: Vec<ScoredPoint>,
    change: &Change,
    total: &mut Option<WriteOutcome>,
) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let rewritten: Vec<Point> = points
        .into_iter()
        .map(|p| {
            let mut payload = p.payload.unwrap_or_default();
            change.apply(&mut payload);
            Point {
                id: p.id,
                vector: p.vector.unwrap_or_default(),
                payload,
            }
        })
        .collect();
    let outcome = shard.upsert(rewritten, 0, 0).await?;
    *total = Some(match total.take() {
        None => outcome,
        Some(t) => WriteOutcome {
            affected: t.affected + outcome.affected,
            ..outcome
        },
    });
    Ok(())
}

async fn apply_to_selection(
    shard: &dyn Backend,
    selection: Selector,
    change: Change,
) -> Result<WriteOutcome> {
    let mut total = None;
    match selection {
        Selector::Ids(ids) => {
            for chunk in ids.chunks(CHUNK) {
                let points = shard.get(chunk.to_vec(), true, true).await?;
                rewrite(shard, points, &change, &mut total).await?;
            }
        }
        Selector::Filter(filter) => {
            let mut offset: Option<PointId> = None;
            loop {
                let page = shard
                    .scroll(ScrollRequest {
                        offset: offset.take(),
                        limit: CHUNK,
                        filter: Some(filter.clone()),
                        with_payload: true,
                        with_vector: true,
                    })
                    .await?;
                rewrite(shard, page.points, &change, &mut total).await?;
                match page.next_offset {
                    Some(next) => offset = Some(next),
                    None => break,
                }
            }
        }
    }
    Ok(total.unwrap_or(WriteOutcome {
        sequence: 0,
        affected: 0,
        version: 0,
    }))
}

fn payload_field(body: &Map<String, Value>) -> Result<Map<String, Value>> {
    match body.get("payload") {
        Some(Value::Object(p)) => Ok(p.clone()),
        _ => Err(Error::invalid("payload must be an object")),
    }
}

async fn run(
    shard: Shared,
    c: String,
    query: Option<String>,
    body: Body,
    op: &'static str,
    change_of: fn(&Map<String, Value>) -> Result<Change>,
) -> Response {
    let started = Instant::now();
    let result = async {
        check_collection(&*shard, &c)?;
        let params = params(query)?;
        let body = parse_object(body, shard.max_request_bytes())?;
        let outcome = payload_body(&*shard, &body, change_of).await?;
        Ok(envelope(write_result(outcome, params.wait), started))
    }
    .await;
    respond(&*shard, op, result)
}

/// A payload change body: the points (ids or a filter) and what `change_of` reads from it.
pub(super) async fn payload_body(
    shard: &dyn Backend,
    body: &Map<String, Value>,
    change_of: fn(&Map<String, Value>) -> Result<Change>,
) -> Result<WriteOutcome> {
    known_fields(
        body,
        &["payload", "keys", "points", "filter", "key", "shard_key"],
    )?;
    refuse_fields(
        body,
        &[
            ("shard_key", "shard_key (custom sharding)"),
            ("key", "a payload update at a nested key"),
        ],
    )?;
    let change = change_of(body)?;
    apply_to_selection(shard, selector(body)?, change).await
}

/// `set_payload`: merges `payload` into each point's.
pub(super) fn merge_change(body: &Map<String, Value>) -> Result<Change> {
    payload_field(body).map(Change::Merge)
}

/// `overwrite_payload`: replaces each point's payload with `payload`.
pub(super) fn replace_change(body: &Map<String, Value>) -> Result<Change> {
    payload_field(body).map(Change::Replace)
}

/// `delete_payload`: removes `keys` (top-level or dotted paths).
pub(super) fn delete_keys_change(body: &Map<String, Value>) -> Result<Change> {
    let keys = body
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("keys must be a list of payload keys"))?;
    keys.iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::invalid(format!("keys must be strings, got {k}")))
        })
        .collect::<Result<_>>()
        .map(Change::DeleteKeys)
}

/// `clear_payload`: empties each point's payload.
pub(super) fn clear_change(_: &Map<String, Value>) -> Result<Change> {
    Ok(Change::Replace(Map::new()))
}

pub async fn set(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    run(shard, c, query, body, "set_payload", merge_change).await
}

pub async fn overwrite(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    run(shard, c, query, body, "overwrite_payload", replace_change).await
}

pub async fn delete_keys(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    run(shard, c, query, body, "delete_payload", delete_keys_change).await
}

pub async fn clear(
    State(shard): State<Shared>,
    Path(c): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    run(shard, c, query, body, "clear_payload", clear_change).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_merge_replace_or_remove_keys_and_paths() {
        let base = json!({"a": 1, "meta": {"x": 1, "y": 2}})
            .as_object()
            .unwrap()
            .clone();
        let mut p = base.clone();
        Change::Merge(json!({"a": 2, "b": 3}).as_object().unwrap().clone()).apply(&mut p);
        assert_eq!(
            Value::from(p),
            json!({"a": 2, "b": 3, "meta": {"x": 1, "y": 2}})
        );
        let mut p = base.clone();
        Change::DeleteKeys(vec!["a".into(), "meta.y".into(), "missing.z".into()]).apply(&mut p);
        assert_eq!(Value::from(p), json!({"meta": {"x": 1}}));
        let mut p = base;
        Change::Replace(Map::new()).apply(&mut p);
        assert!(p.is_empty());
    }
}
