//! Qdrant's gRPC messages (package `qdrant`) as the REST bodies and answers of the same
//! operations: a gRPC request becomes the JSON body the REST handler reads (`http_points`,
//! `http_payload`), and the REST answer becomes the gRPC reply. One implementation of what each
//! operation means, two encodings, so the two APIs cannot drift apart. Features a message can
//! carry that vecshard lacks (sparse vectors, recommend, geo conditions, ...) are refused here
//! by name: they arrive as the proto's empty placeholders, never silently dropped. Pure
//! functions; `grpc_qdrant.rs` does the I/O.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::qdrant::{distance_name, unsupported};
use vecshard_core::error::{Error, Result};
use vecshard_core::request::WriteOutcome;
use vecshard_proto::qdrant as q;
use vecshard_proto::v1 as pb;

/// A REST request body.
pub type Body = Map<String, Value>;

// ------------------------------------------------------------------------------ values

pub fn value_to_json(v: q::Value) -> Value {
    use q::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::DoubleValue(d)) => json!(d),
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(s)) => Value::Object(payload_to_json(s.fields)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

pub fn payload_to_json(fields: HashMap<String, q::Value>) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

/// Integers stay integers (`integer_value`) where they fit an i64, as Qdrant answers them.
pub fn value_from_json(v: Value) -> q::Value {
    use q::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(q::NullValue::NullValue as i32),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(q::ListValue {
            values: items.into_iter().map(value_from_json).collect(),
        }),
        Value::Object(o) => Kind::StructValue(q::Struct {
            fields: payload_from_json(o),
        }),
    };
    q::Value { kind: Some(kind) }
}

pub fn payload_from_json(o: Map<String, Value>) -> HashMap<String, q::Value> {
    o.into_iter()
        .map(|(k, v)| (k, value_from_json(v)))
        .collect()
}

// ------------------------------------------------------------------------------ ids

pub fn id_to_json(id: Option<q::PointId>, path: &str) -> Result<Value> {
    use q::point_id::PointIdOptions as P;
    match id.and_then(|i| i.point_id_options) {
        Some(P::Num(n)) => Ok(json!(n)),
        Some(P::Uuid(s)) => Ok(Value::String(s)),
        None => Err(Error::invalid(format!(
            "{path} is required (a number or a UUID)"
        ))),
    }
}

/// vecshard's string ids that are not UUIDs travel in the `uuid` field too: it is the only
/// string form Qdrant's messages have.
pub fn id_from_json(v: &Value) -> q::PointId {
    use q::point_id::PointIdOptions as P;
    let options = match v {
        Value::Number(n) => n.as_u64().map(P::Num),
        Value::String(s) => Some(P::Uuid(s.clone())),
        _ => None,
    };
    q::PointId {
        point_id_options: options,
    }
}

fn ids_to_json(ids: Vec<q::PointId>, path: &str) -> Result<Value> {
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| id_to_json(Some(id), &format!("{path}[{i}]")))
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

// ------------------------------------------------------------------------------ filters

pub fn filter_to_json(f: q::Filter) -> Result<Value> {
    let mut obj = Map::new();
    for (name, list) in [
        ("must", f.must),
        ("should", f.should),
        ("must_not", f.must_not),
    ] {
        if !list.is_empty() {
            let items = list
                .into_iter()
                .map(condition_to_json)
                .collect::<Result<Vec<_>>>()?;
            obj.insert(name.into(), Value::Array(items));
        }
    }
    if let Some(m) = f.min_should {
        let conditions = m
            .conditions
            .into_iter()
            .map(condition_to_json)
            .collect::<Result<Vec<_>>>()?;
        obj.insert(
            "min_should".into(),
            json!({"conditions": conditions, "min_count": m.min_count}),
        );
    }
    Ok(Value::Object(obj))
}

fn condition_to_json(c: q::Condition) -> Result<Value> {
    use q::condition::ConditionOneOf as C;
    Ok(match c.condition_one_of {
        None => {
            return Err(Error::invalid(
                "a filter condition is empty (or of a kind this server does not know)",
            ))
        }
        Some(C::Field(f)) => field_condition_to_json(f)?,
        Some(C::IsEmpty(e)) => json!({"is_empty": {"key": e.key}}),
        Some(C::IsNull(n)) => json!({"is_null": {"key": n.key}}),
        Some(C::HasId(h)) => json!({"has_id": ids_to_json(h.has_id, "has_id")?}),
        Some(C::Filter(f)) => filter_to_json(f)?,
        Some(C::Nested(n)) => {
            json!({"nested": {"key": n.key, "filter": filter_to_json(n.filter.unwrap_or_default())?}})
        }
        Some(C::HasVector(h)) => json!({"has_vector": h.has_vector}),
        Some(C::Slice(_)) => return Err(unsupported("the slice filter condition")),
    })
}

