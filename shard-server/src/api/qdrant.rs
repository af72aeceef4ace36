//! Qdrant's REST request and response shapes, as the official clients and the RAG frameworks'
//! Qdrant integrations send and parse them: vectors (plain or the unnamed `""` vector),
//! `with_payload` / `with_vector` selectors, point selectors, the universal query, collection
//! info. Pure functions: the handlers in `http.rs` do the I/O. What vecshard does not support
//! (named, sparse and multi vectors, recommend, discover, prefetch, ...) is refused with an
//! error naming the feature, never answered with something else.

use serde_json::{json, Map, Value};

use vecshard_core::convert::id_from_json;
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::model::{Metric, PointId};
use vecshard_core::request::ScoredPoint;
use vecshard_proto::v1 as pb;

/// The Qdrant REST API version whose shapes these are (what `GET /` reports as `version`, so
/// that `qdrant-client`'s compatibility check passes): the client release the tests run.
pub const QDRANT_API_VERSION: &str = "1.20.0";

/// Where a refusal sends the reader.
const SEE: &str = "see the Qdrant compatibility table in docs/api.md";

pub fn unsupported(feature: &str) -> Error {
    Error::invalid(format!("{feature} is not supported by vecshard; {SEE}"))
}

/// A dense vector: `[..]`, `{"": [..]}` (the unnamed vector by name, as LangChain sends it) or
/// `{"name": "", "vector": [..]}` (the older search form).
pub fn vector_input(value: &Value, path: &str) -> Result<Vec<f32>> {
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| Error::invalid(format!("{path}[{i}] must be a number, got {x}")))
            })
            .collect(),
        Value::Object(obj) => {
            if obj.contains_key("indices") {
                return Err(unsupported("a sparse vector"));
            }
            if let (Some(name), Some(vector)) = (obj.get("name"), obj.get("vector")) {
                return match name.as_str() {
                    Some("") => vector_input(vector, &format!("{path}.vector")),
                    _ => Err(unsupported(&format!("the named vector {name}"))),
                };
            }
            match obj.iter().next() {
                Some((name, vector)) if obj.len() == 1 && name.is_empty() => {
                    if vector
                        .as_array()
                        .and_then(|v| v.first())
                        .is_some_and(Value::is_array)
                    {
                        return Err(unsupported("a multivector"));
                    }
                    vector_input(vector, &format!("{path}[\"\"]"))
                }
                Some((name, _)) if obj.len() == 1 => {
                    Err(unsupported(&format!("the named vector {name:?}")))
                }
                _ => Err(unsupported(
                    "named vectors (a collection holds one unnamed vector)",
                )),
            }
        }
        other => Err(Error::invalid(format!(
            "{path} must be a list of numbers, got {other}"
        ))),
    }
}

/// `using` names the vector a query searches: only the unnamed one exists.
pub fn check_using(using: Option<&Value>) -> Result<()> {
    match using {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(other) => Err(unsupported(&format!("the named vector {other} (using)"))),
    }
}

/// Which payload keys an answer carries (`with_payload`).
#[derive(Clone, Debug, PartialEq)]
pub enum PayloadSelector {
    None,
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl PayloadSelector {
    /// `true` / `false`, a list of keys, `{"include": [..]}` or `{"exclude": [..]}`; absent or
    /// null means `default`.
    pub fn parse(value: Option<&Value>, default: bool) -> Result<PayloadSelector> {
        let keys = |v: &Value, path: &str| -> Result<Vec<String>> {
            let list = match v {
                Value::String(s) => return Ok(vec![s.clone()]),
                Value::Array(items) => items,
                _ => return Err(Error::invalid(format!("{path} must be a list of keys"))),
            };
            list.iter()
                .map(|k| {
                    k.as_str().map(str::to_string).ok_or_else(|| {
                        Error::invalid(format!("{path} must be a list of keys, got {k}"))
                    })
                })
                .collect()
        };
        Ok(match value {
            None | Some(Value::Null) => Self::from_bool(default),
            Some(Value::Bool(b)) => Self::from_bool(*b),
            Some(list @ Value::Array(_)) => Self::Include(keys(list, "with_payload")?),
            Some(Value::Object(obj)) => {
                match (obj.get("include"), obj.get("exclude")) {
                    (Some(v), None) => Self::Include(keys(v, "with_payload.include")?),
                    (None, Some(v)) => Self::Exclude(keys(v, "with_payload.exclude")?),
                    _ => return Err(Error::invalid(
                        "with_payload must be true, false, a list of keys, {\"include\": [..]} \
                         or {\"exclude\": [..]}",
                    )),
                }
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "with_payload must be a boolean, a list of keys or a selector, got {other}"
                )))
            }
        })
    }

    fn from_bool(b: bool) -> Self {
        if b {
            Self::All
        } else {
            Self::None
        }
    }

    /// Whether the payload must be read at all.
    pub fn wanted(&self) -> bool {
        *self != Self::None
    }

    /// The payload as the selector shows it (a top-level key, or a dotted path's first key).
    pub fn apply(&self, payload: Option<Map<String, Value>>) -> Option<Map<String, Value>> {
        let top = |k: &String| k.split('.').next().unwrap_or(k).to_string();
        match self {
            Self::None => None,
            Self::All => payload,
            Self::Include(keys) => {
                let keys: Vec<String> = keys.iter().map(top).collect();
                payload.map(|p| p.into_iter().filter(|(k, _)| keys.contains(k)).collect())
            }
            Self::Exclude(keys) => {
                payload.map(|p| p.into_iter().filter(|(k, _)| !keys.contains(k)).collect())
            }
        }
    }
}

