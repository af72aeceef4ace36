//! Payload filters in Qdrant's filter JSON: parsing with errors that name the offending path,
//! checking against the collection's indexed fields, and direct evaluation on a payload (the
//! reference semantics that the payload index must agree with). Pure: no I/O.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{CollectionConfig, FieldKind};

/// A boolean filter: every `must`, at least one `should` (when any), no `must_not`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Field { key: String, test: FieldTest },
    Nested(Box<Filter>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum FieldTest {
    /// `match.value`: equal to one keyword or integer.
    Equals(Scalar),
    /// `match.any`: equal to any of them.
    AnyOf(Vec<Scalar>),
    Range(Range),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Keyword(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

impl Filter {
    /// Parses filter JSON text; empty text means "no filter".
    pub fn parse_text(text: &str) -> Result<Option<Filter>> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        Self::parse(&value, "filter").map(Some)
    }

    pub fn parse(value: &Value, path: &str) -> Result<Filter> {
        let obj = value.as_object().ok_or_else(|| {
            Error::invalid(format!(
                "{path} must be an object with must/should/must_not"
            ))
        })?;
        let mut filter = Filter::default();
        for (key, val) in obj {
            let target = match key.as_str() {
                "must" => &mut filter.must,
                "should" => &mut filter.should,
                "must_not" => &mut filter.must_not,
                "min_should" => {
                    return Err(Error::invalid(format!(
                        "{path}.min_should is not supported by vecshard; use should (at least \
                         one) or must"
                    )))
                }
                other => {
                    return Err(Error::invalid(format!(
                        "{path}.{other} is not a filter clause; use must, should or must_not"
                    )))
                }
            };
            let items = match val {
                Value::Array(items) => items.iter().collect::<Vec<_>>(),
                Value::Object(_) => vec![val],
                _ => {
                    return Err(Error::invalid(format!(
                        "{path}.{key} must be a list of conditions"
                    )))
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                target.push(Condition::parse(item, &format!("{path}.{key}[{i}]"))?);
            }
        }
        Ok(filter)
    }

    /// The filter as Qdrant filter JSON; `Filter::parse` of the result gives the same filter.
    /// The router uses it to forward a parsed filter to shards.
    pub fn to_json(&self) -> Value {
        let list =
            |conds: &[Condition]| Value::Array(conds.iter().map(Condition::to_json).collect());
        let mut obj = Map::new();
        for (name, conds) in [
            ("must", &self.must),
            ("should", &self.should),
            ("must_not", &self.must_not),
        ] {
            if !conds.is_empty() {
                obj.insert(name.into(), list(conds));
            }
        }
        Value::Object(obj)
    }

    /// Rejects conditions on fields that are not indexed, or of the wrong type for the field.
    pub fn check(&self, config: &CollectionConfig) -> Result<()> {
        for c in self.must.iter().chain(&self.should).chain(&self.must_not) {
            match c {
                Condition::Nested(f) => f.check(config)?,
                Condition::Field { key, test } => check_field(config, key, test)?,
            }
        }
        Ok(())
    }

    /// Evaluates the filter on one payload: the reference semantics.
    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.must.iter().all(|c| c.matches(payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.matches(payload)))
            && !self.must_not.iter().any(|c| c.matches(payload))
    }
}

fn check_field(config: &CollectionConfig, key: &str, test: &FieldTest) -> Result<()> {
    let Some(field) = config.field(key) else {
        let known: Vec<String> = config
            .indexed_fields
            .iter()
            .map(|f| format!("{}:{}", f.name, f.kind.as_str()))
            .collect();
        return Err(Error::invalid(format!(
            "filter field {key:?} is not indexed in collection {:?}; indexed fields: [{}]",
            config.name,
            known.join(", ")
        )));
    };
    let scalars: &[Scalar] = match test {
        FieldTest::Equals(s) => std::slice::from_ref(s),
        FieldTest::AnyOf(v) => v,
        FieldTest::Range(_) => {
            if field.kind == FieldKind::Keyword {
                return Err(Error::invalid(format!(
                    "filter field {key:?} is a keyword field; range needs an integer or float field"
                )));
            }
            return Ok(());
        }
    };
    for s in scalars {
        let ok = matches!(
            (field.kind, s),
            (FieldKind::Keyword, Scalar::Keyword(_)) | (FieldKind::Integer, Scalar::Integer(_))
        );
        if !ok {
            return Err(Error::invalid(format!(
                "filter field {key:?} is a {} field; match value {s:?} does not fit (use range for floats)",
                field.kind.as_str()
            )));
        }
    }
    Ok(())
}

impl Condition {
    fn parse(value: &Value, path: &str) -> Result<Condition> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::invalid(format!("{path} must be an object")))?;
        if obj.contains_key("must") || obj.contains_key("should") || obj.contains_key("must_not") {
            return Ok(Condition::Nested(Box::new(Filter::parse(value, path)?)));
        }
        if let Some(kind) = obj
            .keys()
            .find(|k| UNSUPPORTED_CONDITIONS.contains(&k.as_str()))
        {
            return Err(Error::invalid(format!(
                "{path}: the {kind} condition is not supported by vecshard; {SUPPORTED}"
            )));
        }
        let key = obj
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{path}.key must be a string naming a payload field"
                ))
            })?
            .to_string();
        let test = match (obj.get("match"), obj.get("range")) {
            (Some(m), None) => parse_match(m, &format!("{path}.match"))?,
            (None, Some(r)) => FieldTest::Range(parse_range(r, &format!("{path}.range"))?),
            _ => {
                return Err(Error::invalid(format!(
                    "{path} needs exactly one of match or range"
                )))
            }
        };
        if let Some(other) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "key" | "match" | "range"))
        {
            return Err(Error::invalid(format!("{path}.{other} is not supported")));
        }
        Ok(Condition::Field { key, test })
    }

    fn to_json(&self) -> Value {
        match self {
            Condition::Nested(f) => f.to_json(),
            Condition::Field { key, test } => {
                let mut obj = Map::new();
                obj.insert("key".into(), Value::from(key.clone()));
                match test {
                    FieldTest::Equals(s) => {
                        obj.insert("match".into(), serde_json::json!({"value": s.to_json()}));
                    }
                    FieldTest::AnyOf(list) => {
                        let any: Vec<Value> = list.iter().map(Scalar::to_json).collect();
                        obj.insert("match".into(), serde_json::json!({"any": any}));
                    }
                    FieldTest::Range(r) => {
                        let mut range = Map::new();
                        for (name, bound) in
                            [("gt", r.gt), ("gte", r.gte), ("lt", r.lt), ("lte", r.lte)]
                        {
                            if let Some(b) = bound {
                                range.insert(name.into(), Value::from(b));
                            }
                        }
                        obj.insert("range".into(), Value::Object(range));
                    }
                }
                Value::Object(obj)
            }
        }
    }

    fn matches(&self, payload: &Map<String, Value>) -> bool {
        match self {
            Condition::Nested(f) => f.matches(payload),
            Condition::Field { key, test } => {
                payload_values(field_value(payload, key)).any(|v| test.accepts(v))
            }
        }
    }
}