fn field_condition_to_json(f: q::FieldCondition) -> Result<Value> {
    let geo = [
        (f.geo_bounding_box.is_some(), "geo_bounding_box"),
        (f.geo_radius.is_some(), "geo_radius"),
        (f.geo_polygon.is_some(), "geo_polygon"),
        (f.values_count.is_some(), "values_count"),
        (f.datetime_range.is_some(), "datetime_range"),
    ];
    if let Some((_, name)) = geo.iter().find(|(present, _)| *present) {
        return Err(unsupported(&format!(
            "the {name} filter condition (on {:?})",
            f.key
        )));
    }
    let mut obj = Map::new();
    obj.insert("key".into(), Value::String(f.key));
    if let Some(m) = f.r#match {
        obj.insert("match".into(), match_to_json(m)?);
    }
    if let Some(r) = f.range {
        let bounds: Map<String, Value> =
            [("lt", r.lt), ("gt", r.gt), ("gte", r.gte), ("lte", r.lte)]
                .into_iter()
                .filter_map(|(name, bound)| bound.map(|b| (name.to_string(), json!(b))))
                .collect();
        obj.insert("range".into(), Value::Object(bounds));
    }
    for (name, flag) in [("is_empty", f.is_empty), ("is_null", f.is_null)] {
        if let Some(flag) = flag {
            obj.insert(name.into(), Value::Bool(flag));
        }
    }
    Ok(Value::Object(obj))
}

fn match_to_json(m: q::Match) -> Result<Value> {
    use q::r#match::MatchValue as M;
    Ok(match m.match_value {
        None => return Err(Error::invalid("a match condition has no value")),
        Some(M::Keyword(s)) => json!({"value": s}),
        Some(M::Integer(i)) => json!({"value": i}),
        Some(M::Boolean(b)) => json!({"value": b}),
        Some(M::Keywords(k)) => json!({"any": k.strings}),
        Some(M::Integers(i)) => json!({"any": i.integers}),
        Some(M::ExceptKeywords(k)) => json!({"except": k.strings}),
        Some(M::ExceptIntegers(i)) => json!({"except": i.integers}),
        Some(M::Text(t)) => json!({"text": t}),
        Some(M::Phrase(t)) => json!({"phrase": t}),
        Some(M::TextAny(t)) => json!({"text_any": t}),
        Some(M::Prefix(t)) => json!({"prefix": t}),
        Some(M::Substring(t)) => json!({"substring": t}),
    })
}

fn insert_filter(body: &mut Map<String, Value>, filter: Option<q::Filter>) -> Result<()> {
    if let Some(f) = filter {
        body.insert("filter".into(), filter_to_json(f)?);
    }
    Ok(())
}

// ------------------------------------------------------------------------------ selectors

fn insert_with_payload(body: &mut Map<String, Value>, s: Option<q::WithPayloadSelector>) {
    use q::with_payload_selector::SelectorOptions as S;
    let value = match s.and_then(|s| s.selector_options) {
        None => return,
        Some(S::Enable(b)) => Value::Bool(b),
        Some(S::Include(i)) => json!({"include": i.fields}),
        Some(S::Exclude(e)) => json!({"exclude": e.fields}),
    };
    body.insert("with_payload".into(), value);
}

fn insert_with_vectors(body: &mut Map<String, Value>, s: Option<q::WithVectorsSelector>) {
    use q::with_vectors_selector::SelectorOptions as S;
    let value = match s.and_then(|s| s.selector_options) {
        None => return,
        Some(S::Enable(b)) => Value::Bool(b),
        Some(S::Include(names)) => json!(names.names),
    };
    body.insert("with_vector".into(), value);
}

fn points_selector_to_json(
    s: Option<q::PointsSelector>,
    body: &mut Map<String, Value>,
) -> Result<()> {
    use q::points_selector::PointsSelectorOneOf as S;
    match s.and_then(|s| s.points_selector_one_of) {
        Some(S::Points(list)) => {
            body.insert("points".into(), ids_to_json(list.ids, "points")?);
        }
        Some(S::Filter(f)) => {
            body.insert("filter".into(), filter_to_json(f)?);
        }
        None => return Err(Error::invalid("points (ids or a filter) is required")),
    }
    Ok(())
}