/// `with_vector` (`with_vectors` in some clients): a boolean, or a list of vector names where
/// only the unnamed vector exists.
pub fn with_vector(value: Option<&Value>) -> Result<bool> {
    match value {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Array(names)) if names.iter().all(|n| n.as_str() == Some("")) => {
            Ok(!names.is_empty())
        }
        Some(other) => Err(unsupported(&format!("with_vector {other} (named vectors)"))),
    }
}

/// The points an operation applies to: ids, or every point a filter matches.
#[derive(Clone, Debug)]
pub enum Selector {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// A points selector from a request body: `{"points": [..]}` (Qdrant), `{"ids": [..]}`
/// (vecshard) or `{"filter": {..}}`.
pub fn selector(body: &Map<String, Value>) -> Result<Selector> {
    let ids = body.get("points").or_else(|| body.get("ids"));
    match (ids, body.get("filter").filter(|f| !f.is_null())) {
        (Some(Value::Array(ids)), None) => Ok(Selector::Ids(
            ids.iter()
                .enumerate()
                .map(|(i, v)| id_from_json(v, &format!("points[{i}]")))
                .collect::<Result<_>>()?,
        )),
        (None, Some(f)) => Ok(Selector::Filter(Filter::parse(f, "filter")?)),
        (Some(Value::Object(inner)), None) => match inner.get("filter") {
            // `{"points": {"filter": ..}}`: a filter selector nested the way some clients
            // serialise it.
            Some(f) => Ok(Selector::Filter(Filter::parse(f, "points.filter")?)),
            None => Err(Error::invalid("points must be a list of point ids")),
        },
        _ => Err(Error::invalid(
            "give exactly one of \"points\" (a list of ids) or \"filter\"",
        )),
    }
}

/// Refuses request fields vecshard cannot honour (custom sharding, conditional updates).
pub fn refuse_fields(body: &Map<String, Value>, fields: &[(&str, &str)]) -> Result<()> {
    for (field, feature) in fields {
        if body.get(*field).is_some_and(|v| !v.is_null()) {
            return Err(unsupported(feature));
        }
    }
    Ok(())
}

/// What a query asks for (the universal query API's `query`).
#[derive(Clone, Debug, PartialEq)]
pub enum QueryTarget {
    /// No query: points in id order, as a scroll.
    None,
    Vector(Vec<f32>),
    /// Maximal marginal relevance: of the `candidates` nearest points, the ones that are both
    /// near the query and unlike each other (`diversity` 0: relevance only, 1: diversity only).
    Mmr {
        vector: Vec<f32>,
        diversity: f32,
        candidates: Option<usize>,
    },
    /// The nearest points to the vector of a stored point.
    Point(PointId),
}

/// `{"nearest": vector, "mmr": {"diversity", "candidates_limit"}}`.
fn mmr_target(nearest: &Value, mmr: &Value) -> Result<QueryTarget> {
    let diversity = match mmr.get("diversity") {
        None | Some(Value::Null) => 0.5,
        Some(d) => d
            .as_f64()
            .filter(|d| (0.0..=1.0).contains(d))
            .ok_or_else(|| {
                Error::invalid(format!("query.mmr.diversity is {d}, it must be in [0, 1]"))
            })? as f32,
    };
    let candidates = match mmr.get("candidates_limit") {
        None | Some(Value::Null) => None,
        Some(c) => Some(c.as_u64().ok_or_else(|| {
            Error::invalid(format!(
                "query.mmr.candidates_limit must be an integer, got {c}"
            ))
        })? as usize),
    };
    Ok(QueryTarget::Mmr {
        vector: vector_input(nearest, "query.nearest")?,
        diversity,
        candidates,
    })
}

pub fn query_target(value: Option<&Value>) -> Result<QueryTarget> {
    let value = match value {
        None | Some(Value::Null) => return Ok(QueryTarget::None),
        Some(v) => v,
    };
    match value {
        Value::Number(_) | Value::String(_) => {
            Ok(QueryTarget::Point(id_from_json(value, "query")?))
        }
        Value::Array(_) => Ok(QueryTarget::Vector(vector_input(value, "query")?)),
        Value::Object(obj) => {
            if let Some(nearest) = obj.get("nearest") {
                return match obj.get("mmr").filter(|m| !m.is_null()) {
                    None => query_target(Some(nearest)),
                    Some(mmr) => mmr_target(nearest, mmr),
                };
            }
            if obj.contains_key("indices") || obj.contains_key("") || obj.contains_key("name") {
                return Ok(QueryTarget::Vector(vector_input(value, "query")?));
            }
            let kind = obj.keys().next().map(String::as_str).unwrap_or("{}");
            Err(unsupported(&format!("query.{kind}")))
        }
        other => Err(Error::invalid(format!(
            "query must be a vector, a point id or {{\"nearest\": ..}}, got {other}"
        ))),
    }
}

/// Keeps the hits at least as good as `threshold` (a minimum similarity, or for Euclidean
/// distance a maximum distance, as Qdrant's `score_threshold`).
pub fn above_threshold(metric: Metric, hits: &mut Vec<ScoredPoint>, threshold: Option<f32>) {
    if let Some(t) = threshold {
        hits.retain(|h| {
            if metric.higher_is_better() {
                h.score >= t
            } else {
                h.score <= t
            }
        });
    }
}

/// The similarity of two stored vectors under the collection's metric (higher is closer).
fn similarity(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let dot = || a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    match metric {
        Metric::Cosine | Metric::Dot => dot(),
        Metric::L2 => -a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt(),
    }
}

/// Maximal marginal relevance over `candidates` (hits with their vectors, best first): the
/// best hit, then repeatedly the candidate maximising `(1 - diversity) * relevance -
/// diversity * (its highest similarity to one already chosen)`, until `limit` are chosen. The
/// hits keep their score (the similarity to the query).
pub fn mmr_select(
    metric: Metric,
    candidates: Vec<ScoredPoint>,
    limit: usize,
    diversity: f32,
) -> Vec<ScoredPoint> {
    let relevance = |h: &ScoredPoint| {
        if metric.higher_is_better() {
            h.score
        } else {
            -h.score
        }
    };
    let mut left: Vec<ScoredPoint> = candidates;
    let mut chosen: Vec<ScoredPoint> = Vec::with_capacity(limit.min(left.len()));
    while chosen.len() < limit && !left.is_empty() {
        let value = |c: &ScoredPoint| {
            let redundancy = chosen
                .iter()
                .filter_map(|s| Some(similarity(metric, c.vector.as_ref()?, s.vector.as_ref()?)))
                .fold(None, |m: Option<f32>, x| Some(m.map_or(x, |m| m.max(x))))
                .unwrap_or(0.0);
            (1.0 - diversity) * relevance(c) - diversity * redundancy
        };
        // The first best on ties: candidates come best first.
        let best = (0..left.len())
            .max_by(|a, b| value(&left[*a]).total_cmp(&value(&left[*b])).then(b.cmp(a)))
            .expect("candidates left");
        chosen.push(left.remove(best));
    }
    chosen
}

/// Qdrant's name of a distance.
pub fn distance_name(metric: &str) -> &'static str {
    match metric {
        "dot" => "Dot",
        "l2" => "Euclid",
        _ => "Cosine",
    }
}