/// The value a filter key names in a payload: the top-level key of that name when there is
/// one, else a path through nested objects, `metadata.source` as in Qdrant (how LangChain and
/// LlamaIndex store a document's metadata). Arrays are not walked into.
pub fn field_value<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = payload.get(key) {
        return Some(v);
    }
    let mut parts = key.split('.');
    let mut value = payload.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The scalar values of a payload field: the value itself, or each element of an array.
pub fn payload_values(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    let slice: &[Value] = match value {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(v) => std::slice::from_ref(v),
    };
    slice.iter()
}

impl FieldTest {
    fn accepts(&self, v: &Value) -> bool {
        match self {
            FieldTest::Equals(s) => s.equals(v),
            FieldTest::AnyOf(list) => list.iter().any(|s| s.equals(v)),
            FieldTest::Range(r) => v.as_f64().is_some_and(|x| r.contains(x)),
        }
    }
}

impl Scalar {
    fn to_json(&self) -> Value {
        match self {
            Scalar::Keyword(s) => Value::from(s.clone()),
            Scalar::Integer(i) => Value::from(*i),
            Scalar::Bool(b) => Value::from(*b),
        }
    }

    fn equals(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Keyword(a), Value::String(b)) => a == b,
            (Scalar::Integer(a), Value::Number(n)) => n.as_i64() == Some(*a),
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        }
    }

    fn parse(v: &Value, path: &str) -> Result<Scalar> {
        match v {
            Value::String(s) => Ok(Scalar::Keyword(s.clone())),
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => n.as_i64().map(Scalar::Integer).ok_or_else(|| {
                Error::invalid(format!(
                    "{path} must be a keyword or an integer; use range for {n}"
                ))
            }),
            _ => Err(Error::invalid(format!(
                "{path} must be a keyword or an integer"
            ))),
        }
    }
}

