//! The one place where wire messages (`vecshard.v1` protobuf, and the JSON forms of ids and
//! payloads) become domain types and back. Conversions *from* the wire validate: a receiver
//! never trusts what a peer, a router or a client sent, and each error names the field.

use serde_json::{Map, Value};
use vecshard_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::model::{CollectionConfig, HnswParams, IndexedField, Point, PointId, Record};
use crate::request::{
    DeleteTarget, ScoredPoint, ScrollPage, ScrollRequest, SearchRequest, WriteOutcome,
};

// ---- point ids ------------------------------------------------------------------------------

/// A point id from a message; `path` names the field in the error.
pub fn id_from_pb(id: Option<pb::PointId>, path: &str) -> Result<PointId> {
    let id = match id.and_then(|i| i.kind) {
        Some(pb::point_id::Kind::Num(n)) => PointId::Num(n),
        Some(pb::point_id::Kind::Str(s)) => PointId::Str(s),
        None => return Err(Error::invalid(format!("{path} is missing"))),
    };
    id.validate()
        .map_err(|e| Error::invalid(format!("{path}: {e}")))?;
    Ok(id)
}

impl From<PointId> for pb::PointId {
    fn from(id: PointId) -> Self {
        let kind = match id {
            PointId::Num(n) => pb::point_id::Kind::Num(n),
            PointId::Str(s) => pb::point_id::Kind::Str(s),
        };
        pb::PointId { kind: Some(kind) }
    }
}

/// Ids of a message, each checked (`ids[i]` in errors).
pub fn ids_from_pb(ids: Vec<pb::PointId>) -> Result<Vec<PointId>> {
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| id_from_pb(Some(id), &format!("ids[{i}]")))
        .collect()
}

/// A point id from JSON: an unsigned integer or a non-empty string.
pub fn id_from_json(value: &Value, path: &str) -> Result<PointId> {
    let id = match value {
        Value::Number(n) => n.as_u64().map(PointId::Num),
        Value::String(s) => Some(PointId::Str(s.clone())),
        _ => None,
    }
    .ok_or_else(|| {
        Error::invalid(format!(
            "{path} must be an unsigned integer or a string, got {value}"
        ))
    })?;
    id.validate()
        .map_err(|e| Error::invalid(format!("{path}: {e}")))?;
    Ok(id)
}

pub fn id_to_json(id: &PointId) -> Value {
    match id {
        PointId::Num(n) => Value::from(*n),
        PointId::Str(s) => Value::from(s.clone()),
    }
}

// ---- payloads -------------------------------------------------------------------------------

/// A payload from JSON text (gRPC): empty is `{}`, anything but an object is refused.
pub fn payload_from_text(text: &str, path: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid(format!("{path} must be a JSON object"))),
        Err(e) => Err(Error::invalid(format!("{path} is not valid JSON: {e}"))),
    }
}

fn payload_to_text(payload: Map<String, Value>) -> String {
    Value::Object(payload).to_string()
}

// ---- points and writes ----------------------------------------------------------------------

/// Point `i` of an upsert (`points[i]` in errors). The vector is checked by the shard, which
/// knows the collection.
pub fn point_from_pb(p: pb::Point, i: usize) -> Result<Point> {
    Ok(Point {
        id: id_from_pb(p.id, &format!("points[{i}].id"))?,
        vector: p.vector,
        payload: payload_from_text(&p.payload_json, &format!("points[{i}].payload_json"))?,
    })
}

impl From<Point> for pb::Point {
    fn from(p: Point) -> Self {
        pb::Point {
            id: Some(p.id.into()),
            vector: p.vector,
            payload_json: payload_to_text(p.payload),
        }
    }
}

/// A delete's target: exactly one of ids or a filter.
pub fn delete_target_from_pb(ids: Vec<pb::PointId>, filter_json: &str) -> Result<DeleteTarget> {
    match (ids.is_empty(), Filter::parse_text(filter_json)?) {
        (false, None) => Ok(DeleteTarget::Ids(ids_from_pb(ids)?)),
        (true, Some(f)) => Ok(DeleteTarget::Filter(f)),
        (false, Some(_)) | (true, None) => {
            Err(Error::invalid("give exactly one of ids or filter_json"))
        }
    }
}

/// The answer to an acknowledged write; `time_ms` is measured by the transport.
pub fn write_to_pb(o: WriteOutcome, time_ms: f64) -> pb::WriteResponse {
    pb::WriteResponse {
        sequence: o.sequence,
        affected: o.affected,
        version: o.version,
        time_ms,
    }
}

// ---- searches and hits ----------------------------------------------------------------------