/// `create_collection` of a collection that exists: `ok` when its vector size and distance are
/// those asked (frameworks "create if missing"), otherwise an error saying how collections are
/// made.
pub fn check_create(info: &pb::CollectionInfo, body: &Value) -> Result<()> {
    let how = "collections are created by applying a VectorCollection (Kubernetes) or by the \
               flags of vecshard-server dev (--collection, --dimension, --metric)";
    let vectors = body.get("vectors").unwrap_or(&Value::Null);
    let params = match vectors {
        Value::Object(o) if o.contains_key("size") => vectors,
        Value::Object(o) => match o.get("") {
            Some(v) if o.len() == 1 => v,
            _ => {
                return Err(unsupported(
                    "named vectors (a collection holds one unnamed vector)",
                ))
            }
        },
        _ => {
            return Err(Error::invalid(format!(
                "vectors {{size, distance}} is required; {how}"
            )))
        }
    };
    if body.get("sparse_vectors").is_some_and(|v| !v.is_null()) {
        return Err(unsupported("sparse vectors"));
    }
    let size = params.get("size").and_then(Value::as_u64);
    let distance = params.get("distance").and_then(Value::as_str);
    let (have_size, have_distance) = (u64::from(info.dimension), distance_name(&info.metric));
    if size != Some(have_size) || distance != Some(have_distance) {
        return Err(Error::invalid(format!(
            "collection {:?} exists with vectors of size {have_size} and distance \
             {have_distance}; asked: size {}, distance {}. {how}",
            info.name,
            size.map_or("none".into(), |s| s.to_string()),
            distance.unwrap_or("none"),
        )));
    }
    Ok(())
}