/// Fields of a request that name features vecshard lacks.
fn refuse(present: &[(bool, &str)]) -> Result<()> {
    match present.iter().find(|(p, _)| *p) {
        Some((_, feature)) => Err(unsupported(feature)),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------------------ vectors

fn dense_of(v: q::Vector) -> Result<Vec<f32>> {
    use q::vector::Vector as V;
    match v.vector {
        Some(V::Dense(d)) => Ok(d.data),
        Some(V::Sparse(_)) => Err(unsupported("a sparse vector")),
        Some(V::MultiDense(_)) => Err(unsupported("a multivector")),
        Some(V::Document(_) | V::Image(_) | V::Object(_)) => Err(unsupported(
            "server-side inference (documents, images, objects)",
        )),
        None if v.indices.is_some() => Err(unsupported("a sparse vector")),
        None if v.vectors_count.is_some() => Err(unsupported("a multivector")),
        None => Ok(v.data),
    }
}

fn vectors_of(v: Option<q::Vectors>, path: &str) -> Result<Vec<f32>> {
    use q::vectors::VectorsOptions as V;
    match v.and_then(|v| v.vectors_options) {
        Some(V::Vector(v)) => dense_of(v),
        Some(V::Vectors(mut named)) => match named.vectors.remove("") {
            Some(v) if named.vectors.is_empty() => dense_of(v),
            _ => Err(unsupported(
                "named vectors (a collection holds one unnamed vector)",
            )),
        },
        None => Err(Error::invalid(format!("{path}.vectors is required"))),
    }
}

fn vector_input_to_json(v: Option<q::VectorInput>, path: &str) -> Result<Value> {
    use q::vector_input::Variant as V;
    match v.and_then(|v| v.variant) {
        Some(V::Dense(d)) => Ok(json!(d.data)),
        Some(V::Id(id)) => id_to_json(Some(id), path),
        Some(V::Sparse(_)) => Err(unsupported("a sparse vector")),
        Some(V::MultiDense(_)) => Err(unsupported("a multivector")),
        Some(V::Document(_) | V::Image(_) | V::Object(_)) => Err(unsupported(
            "server-side inference (documents, images, objects)",
        )),
        None => Err(Error::invalid(format!(
            "{path} is required (a dense vector or a point id)"
        ))),
    }
}

fn query_to_json(query: Option<q::Query>) -> Result<Value> {
    use q::query::Variant as V;
    let Some(variant) = query.and_then(|q| q.variant) else {
        return Ok(Value::Null);
    };
    let feature = match variant {
        V::Nearest(v) => return vector_input_to_json(Some(v), "query.nearest"),
        V::NearestWithMmr(n) => {
            let mmr = n.mmr.unwrap_or_default();
            return Ok(json!({
                "nearest": vector_input_to_json(n.nearest, "query.nearest_with_mmr.nearest")?,
                "mmr": {"diversity": mmr.diversity, "candidates_limit": mmr.candidates_limit},
            }));
        }
        // Named as the REST API names them (`query.<kind>`), so both APIs refuse alike.
        V::Recommend(_) => "query.recommend",
        V::Discover(_) => "query.discover",
        V::Context(_) => "query.context",
        V::OrderBy(_) => "query.order_by",
        V::Fusion(_) => "query.fusion",
        V::Rrf(_) => "query.rrf",
        V::Sample(_) => "query.sample",
        V::Formula(_) => "query.formula",
        V::RelevanceFeedback(_) => "query.relevance_feedback",
        V::Text(_) => "query.text",
    };
    Err(unsupported(feature))
}

fn insert_params(body: &mut Map<String, Value>, p: Option<q::SearchParams>) {
    let Some(p) = p else { return };
    let mut params = Map::new();
    if let Some(ef) = p.hnsw_ef {
        params.insert("hnsw_ef".into(), json!(ef));
    }
    if let Some(exact) = p.exact {
        params.insert("exact".into(), json!(exact));
    }
    body.insert("params".into(), Value::Object(params));
}

fn insert_opt<T: Into<Value>>(body: &mut Map<String, Value>, name: &str, v: Option<T>) {
    if let Some(v) = v {
        body.insert(name.into(), v.into());
    }
}

// ------------------------------------------------------------------------------ requests

pub fn upsert_body(r: q::UpsertPoints) -> Result<Map<String, Value>> {
    refuse(&[
        (
            r.shard_key_selector.is_some(),
            "shard_key (custom sharding)",
        ),
        (
            r.update_filter.is_some(),
            "update_filter (conditional upserts)",
        ),
    ])?;
    let points = r
        .points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let path = format!("points[{i}]");
            Ok(json!({
                "id": id_to_json(p.id, &format!("{path}.id"))?,
                "vector": vectors_of(p.vectors, &path)?,
                "payload": payload_to_json(p.payload),
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut body = Map::new();
    body.insert("points".into(), Value::Array(points));
    Ok(body)
}

pub fn delete_body(r: q::DeletePoints) -> Result<Map<String, Value>> {
    refuse(&[(
        r.shard_key_selector.is_some(),
        "shard_key (custom sharding)",
    )])?;
    let mut body = Map::new();
    points_selector_to_json(r.points, &mut body)?;
    Ok(body)
}

pub fn get_body(r: q::GetPoints) -> Result<Map<String, Value>> {
    refuse(&[(
        r.shard_key_selector.is_some(),
        "shard_key (custom sharding)",
    )])?;
    let mut body = Map::new();
    body.insert("ids".into(), ids_to_json(r.ids, "ids")?);
    insert_with_payload(&mut body, r.with_payload);
    insert_with_vectors(&mut body, r.with_vectors);
    Ok(body)
}

/// `SetPayload` / `OverwritePayload`.
pub fn set_payload_body(r: q::SetPayloadPoints) -> Result<Map<String, Value>> {
    refuse(&[
        (
            r.shard_key_selector.is_some(),
            "shard_key (custom sharding)",
        ),
        (r.key.is_some(), "a payload update at a nested key"),
    ])?;
    let mut body = Map::new();
    body.insert("payload".into(), Value::Object(payload_to_json(r.payload)));
    points_selector_to_json(r.points_selector, &mut body)?;
    Ok(body)
}

pub fn delete_payload_body(r: q::DeletePayloadPoints) -> Result<Map<String, Value>> {
    refuse(&[(
        r.shard_key_selector.is_some(),
        "shard_key (custom sharding)",
    )])?;
    let mut body = Map::new();
    body.insert("keys".into(), json!(r.keys));
    points_selector_to_json(r.points_selector, &mut body)?;
    Ok(body)
}

pub fn clear_payload_body(r: q::ClearPayloadPoints) -> Result<Map<String, Value>> {
    refuse(&[(
        r.shard_key_selector.is_some(),
        "shard_key (custom sharding)",
    )])?;
    let mut body = Map::new();
    points_selector_to_json(r.points, &mut body)?;
    Ok(body)
}

/// A search's body without its vector, and the vector (`search_vector_body`).
pub fn search_parts(mut r: q::SearchPoints) -> Result<(Map<String, Value>, Vec<f32>)> {
    let vector = std::mem::take(&mut r.vector);
    let mut body = search_body(r)?;
    body.remove("vector");
    Ok((body, vector))
}

pub fn search_body(r: q::SearchPoints) -> Result<Map<String, Value>> {
    refuse(&[
        (
            r.shard_key_selector.is_some(),
            "shard_key (custom sharding)",
        ),
        (r.sparse_indices.is_some(), "a sparse vector"),
        (
            r.vector_name.as_deref().is_some_and(|n| !n.is_empty()),
            "named vectors (vector_name)",
        ),
    ])?;
    let mut body = Map::new();
    body.insert("vector".into(), json!(r.vector));
    body.insert("limit".into(), json!(r.limit));
    insert_filter(&mut body, r.filter)?;
    insert_with_payload(&mut body, r.with_payload);
    insert_with_vectors(&mut body, r.with_vectors);
    insert_params(&mut body, r.params);
    insert_opt(&mut body, "score_threshold", r.score_threshold);
    insert_opt(&mut body, "offset", r.offset);
    Ok(body)
}

pub fn search_batch_body(r: q::SearchBatchPoints) -> Result<Map<String, Value>> {
    batch_body(r.search_points, search_body, "search_points")
}

/// A batch request as the REST batch body `{"searches": [..]}`; an item's error names its
/// place in the request (`field[i]`).
fn batch_body<T>(
    items: Vec<T>,
    body_of: fn(T) -> Result<Map<String, Value>>,
    field: &str,
) -> Result<Map<String, Value>> {
    let searches = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            body_of(item)
                .map(Value::Object)
                .map_err(|e| Error::invalid(format!("{field}[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut body = Map::new();
    body.insert("searches".into(), Value::Array(searches));
    Ok(body)
}

pub fn scroll_body(r: q::ScrollPoints) -> Result<Map<String, Value>> {
    refuse(&[
        (
            r.shard_key_selector.is_some(),
            "shard_key (custom sharding)",
        ),
        (
            r.order_by.is_some(),
            "scroll order_by (ordering by a payload field)",
        ),
    ])?;
    let mut body = Map::new();
    insert_filter(&mut body, r.filter)?;
    if r.offset.is_some() {
        body.insert("offset".into(), id_to_json(r.offset, "offset")?);
    }
    insert_opt(&mut body, "limit", r.limit);
    insert_with_payload(&mut body, r.with_payload);
    insert_with_vectors(&mut body, r.with_vectors);
    Ok(body)
}

pub fn count_body(r: q::CountPoints) -> Result<Map<String, Value>> {
    refuse(&[(
        r.shard_key_selector.is_some(),
        "shard_key (custom sharding)",
    )])?;
    let mut body = Map::new();
    insert_filter(&mut body, r.filter)?;
    Ok(body)
}

/// A query's body and, when the query is a dense `nearest`, its vector apart (the body then
/// has no `query`; `query_vector_body`).
pub fn query_parts(mut r: q::QueryPoints) -> Result<(Body, Option<Vec<f32>>)> {
    use q::query::Variant as V;
    use q::vector_input::Variant as I;
    let vector = match r.query.as_mut().and_then(|q| q.variant.as_mut()) {
        Some(V::Nearest(q::VectorInput {
            variant: Some(I::Dense(d)),
        })) => Some(std::mem::take(&mut d.data)),
        _ => None,
    };
    if vector.is_some() {
        r.query = None;
    }
    Ok((query_body(r)?, vector))
}

pub fn query_body(r: q::QueryPoints) -> Result<Map<String, Value>> {
    refuse(&[
        (
            r.shard_key_selector.is_some(),
            "shard_key (custom sharding)",
        ),
        (
            !r.prefetch.is_empty(),
            "prefetch (hybrid and multi-stage queries)",
        ),
        (
            r.lookup_from.is_some(),
            "lookup_from (vectors from another collection)",
        ),
    ])?;
    let mut body = Map::new();
    body.insert("query".into(), query_to_json(r.query)?);
    insert_opt(&mut body, "using", r.using);
    insert_filter(&mut body, r.filter)?;
    insert_params(&mut body, r.params);
    insert_opt(&mut body, "score_threshold", r.score_threshold);
    insert_opt(&mut body, "limit", r.limit);
    insert_opt(&mut body, "offset", r.offset);
    insert_with_payload(&mut body, r.with_payload);
    insert_with_vectors(&mut body, r.with_vectors);
    Ok(body)
}

pub fn query_batch_body(r: q::QueryBatchPoints) -> Result<Map<String, Value>> {
    batch_body(r.query_points, query_body, "query_points")
}

/// `CreateCollection` as the REST create body `check_create` reads.
pub fn create_collection_body(r: &q::CreateCollection) -> Value {
    use q::vectors_config::Config;
    let params = |p: &q::VectorParams| {
        let distance = match q::Distance::try_from(p.distance) {
            Ok(q::Distance::Cosine) => json!("Cosine"),
            Ok(q::Distance::Euclid) => json!("Euclid"),
            Ok(q::Distance::Dot) => json!("Dot"),
            Ok(q::Distance::Manhattan) => json!("Manhattan"),
            _ => Value::Null,
        };
        json!({"size": p.size, "distance": distance})
    };
    let vectors = match r.vectors_config.as_ref().and_then(|c| c.config.as_ref()) {
        Some(Config::Params(p)) => params(p),
        Some(Config::ParamsMap(m)) => Value::Object(
            m.map
                .iter()
                .map(|(name, p)| (name.clone(), params(p)))
                .collect(),
        ),
        None => Value::Null,
    };
    let sparse = r.sparse_vectors_config.as_ref().map(|_| json!({}));
    json!({"vectors": vectors, "sparse_vectors": sparse})
}

/// `CreateFieldIndex` as the REST body `check_payload_index` reads.
pub fn create_index_body(r: &q::CreateFieldIndexCollection) -> Value {
    let schema = r
        .field_type
        .and_then(|t| q::FieldType::try_from(t).ok())
        .map(|t| match t {
            q::FieldType::Keyword => "keyword",
            q::FieldType::Integer => "integer",
            q::FieldType::Float => "float",
            q::FieldType::Geo => "geo",
            q::FieldType::Text => "text",
            q::FieldType::Bool => "bool",
            q::FieldType::Datetime => "datetime",
            q::FieldType::Uuid => "uuid",
        });
    json!({"field_name": r.field_name, "field_schema": schema})
}

// ------------------------------------------------------------------------------ answers

fn vectors_output(v: Option<Value>) -> Option<q::VectorsOutput> {
    let data: Vec<f32> = match v? {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_f64)
            .map(|x| x as f32)
            .collect(),
        _ => return None,
    };
    Some(q::VectorsOutput {
        vectors_options: Some(q::vectors_output::VectorsOptions::Vector(q::VectorOutput {
            vector: Some(q::vector_output::Vector::Dense(q::DenseVector { data })),
        })),
    })
}

/// The parts of a REST point (`point_json`).
struct PointParts {
    id: q::PointId,
    payload: HashMap<String, q::Value>,
    vectors: Option<q::VectorsOutput>,
    score: f32,
    version: u64,
}

fn point_parts(v: Value) -> PointParts {
    let mut o = match v {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let payload = match o.remove("payload") {
        Some(Value::Object(p)) => payload_from_json(p),
        _ => HashMap::new(),
    };
    PointParts {
        id: id_from_json(o.get("id").unwrap_or(&Value::Null)),
        payload,
        vectors: vectors_output(o.remove("vector")),
        score: o.get("score").and_then(Value::as_f64).unwrap_or(0.0) as f32,
        version: o.get("version").and_then(Value::as_u64).unwrap_or(0),
    }
}

pub fn scored_point(v: Value) -> q::ScoredPoint {
    let p = point_parts(v);
    q::ScoredPoint {
        id: Some(p.id),
        payload: p.payload,
        score: p.score,
        version: p.version,
        vectors: p.vectors,
    }
}

pub fn retrieved_point(v: Value) -> q::RetrievedPoint {
    let p = point_parts(v);
    q::RetrievedPoint {
        id: Some(p.id),
        payload: p.payload,
        vectors: p.vectors,
    }
}

fn list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

pub fn scored_points(v: Value) -> Vec<q::ScoredPoint> {
    list(v).into_iter().map(scored_point).collect()
}

/// A query answer, `{"points": [..]}`.
pub fn query_points(mut v: Value) -> Vec<q::ScoredPoint> {
    scored_points(v.get_mut("points").map(Value::take).unwrap_or_default())
}

pub fn batch_results(v: Value, points_of: fn(Value) -> Vec<q::ScoredPoint>) -> Vec<q::BatchResult> {
    list(v)
        .into_iter()
        .map(|item| q::BatchResult {
            result: points_of(item),
        })
        .collect()
}

pub fn retrieved_points(v: Value) -> Vec<q::RetrievedPoint> {
    list(v).into_iter().map(retrieved_point).collect()
}

/// A scroll answer, `{"points": [..], "next_page_offset": id or null}`.
pub fn scroll_answer(mut v: Value, time: f64) -> q::ScrollResponse {
    let next = v
        .get("next_page_offset")
        .filter(|n| !n.is_null())
        .map(id_from_json);
    q::ScrollResponse {
        next_page_offset: next,
        result: retrieved_points(v.get_mut("points").map(Value::take).unwrap_or_default()),
        time,
    }
}

pub fn update_result(o: WriteOutcome, wait: bool) -> q::UpdateResult {
    let status = if wait {
        q::UpdateStatus::Completed
    } else {
        q::UpdateStatus::Acknowledged
    };
    q::UpdateResult {
        operation_id: Some(o.sequence),
        status: status as i32,
    }
}

/// Qdrant's `CollectionInfo` for what a shard or router reports (as `qdrant::collection_info`
/// does for REST).
pub fn collection_info(i: &pb::CollectionInfo, shards: usize) -> q::CollectionInfo {
    let status = match i.status.as_str() {
        "green" => q::CollectionStatus::Green,
        _ => q::CollectionStatus::Yellow,
    };
    let distance = match distance_name(&i.metric) {
        "Dot" => q::Distance::Dot,
        "Euclid" => q::Distance::Euclid,
        _ => q::Distance::Cosine,
    };
    let payload_schema = i
        .indexed_fields
        .iter()
        .map(|f| {
            let data_type = match f.kind.as_str() {
                "keyword" => q::PayloadSchemaType::Keyword,
                "integer" => q::PayloadSchemaType::Integer,
                "float" => q::PayloadSchemaType::Float,
                "bool" => q::PayloadSchemaType::Bool,
                _ => q::PayloadSchemaType::UnknownType,
            };
            let info = q::PayloadSchemaInfo {
                data_type: data_type as i32,
                points: Some(i.points),
            };
            (f.name.clone(), info)
        })
        .collect();
    q::CollectionInfo {
        status: status as i32,
        optimizer_status: Some(q::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: shards as u64,
        config: Some(q::CollectionConfig {
            params: Some(q::CollectionParams {
                shard_number: shards as u32,
                on_disk_payload: true,
                vectors_config: Some(q::VectorsConfig {
                    config: Some(q::vectors_config::Config::Params(q::VectorParams {
                        size: u64::from(i.dimension),
                        distance: distance as i32,
                        hnsw_config: None,
                    })),
                }),
                replication_factor: Some(1),
                write_consistency_factor: Some(1),
            }),
            hnsw_config: Some(q::HnswConfigDiff {
                m: Some(u64::from(i.hnsw_m)),
                ef_construct: Some(u64::from(i.hnsw_ef_construction)),
                full_scan_threshold: Some(10_000),
            }),
            // The values the REST answer reports (`qdrant::collection_info`): the clients
            // require them, vecshard has no such knobs.
            optimizer_config: Some(q::OptimizersConfigDiff {
                deleted_threshold: Some(0.2),
                vacuum_min_vector_number: Some(1000),
                default_segment_number: Some(0),
                flush_interval_sec: Some(5),
            }),
            wal_config: Some(q::WalConfigDiff {
                wal_capacity_mb: Some(32),
                wal_segments_ahead: Some(0),
            }),
        }),
        payload_schema,
        points_count: Some(i.points),
        indexed_vectors_count: Some(i.indexed_points),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use q::condition::ConditionOneOf as C;

    fn field(key: &str, m: q::r#match::MatchValue) -> q::Condition {
        q::Condition {
            condition_one_of: Some(C::Field(q::FieldCondition {
                key: key.into(),
                r#match: Some(q::Match {
                    match_value: Some(m),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn payload_values_round_trip_with_integers_kept() {
        let payload = json!({"n": 3, "big": u64::MAX, "f": 1.5, "s": "x", "b": true, "z": null,
                             "list": [1, "a"], "obj": {"inner": -2}});
        let pb = payload_from_json(payload.as_object().unwrap().clone());
        assert!(matches!(
            pb["n"].kind,
            Some(q::value::Kind::IntegerValue(3))
        ));
        let back = payload_to_json(pb);
        let mut expected = payload.as_object().unwrap().clone();
        // Beyond i64, a number travels as a double, as in Qdrant.
        expected.insert("big".into(), json!(u64::MAX as f64));
        assert_eq!(Value::Object(back), Value::Object(expected));
    }

    #[test]
    fn filters_become_the_rest_shape_and_lacking_features_are_named() {
        use q::r#match::MatchValue as M;
        let f = q::Filter {
            must: vec![
                field("color", M::Keyword("red".into())),
                field(
                    "tags",
                    M::Integers(q::RepeatedIntegers {
                        integers: vec![1, 2],
                    }),
                ),
            ],
            must_not: vec![q::Condition {
                condition_one_of: Some(C::Field(q::FieldCondition {
                    key: "year".into(),
                    range: Some(q::Range {
                        gte: Some(2000.0),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let json = filter_to_json(f).unwrap();
        assert_eq!(
            json,
            json!({"must": [{"key": "color", "match": {"value": "red"}},
                            {"key": "tags", "match": {"any": [1, 2]}}],
                   "must_not": [{"key": "year", "range": {"gte": 2000.0}}]})
        );
        assert!(vecshard_core::filter::Filter::parse(&json, "filter").is_ok());

        let geo = q::Filter {
            must: vec![q::Condition {
                condition_one_of: Some(C::Field(q::FieldCondition {
                    key: "at".into(),
                    geo_radius: Some(q::GeoRadius {}),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let err = filter_to_json(geo).unwrap_err().to_string();
        assert!(
            err.contains("geo_radius") && err.contains("not supported"),
            "{err}"
        );
        let empty = q::Filter {
            should: vec![q::Condition::default()],
            ..Default::default()
        };
        assert!(filter_to_json(empty).is_err());
    }

    #[test]
    fn vectors_are_dense_only_in_either_form() {
        let dense = |data: Vec<f32>| q::Vector {
            vector: Some(q::vector::Vector::Dense(q::DenseVector { data })),
            ..Default::default()
        };
        let plain = q::Vectors {
            vectors_options: Some(q::vectors::VectorsOptions::Vector(dense(vec![1.0, 2.0]))),
        };
        assert_eq!(vectors_of(Some(plain), "p").unwrap(), vec![1.0, 2.0]);
        let legacy = q::Vector {
            data: vec![3.0],
            ..Default::default()
        };
        assert_eq!(dense_of(legacy).unwrap(), vec![3.0]);
        let unnamed = q::Vectors {
            vectors_options: Some(q::vectors::VectorsOptions::Vectors(q::NamedVectors {
                vectors: [(String::new(), dense(vec![4.0]))].into(),
            })),
        };
        assert_eq!(vectors_of(Some(unnamed), "p").unwrap(), vec![4.0]);
        let named = q::Vectors {
            vectors_options: Some(q::vectors::VectorsOptions::Vectors(q::NamedVectors {
                vectors: [("text".to_string(), dense(vec![4.0]))].into(),
            })),
        };
        assert!(vectors_of(Some(named), "p")
            .unwrap_err()
            .to_string()
            .contains("named vectors"));
        let sparse = q::Vector {
            vector: Some(q::vector::Vector::Sparse(q::SparseVector {})),
            ..Default::default()
        };
        assert!(dense_of(sparse).unwrap_err().to_string().contains("sparse"));
        assert!(vectors_of(None, "points[0]")
            .unwrap_err()
            .to_string()
            .contains("points[0].vectors"));
    }

    #[test]
    fn queries_map_to_the_universal_query_and_others_are_named() {
        use q::query::Variant as V;
        let nearest = |data: Vec<f32>| q::VectorInput {
            variant: Some(q::vector_input::Variant::Dense(q::DenseVector { data })),
        };
        let query = |v| Some(q::Query { variant: Some(v) });
        assert_eq!(
            query_to_json(query(V::Nearest(nearest(vec![1.0])))).unwrap(),
            json!([1.0])
        );
        let mmr = V::NearestWithMmr(q::NearestInputWithMmr {
            nearest: Some(nearest(vec![1.0])),
            mmr: Some(q::Mmr {
                diversity: Some(0.5),
                candidates_limit: Some(20),
            }),
        });
        assert_eq!(
            query_to_json(query(mmr)).unwrap(),
            json!({"nearest": [1.0], "mmr": {"diversity": 0.5, "candidates_limit": 20}})
        );
        assert_eq!(query_to_json(None).unwrap(), Value::Null);
        let err = query_to_json(query(V::Recommend(q::RecommendInput {})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("recommend"), "{err}");
    }

    #[test]
    fn search_requests_become_search_bodies() {
        let r = q::SearchPoints {
            collection_name: "c".into(),
            vector: vec![0.5, 1.0],
            limit: 3,
            offset: Some(1),
            score_threshold: Some(0.25),
            params: Some(q::SearchParams {
                hnsw_ef: Some(64),
                exact: Some(true),
                ..Default::default()
            }),
            with_payload: Some(q::WithPayloadSelector {
                selector_options: Some(q::with_payload_selector::SelectorOptions::Include(
                    q::PayloadIncludeSelector {
                        fields: vec!["a".into()],
                    },
                )),
            }),
            ..Default::default()
        };
        assert_eq!(
            Value::Object(search_body(r).unwrap()),
            json!({"vector": [0.5, 1.0], "limit": 3, "offset": 1, "score_threshold": 0.25,
                   "params": {"hnsw_ef": 64, "exact": true}, "with_payload": {"include": ["a"]}})
        );
        let named = q::SearchPoints {
            vector_name: Some("text".into()),
            ..Default::default()
        };
        assert!(search_body(named).is_err());
    }

    #[test]
    fn answers_carry_ids_scores_payloads_and_vectors() {
        let p = scored_point(json!({"id": "a1b2", "version": 4, "score": 0.75,
                                     "payload": {"k": 1}, "vector": [1.0, 2.0]}));
        assert_eq!(p.score, 0.75);
        assert_eq!(p.version, 4);
        assert_eq!(
            p.id.unwrap().point_id_options,
            Some(q::point_id::PointIdOptions::Uuid("a1b2".into()))
        );
        assert!(p.payload.contains_key("k"));
        assert!(p.vectors.is_some());
        let page = scroll_answer(
            json!({"points": [{"id": 1}, {"id": 2}], "next_page_offset": 3}),
            0.0,
        );
        assert_eq!(page.result.len(), 2);
        assert_eq!(
            page.next_page_offset.unwrap().point_id_options,
            Some(q::point_id::PointIdOptions::Num(3))
        );
        let last = scroll_answer(json!({"points": [], "next_page_offset": null}), 0.0);
        assert!(last.next_page_offset.is_none());
    }
}