pub fn search_from_pb(r: pb::SearchRequest) -> Result<SearchRequest> {
    Ok(SearchRequest {
        vector: r.vector,
        limit: r.limit as usize,
        filter: Filter::parse_text(&r.filter_json)?,
        ef: (r.ef > 0).then_some(r.ef as usize),
        exact: r.exact,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    })
}

/// A search as the router forwards it to a shard of `collection`.
pub fn search_to_pb(r: &SearchRequest, collection: &str) -> pb::SearchRequest {
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

impl From<ScoredPoint> for pb::ScoredPoint {
    fn from(p: ScoredPoint) -> Self {
        pb::ScoredPoint {
            id: Some(p.id.into()),
            score: p.score,
            payload_json: p.payload.map(payload_to_text).unwrap_or_default(),
            vector: p.vector.unwrap_or_default(),
            version: p.version,
        }
    }
}

/// A hit from a shard's answer (the router's side).
pub fn scored_from_pb(p: pb::ScoredPoint) -> Result<ScoredPoint> {
    Ok(ScoredPoint {
        id: id_from_pb(p.id, "result id")?,
        score: p.score,
        version: p.version,
        payload: (!p.payload_json.is_empty())
            .then(|| payload_from_text(&p.payload_json, "payload"))
            .transpose()?,
        vector: (!p.vector.is_empty()).then_some(p.vector),
    })
}

impl From<ScoredPoint> for pb::RetrievedPoint {
    fn from(p: ScoredPoint) -> Self {
        let s = pb::ScoredPoint::from(p);
        pb::RetrievedPoint {
            id: s.id,
            vector: s.vector,
            payload_json: s.payload_json,
            version: s.version,
        }
    }
}

/// A point read by id from a shard's answer (the router's side).
pub fn retrieved_from_pb(p: pb::RetrievedPoint) -> Result<ScoredPoint> {
    scored_from_pb(pb::ScoredPoint {
        id: p.id,
        score: 0.0,
        payload_json: p.payload_json,
        vector: p.vector,
        version: p.version,
    })
}

/// A scroll request as a shard receives it (limit 0 means Qdrant's default, 10).
pub fn scroll_from_pb(r: pb::ScrollRequest) -> Result<ScrollRequest> {
    Ok(ScrollRequest {
        offset: r
            .offset
            .map(|o| id_from_pb(Some(o), "offset"))
            .transpose()?,
        limit: if r.limit == 0 { 10 } else { r.limit as usize },
        filter: Filter::parse_text(&r.filter_json)?,
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    })
}

pub fn scroll_to_pb(r: &ScrollRequest, collection: &str) -> pb::ScrollRequest {
    pb::ScrollRequest {
        collection: collection.to_string(),
        offset: r.offset.clone().map(pb::PointId::from),
        limit: r.limit as u32,
        filter_json: r
            .filter
            .as_ref()
            .map(|f| f.to_json().to_string())
            .unwrap_or_default(),
        with_payload: r.with_payload,
        with_vector: r.with_vector,
    }
}

impl From<ScrollPage> for pb::ScrollResponse {
    fn from(page: ScrollPage) -> Self {
        pb::ScrollResponse {
            points: page
                .points
                .into_iter()
                .map(pb::RetrievedPoint::from)
                .collect(),
            next_offset: page.next_offset.map(pb::PointId::from),
        }
    }
}

/// A shard's scroll page (the router's side). A page asked with payloads carries one for
/// every point, empty ones included.
pub fn scroll_page_from_pb(r: pb::ScrollResponse, with_payload: bool) -> Result<ScrollPage> {
    Ok(ScrollPage {
        points: r
            .points
            .into_iter()
            .map(|p| {
                let p = retrieved_from_pb(p)?;
                Ok(ScoredPoint {
                    payload: p.payload.or_else(|| with_payload.then(Default::default)),
                    ..p
                })
            })
            .collect::<Result<_>>()?,
        next_offset: r
            .next_offset
            .map(|o| id_from_pb(Some(o), "next_offset"))
            .transpose()?,
    })
}

// ---- collections ----------------------------------------------------------------------------

/// The collection a shard reports serving, checked against the name the shard map gives it.
pub fn config_from_info(info: &pb::CollectionInfo, collection: &str) -> Result<CollectionConfig> {
    let reported = |e: String| Error::internal(format!("shard reports an unusable {e}"));
    let metric = info.metric.parse().map_err(reported)?;
    let quantization = info.quantization.parse().map_err(reported)?;
    let indexed_fields = info
        .indexed_fields
        .iter()
        .map(|f| {
            Ok(IndexedField {
                name: f.name.clone(),
                kind: f.kind.parse().map_err(reported)?,
            })
        })
        .collect::<Result<_>>()?;
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

// ---- replication ----------------------------------------------------------------------------

/// A stored record as replication sends it.
pub fn record_to_pb((id, record): (PointId, Record)) -> pb::LogRecord {
    pb::LogRecord {
        id: Some(id.into()),
        version: record.version,
        deleted: record.vector.is_none(),
        vector: record.vector.unwrap_or_default(),
        payload_json: String::from_utf8_lossy(&record.payload).into_owned(),
    }
}

/// A replicated record as the receiving shard applies it. A live record whose payload is not
/// a JSON object is refused: indexing it as `{}` would make filters on this replica disagree
/// with its peers without anyone noticing.
pub fn record_from_pb(r: pb::LogRecord) -> Result<(PointId, Record)> {
    let id = id_from_pb(r.id, "log record id")?;
    if !r.deleted {
        payload_from_text(
            &r.payload_json,
            &format!("payload of replicated point {id}"),
        )?;
    }
    Ok((
        id,
        Record {
            version: r.version,
            vector: (!r.deleted).then_some(r.vector),
            payload: r.payload_json.into_bytes(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldKind, Metric, Quantization};

    fn info() -> pb::CollectionInfo {
        pb::CollectionInfo {
            name: "docs".into(),
            dimension: 4,
            metric: "cosine".into(),
            hnsw_m: 16,
            hnsw_ef_construction: 128,
            hnsw_ef_search: 64,
            quantization: "i8".into(),
            indexed_fields: vec![pb::IndexedField {
                name: "lang".into(),
                kind: "keyword".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn collection_info_round_trips_into_a_config() {
        let c = config_from_info(&info(), "docs").unwrap();
        assert_eq!(c.metric, Metric::Cosine);
        assert_eq!(c.quantization, Quantization::I8);
        assert_eq!(c.indexed_fields[0].kind, FieldKind::Keyword);
        assert!(config_from_info(&info(), "other")
            .unwrap_err()
            .to_string()
            .contains("the shard map names \"other\""));
    }

    #[test]
    fn unknown_names_in_collection_info_are_errors_not_fallbacks() {
        let mut i = info();
        i.quantization = "int4".into();
        let err = config_from_info(&i, "docs").unwrap_err().to_string();
        assert!(err.contains("quantization \"int4\""), "{err}");
        let mut i = info();
        i.indexed_fields[0].kind = "date".into();
        assert!(config_from_info(&i, "docs").is_err());
    }

    #[test]
    fn replicated_records_with_unparsable_payloads_are_refused() {
        let record = |deleted: bool, payload: &str| pb::LogRecord {
            id: Some(PointId::Num(7).into()),
            version: 3,
            deleted,
            vector: if deleted { vec![] } else { vec![1.0, 0.0] },
            payload_json: payload.into(),
        };
        let err = record_from_pb(record(false, "{not json")).unwrap_err();
        assert!(
            err.to_string().contains("payload of replicated point 7"),
            "{err}"
        );
        assert!(record_from_pb(record(false, "[1, 2]")).is_err());
        // Empty is no payload, and a tombstone carries none.
        assert!(record_from_pb(record(false, "")).is_ok());
        let (id, tomb) = record_from_pb(record(true, "")).unwrap();
        assert_eq!((id, tomb.vector), (PointId::Num(7), None));
        let (_, live) = record_from_pb(record(false, r#"{"a":1}"#)).unwrap();
        assert_eq!(live.payload, br#"{"a":1}"#.to_vec());
    }

    #[test]
    fn hits_round_trip_through_the_wire() {
        let hit = ScoredPoint {
            id: PointId::Str("doc-1".into()),
            score: 0.5,
            version: 9,
            payload: Some(serde_json::from_str(r#"{"k":"v"}"#).unwrap()),
            vector: Some(vec![0.25, 0.75]),
        };
        assert_eq!(scored_from_pb(hit.clone().into()).unwrap(), hit);
    }

    #[test]
    fn delete_needs_exactly_one_target() {
        let ids = vec![pb::PointId::from(PointId::Num(1))];
        assert!(delete_target_from_pb(vec![], "").is_err());
        assert!(delete_target_from_pb(
            ids.clone(),
            r#"{"must":[{"key":"a","match":{"value":"x"}}]}"#
        )
        .is_err());
        assert!(matches!(
            delete_target_from_pb(ids, ""),
            Ok(DeleteTarget::Ids(v)) if v == vec![PointId::Num(1)]
        ));
    }
}