/// Qdrant's `CollectionInfo` for what a shard or router reports, with vecshard's own fields
/// beside (clients ignore fields they do not know).
pub fn collection_info(i: &pb::CollectionInfo, shards: usize) -> Value {
    let status = match i.status.as_str() {
        "green" => "green",
        // Loading the index or indexing pending points: searches still answer (exactly).
        _ => "yellow",
    };
    let payload_schema: Map<String, Value> = i
        .indexed_fields
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                json!({"data_type": f.kind, "points": i.points}),
            )
        })
        .collect();
    let quantization = match i.quantization.as_str() {
        "i8" => json!({"scalar": {"type": "int8", "always_ram": true}}),
        "b1" => json!({"binary": {"always_ram": true}}),
        _ => Value::Null,
    };
    json!({
        "status": status,
        "optimizer_status": "ok",
        "indexed_vectors_count": i.indexed_points,
        "points_count": i.points,
        "segments_count": shards,
        "config": {
            "params": {
                "vectors": {"size": i.dimension, "distance": distance_name(&i.metric)},
                "shard_number": shards,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": true,
            },
            "hnsw_config": {"m": i.hnsw_m, "ef_construct": i.hnsw_ef_construction, "full_scan_threshold": 10000},
            "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                                 "default_segment_number": 0, "flush_interval_sec": 5},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            "quantization_config": quantization,
        },
        "payload_schema": payload_schema,
        // vecshard's own view.
        "name": i.name, "dimension": i.dimension, "metric": i.metric, "vecshard_status": i.status,
        "points": i.points, "indexed_points": i.indexed_points, "pending_points": i.pending_points,
        "index": {"type": if i.index_type.is_empty() { "hnsw" } else { i.index_type.as_str() }, "m": i.hnsw_m, "ef_construction": i.hnsw_ef_construction,
                  "ef_search": i.hnsw_ef_search, "quantization": i.quantization},
        "indexed_fields": i.indexed_fields.iter().map(|f| json!({"name": f.name, "kind": f.kind})).collect::<Vec<_>>(),
        "wal_sequence": i.wal_sequence, "index_memory_bytes": i.index_memory_bytes,
        "device": i.device,
    })
}