/// Qdrant's conditions that vecshard's filters lack, refused by name.
const UNSUPPORTED_CONDITIONS: &[&str] = &[
    "has_id",
    "is_empty",
    "is_null",
    "nested",
    "has_vector",
    "values_count",
    "geo_bounding_box",
    "geo_radius",
    "geo_polygon",
    "datetime_range",
    "min_should",
];

/// What a filter condition can be, for the refusals.
const SUPPORTED: &str = "a condition is {key, match: {value | any}}, {key, range: {gt, gte, lt, \
                         lte}} or a nested {must, should, must_not}";

/// Qdrant's match kinds that vecshard lacks (full-text and exclusion).
const UNSUPPORTED_MATCHES: &[&str] = &[
    "except",
    "text",
    "text_any",
    "phrase",
    "prefix",
    "substring",
];

fn parse_match(m: &Value, path: &str) -> Result<FieldTest> {
    let obj = m
        .as_object()
        .ok_or_else(|| Error::invalid(format!("{path} must be an object")))?;
    if let Some(kind) = obj
        .keys()
        .find(|k| UNSUPPORTED_MATCHES.contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "{path}.{kind} is not supported by vecshard; {SUPPORTED}"
        )));
    }
    match (obj.get("value"), obj.get("any")) {
        (Some(v), None) => Ok(FieldTest::Equals(Scalar::parse(
            v,
            &format!("{path}.value"),
        )?)),
        (None, Some(Value::Array(items))) => {
            let list = items
                .iter()
                .enumerate()
                .map(|(i, v)| Scalar::parse(v, &format!("{path}.any[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            Ok(FieldTest::AnyOf(list))
        }
        (None, Some(_)) => Err(Error::invalid(format!("{path}.any must be a list"))),
        _ => Err(Error::invalid(format!(
            "{path} needs exactly one of value or any"
        ))),
    }
}

fn parse_range(r: &Value, path: &str) -> Result<Range> {
    let obj = r
        .as_object()
        .ok_or_else(|| Error::invalid(format!("{path} must be an object")))?;
    let mut range = Range::default();
    for (k, v) in obj {
        let bound = v
            .as_f64()
            .ok_or_else(|| Error::invalid(format!("{path}.{k} must be a number")))?;
        match k.as_str() {
            "gt" => range.gt = Some(bound),
            "gte" => range.gte = Some(bound),
            "lt" => range.lt = Some(bound),
            "lte" => range.lte = Some(bound),
            other => {
                return Err(Error::invalid(format!(
                    "{path}.{other} is not one of gt, gte, lt, lte"
                )))
            }
        }
    }
    if range == Range::default() {
        return Err(Error::invalid(format!(
            "{path} needs at least one of gt, gte, lt, lte"
        )));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HnswParams, IndexedField, Metric, Quantization};
    use serde_json::json;

    #[test]
    fn dotted_keys_reach_into_nested_objects_and_exact_keys_win() {
        let payload = json!({"metadata": {"source": "wiki", "page": 3}, "a.b": 1, "a": {"b": 2}});
        let payload = payload.as_object().unwrap();
        assert_eq!(
            field_value(payload, "metadata.source"),
            Some(&json!("wiki"))
        );
        assert_eq!(field_value(payload, "metadata.page"), Some(&json!(3)));
        assert_eq!(
            field_value(payload, "a.b"),
            Some(&json!(1)),
            "the exact key first"
        );
        assert_eq!(field_value(payload, "metadata.missing"), None);
        assert_eq!(field_value(payload, "metadata.source.deeper"), None);
        let f = Filter::parse(
            &json!({"must": [{"key": "metadata.source", "match": {"value": "wiki"}}]}),
            "filter",
        )
        .unwrap();
        assert!(f.matches(payload));
    }

    fn config() -> CollectionConfig {
        CollectionConfig {
            name: "docs".into(),
            dimension: 2,
            metric: Metric::Cosine,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 64,
                ef_search: 32,
            },
            quantization: Quantization::F32,
            indexed_fields: vec![
                IndexedField {
                    name: "pos".into(),
                    kind: FieldKind::Keyword,
                },
                IndexedField {
                    name: "year".into(),
                    kind: FieldKind::Integer,
                },
            ],
        }
    }

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn qdrant_filter_json_parses_and_matches() {
        let f = Filter::parse(
            &json!({"must":[{"key":"pos","match":{"value":"noun"}}],
                    "must_not":[{"key":"year","range":{"lt":2000}}]}),
            "filter",
        )
        .unwrap();
        f.check(&config()).unwrap();
        assert!(f.matches(&payload(json!({"pos":"noun","year":2001}))));
        assert!(!f.matches(&payload(json!({"pos":"noun","year":1999}))));
        assert!(!f.matches(&payload(json!({"pos":"verb","year":2001}))));
    }

    #[test]
    fn should_needs_one_match_and_arrays_match_any_element() {
        let f = Filter::parse(
            &json!({"should":[{"key":"pos","match":{"any":["verb","adj"]}}]}),
            "filter",
        )
        .unwrap();
        assert!(f.matches(&payload(json!({"pos":["noun","adj"]}))));
        assert!(!f.matches(&payload(json!({"pos":"noun"}))));
        assert!(!f.matches(&payload(json!({}))));
    }

    #[test]
    fn unknown_field_error_lists_the_indexed_fields() {
        let f = Filter::parse(
            &json!({"must":[{"key":"color","match":{"value":"red"}}]}),
            "filter",
        )
        .unwrap();
        let err = f.check(&config()).unwrap_err().to_string();
        assert!(err.contains("\"color\" is not indexed"), "{err}");
        assert!(err.contains("pos:keyword, year:integer"), "{err}");
    }

    #[test]
    fn malformed_filters_name_the_path() {
        for (filter, named) in [
            (json!({"must": [{"has_id": [1, 2]}]}), "has_id"),
            (json!({"must": [{"is_empty": {"key": "a"}}]}), "is_empty"),
            (
                json!({"must": [{"key": "t", "match": {"text": "x"}}]}),
                "match.text",
            ),
            (
                json!({"must": [{"key": "t", "match": {"except": [1]}}]}),
                "match.except",
            ),
            (
                json!({"min_should": {"conditions": [], "min_count": 1}}),
                "min_should",
            ),
        ] {
            let err = Filter::parse(&filter, "filter").unwrap_err().to_string();
            assert!(
                err.contains(named) && err.contains("not supported"),
                "{filter}: {err}"
            );
        }
        let err = Filter::parse(&json!({"must":[{"key":"pos","match":{}}]}), "filter").unwrap_err();
        assert!(err.to_string().contains("filter.must[0].match"), "{err}");
        let err = Filter::parse(&json!({"maybe":[]}), "filter").unwrap_err();
        assert!(err.to_string().contains("filter.maybe"), "{err}");
        let err = Filter::parse(
            &json!({"must":[{"key":"year","range":{"around":3}}]}),
            "filter",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("filter.must[0].range.around"),
            "{err}"
        );
    }

    #[test]
    fn filters_round_trip_through_json() {
        let text = json!({"must":[{"key":"pos","match":{"any":["noun","verb"]}},
                                  {"should":[{"key":"year","range":{"gte":1990,"lt":2000.5}}]}],
                          "must_not":[{"key":"year","match":{"value":1995}}]});
        let f = Filter::parse(&text, "filter").unwrap();
        assert_eq!(Filter::parse(&f.to_json(), "filter").unwrap(), f);
    }

    #[test]
    fn range_on_keyword_field_is_rejected() {
        let f = Filter::parse(&json!({"must":[{"key":"pos","range":{"gt":1}}]}), "filter").unwrap();
        assert!(f
            .check(&config())
            .unwrap_err()
            .to_string()
            .contains("keyword field"));
    }
}