/// `create_payload_index`: `ok` for a field the collection declares with that type; any other
/// is refused with where indexed fields are declared.
pub fn check_payload_index(info: &pb::CollectionInfo, body: &Value) -> Result<()> {
    let name = body
        .get("field_name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("field_name (a string) is required"))?;
    let schema = body.get("field_schema");
    let kind = match schema {
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str),
        _ => None,
    };
    let declared = info.indexed_fields.iter().find(|f| f.name == name);
    let where_ = "indexed fields are declared in the collection's spec (VectorCollection \
                  spec.indexedFields, or --index-field NAME:KIND of vecshard-server)";
    match declared {
        Some(f) if kind.is_none_or(|k| k == f.kind) => Ok(()),
        Some(f) => Err(Error::invalid(format!(
            "field {name:?} is indexed as {}, not {}; {where_}",
            f.kind,
            kind.unwrap_or("?")
        ))),
        None => Err(Error::invalid(format!(
            "field {name:?} is not indexed and cannot be indexed through the API; {where_}"
        ))),
    }
}

/// A point as Qdrant's `ScoredPoint` (with `score`) or `Record` (without), plus vecshard's
/// `version`.
pub fn point_json(p: ScoredPoint, with_score: bool, payload: &PayloadSelector) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), vecshard_core::convert::id_to_json(&p.id));
    obj.insert("version".into(), json!(p.version));
    if with_score {
        obj.insert("score".into(), json!(p.score));
    }
    if let Some(payload) = payload.apply(p.payload) {
        obj.insert("payload".into(), Value::Object(payload));
    }
    if let Some(vector) = p.vector {
        obj.insert("vector".into(), json!(vector));
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_plain_or_as_the_unnamed_vector() {
        assert_eq!(vector_input(&json!([1, 2.5]), "v").unwrap(), vec![1.0, 2.5]);
        assert_eq!(
            vector_input(&json!({"": [1, 2]}), "v").unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(
            vector_input(&json!({"name": "", "vector": [3]}), "v").unwrap(),
            vec![3.0]
        );
        for (bad, says) in [
            (
                json!({"text": [1]}),
                "the named vector \"text\" is not supported",
            ),
            (json!({"indices": [1], "values": [0.5]}), "a sparse vector"),
            (json!({"": [[1], [2]]}), "a multivector"),
            (json!({"name": "img", "vector": [1]}), "named vector"),
            (json!([1, "x"]), "v[1] must be a number"),
        ] {
            let e = vector_input(&bad, "v").unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn payload_selectors_include_exclude_or_all() {
        let p = json!({"a": 1, "b": 2, "metadata": {"x": 1}})
            .as_object()
            .cloned();
        let sel = |v: Value| PayloadSelector::parse(Some(&v), false).unwrap();
        assert_eq!(sel(json!(true)).apply(p.clone()), p);
        assert_eq!(sel(json!(false)).apply(p.clone()), None);
        assert_eq!(
            PayloadSelector::parse(None, true).unwrap(),
            PayloadSelector::All
        );
        assert_eq!(
            Value::from(sel(json!(["a", "metadata.x"])).apply(p.clone()).unwrap()),
            json!({"a": 1, "metadata": {"x": 1}})
        );
        assert_eq!(
            Value::from(sel(json!({"exclude": ["a"]})).apply(p.clone()).unwrap()),
            json!({"b": 2, "metadata": {"x": 1}})
        );
        assert!(PayloadSelector::parse(Some(&json!(3)), false).is_err());
    }

    #[test]
    fn selectors_take_ids_or_a_filter() {
        let body = |v: Value| v.as_object().unwrap().clone();
        assert!(matches!(
            selector(&body(json!({"points": [1, "a"]}))).unwrap(),
            Selector::Ids(ids) if ids == vec![PointId::Num(1), PointId::Str("a".into())]
        ));
        assert!(matches!(
            selector(&body(json!({"filter": {"must": []}}))).unwrap(),
            Selector::Filter(_)
        ));
        assert!(selector(&body(json!({"points": [1], "filter": {}}))).is_err());
        assert!(selector(&body(json!({}))).is_err());
    }

    #[test]
    fn queries_are_vectors_point_ids_or_refused_by_name() {
        assert_eq!(query_target(None).unwrap(), QueryTarget::None);
        assert_eq!(
            query_target(Some(&json!({"nearest": [1, 2]}))).unwrap(),
            QueryTarget::Vector(vec![1.0, 2.0])
        );
        assert_eq!(
            query_target(Some(&json!(7))).unwrap(),
            QueryTarget::Point(PointId::Num(7))
        );
        for (q, says) in [
            (
                json!({"recommend": {"positive": [1]}}),
                "query.recommend is not supported",
            ),
            (json!({"fusion": "rrf"}), "query.fusion"),
            (json!({"context": []}), "query.context"),
        ] {
            let e = query_target(Some(&q)).unwrap_err().to_string();
            assert!(e.contains(says), "{q}: {e}");
        }
    }

    #[test]
    fn mmr_prefers_a_relevant_point_unlike_the_ones_chosen() {
        let hit = |id, score, vector: Vec<f32>| ScoredPoint {
            id: PointId::Num(id),
            score,
            version: 0,
            payload: None,
            vector: Some(vector),
        };
        // 1 and 2 are near duplicates; 3 is a little less relevant and different.
        let candidates = vec![
            hit(1, 0.99, vec![1.0, 0.0]),
            hit(2, 0.98, vec![0.999, 0.045]),
            hit(3, 0.90, vec![0.6, 0.8]),
        ];
        let ids = |hits: Vec<ScoredPoint>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(
            ids(mmr_select(Metric::Cosine, candidates.clone(), 2, 0.5)),
            vec![PointId::Num(1), PointId::Num(3)]
        );
        assert_eq!(
            ids(mmr_select(Metric::Cosine, candidates.clone(), 2, 0.0)),
            vec![PointId::Num(1), PointId::Num(2)],
            "diversity 0 is plain relevance"
        );
        assert_eq!(mmr_select(Metric::Cosine, candidates, 5, 0.5).len(), 3);
        assert_eq!(
            query_target(Some(
                &json!({"nearest": [1, 0], "mmr": {"diversity": 0.3, "candidates_limit": 9}})
            ))
            .unwrap(),
            QueryTarget::Mmr {
                vector: vec![1.0, 0.0],
                diversity: 0.3,
                candidates: Some(9)
            }
        );
        assert!(query_target(Some(&json!({"nearest": [1], "mmr": {"diversity": 2}}))).is_err());
    }

    #[test]
    fn score_thresholds_follow_the_metric() {
        let hit = |score| ScoredPoint {
            id: PointId::Num(0),
            score,
            version: 0,
            payload: None,
            vector: None,
        };
        let mut hits = vec![hit(0.9), hit(0.5)];
        above_threshold(Metric::Cosine, &mut hits, Some(0.6));
        assert_eq!(hits.len(), 1);
        let mut hits = vec![hit(0.9), hit(0.5)];
        above_threshold(Metric::L2, &mut hits, Some(0.6));
        assert_eq!(hits[0].score, 0.5);
    }

    fn info() -> pb::CollectionInfo {
        pb::CollectionInfo {
            name: "docs".into(),
            dimension: 8,
            metric: "cosine".into(),
            indexed_fields: vec![pb::IndexedField {
                name: "city".into(),
                kind: "keyword".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn creating_the_collection_served_is_ok_and_anything_else_says_how() {
        check_create(
            &info(),
            &json!({"vectors": {"size": 8, "distance": "Cosine"}}),
        )
        .unwrap();
        check_create(
            &info(),
            &json!({"vectors": {"": {"size": 8, "distance": "Cosine"}}}),
        )
        .unwrap();
        let e = check_create(&info(), &json!({"vectors": {"size": 4, "distance": "Dot"}}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("size 8 and distance Cosine") && e.contains("VectorCollection"),
            "{e}"
        );
    }

    #[test]
    fn only_declared_fields_can_be_indexed() {
        check_payload_index(
            &info(),
            &json!({"field_name": "city", "field_schema": "keyword"}),
        )
        .unwrap();
        let e = check_payload_index(
            &info(),
            &json!({"field_name": "city", "field_schema": "integer"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("indexed as keyword"), "{e}");
        let e = check_payload_index(
            &info(),
            &json!({"field_name": "year", "field_schema": "integer"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("spec.indexedFields"), "{e}");
    }

    #[test]
    fn collection_info_has_what_the_clients_require() {
        let v = collection_info(&info(), 2);
        for path in [
            "/status",
            "/optimizer_status",
            "/segments_count",
            "/config/params/vectors/size",
            "/config/hnsw_config/m",
            "/config/optimizer_config/flush_interval_sec",
            "/payload_schema/city/data_type",
            "/dimension",
        ] {
            assert!(
                v.pointer(path).is_some_and(|x| !x.is_null()),
                "{path} in {v}"
            );
        }
        assert_eq!(
            v.pointer("/config/params/vectors/distance"),
            Some(&json!("Cosine"))
        );
    }
}
