//! Domain types of a collection: point ids, points, metric, quantization, indexed fields, and the
//! limits every write is validated against. Pure: no I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// Longest string id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Largest payload accepted, as serialized JSON bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Largest `limit` (top-k) of one search.
pub const MAX_LIMIT: usize = 10_000;

/// A point id: an unsigned integer or a string (UUIDs, document-chunk ids).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointId {
    Num(u64),
    Str(String),
}

impl PointId {
    /// Stable byte encoding: the storage key, and the input of the partition hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            PointId::Num(n) => {
                let mut b = Vec::with_capacity(9);
                b.push(0);
                b.extend_from_slice(&n.to_be_bytes());
                b
            }
            PointId::Str(s) => {
                let mut b = Vec::with_capacity(1 + s.len());
                b.push(1);
                b.extend_from_slice(s.as_bytes());
                b
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<PointId> {
        match bytes.split_first()? {
            (0, rest) => Some(PointId::Num(u64::from_be_bytes(rest.try_into().ok()?))),
            (1, rest) => Some(PointId::Str(String::from_utf8(rest.to_vec()).ok()?)),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let PointId::Str(s) = self {
            if s.is_empty() {
                return Err(Error::invalid("point id must not be an empty string"));
            }
            if s.len() > MAX_ID_BYTES {
                return Err(Error::invalid(format!(
                    "point id has {} bytes, the limit is {MAX_ID_BYTES}",
                    s.len()
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Similarity measure of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity; vectors are normalised on write, higher is better.
    Cosine,
    /// Inner product, higher is better.
    Dot,
    /// Euclidean distance, lower is better.
    L2,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// True when a larger score is a better match.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }
}

/// How the HNSW index stores vectors. Full-precision vectors are always kept for rescoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    F16,
    I8,
    B1,
}

impl Quantization {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
            Quantization::B1 => "b1",
        }
    }

    /// How many more candidates than asked for the index returns before exact rescoring:
    /// coarser codes mis-rank more, so they need a wider net to keep recall.
    pub fn oversample(self) -> usize {
        match self {
            Quantization::F32 | Quantization::F16 => 1,
            Quantization::I8 => 2,
            Quantization::B1 => 8,
        }
    }
}

/// How a shard finds the nearest points: an HNSW graph (approximate unless a search asks for
/// `exact`), or none at all (`flat`: every search is an exact scan, on the GPU where one
/// serves the shard; no graph memory and no indexing after writes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    #[default]
    Hnsw,
    Flat,
}

impl IndexKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Hnsw => "hnsw",
            IndexKind::Flat => "flat",
        }
    }
}

impl std::str::FromStr for IndexKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [IndexKind::Hnsw, IndexKind::Flat];
        parse_name("index", s, &all.map(|k| (k.as_str(), k)))
    }
}

/// Type of an indexed payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Keyword,
    Integer,
    Float,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Keyword => "keyword",
            FieldKind::Integer => "integer",
            FieldKind::Float => "float",
        }
    }
}

/// Parses one of `names`' spellings (as written by `as_str`) into its value; the error lists
/// every accepted spelling. The one parser of metric, quantization and field kind names: the
/// CLI, the router (reading a shard's info) and the tools all go through `FromStr`.
fn parse_name<T: Copy>(what: &str, text: &str, names: &[(&str, T)]) -> Result<T, String> {
    names
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let accepted: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            format!("{what} {text:?} is not one of {}", accepted.join(", "))
        })
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [Metric::Cosine, Metric::Dot, Metric::L2];
        parse_name("metric", s, &all.map(|m| (m.as_str(), m)))
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [
            Quantization::F32,
            Quantization::F16,
            Quantization::I8,
            Quantization::B1,
        ];
        parse_name("quantization", s, &all.map(|q| (q.as_str(), q)))
    }
}

impl std::str::FromStr for FieldKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let all = [FieldKind::Keyword, FieldKind::Integer, FieldKind::Float];
        parse_name("index field kind", s, &all.map(|k| (k.as_str(), k)))
    }
}

/// A payload field declared for filtering, written `name:kind` on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedField {
    pub name: String,
    pub kind: FieldKind,
}

impl std::str::FromStr for IndexedField {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, kind) = s.split_once(':').ok_or_else(|| {
            format!("index field {s:?} must be NAME:KIND (keyword, integer or float)")
        })?;
        let kind: FieldKind = kind.parse()?;
        if name.is_empty() {
            return Err("index field name must not be empty".into());
        }
        Ok(IndexedField {
            name: name.to_string(),
            kind,
        })
    }
}

/// HNSW build and search parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

/// Everything fixed about the collection a shard serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub name: String,
    pub dimension: usize,
    pub metric: Metric,
    pub hnsw: HnswParams,
    pub quantization: Quantization,
    pub indexed_fields: Vec<IndexedField>,
}

impl CollectionConfig {
    pub fn field(&self, name: &str) -> Option<&IndexedField> {
        self.indexed_fields.iter().find(|f| f.name == name)
    }

    /// Checks a query or point vector: right dimension, finite values.
    pub fn check_vector(&self, what: &str, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dimension {
            return Err(Error::invalid(format!(
                "{what} has {} dimensions, collection {:?} expects {}",
                vector.len(),
                self.name,
                self.dimension
            )));
        }
        if let Some(i) = vector.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{what} has a non-finite value ({}) at position {i}",
                vector[i]
            )));
        }
        if self.metric == Metric::Cosine && vector.iter().all(|v| *v == 0.0) {
            return Err(Error::invalid(format!(
                "{what} is all zeros, which has no direction under the cosine metric"
            )));
        }
        Ok(())
    }
}

/// One point's stored state at some version, as the log and replication carry it.
/// `vector: None` is a tombstone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub version: u64,
    pub vector: Option<Vec<f32>>,
    /// Payload as JSON object text (empty: no payload).
    pub payload: Vec<u8>,
}

/// A point as written by a client.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub id: PointId,
    pub vector: Vec<f32>,
    /// A JSON object.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// Checks the number of items in a write or get batch against the limit.
pub fn check_batch_len(n: usize, max: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("batch is empty; send at least one point"));
    }
    if n > max {
        return Err(Error::invalid(format!(
            "batch has {n} points, the limit is {max}"
        )));
    }
    Ok(())
}

/// Wall-clock Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Hybrid logical clock: wall-clock milliseconds in the high bits, a counter in the low 16, and
/// never below the last version seen, so versions only grow even if the clock steps back.
pub fn next_version(last: &mut u64) -> u64 {
    let now = unix_millis() << 16;
    *last = now.max(last.saturating_add(1));
    *last
}

/// Dot product with eight independent accumulators, which the compiler turns into SIMD.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales a vector to unit length, so that cosine similarity is an inner product.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_round_trip_through_bytes() {
        for id in [
            PointId::Num(0),
            PointId::Num(u64::MAX),
            PointId::Str("chunk-7".into()),
        ] {
            assert_eq!(PointId::from_bytes(&id.to_bytes()), Some(id));
        }
    }

    #[test]
    fn numeric_and_string_ids_never_share_bytes() {
        assert_ne!(
            PointId::Num(49).to_bytes(),
            PointId::Str("1".into()).to_bytes()
        );
    }

    #[test]
    fn overlong_string_id_is_rejected_with_the_limit() {
        let err = PointId::Str("x".repeat(257)).validate().unwrap_err();
        assert!(
            err.to_string().contains("257 bytes, the limit is 256"),
            "{err}"
        );
    }

    #[test]
    fn index_field_parses_name_and_kind() {
        let f: IndexedField = "year:integer".parse().unwrap();
        assert_eq!(
            f,
            IndexedField {
                name: "year".into(),
                kind: FieldKind::Integer
            }
        );
        assert!("year".parse::<IndexedField>().is_err());
        assert!("year:date".parse::<IndexedField>().is_err());
    }

    #[test]
    fn names_parse_back_to_what_as_str_writes_and_nothing_else() {
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
        }
        for q in [
            Quantization::F32,
            Quantization::F16,
            Quantization::I8,
            Quantization::B1,
        ] {
            assert_eq!(q.as_str().parse::<Quantization>(), Ok(q));
        }
        for k in [FieldKind::Keyword, FieldKind::Integer, FieldKind::Float] {
            assert_eq!(k.as_str().parse::<FieldKind>(), Ok(k));
        }
        // No silent fallback: an unknown name is an error that lists the accepted ones.
        assert_eq!(
            "int4".parse::<Quantization>(),
            Err("quantization \"int4\" is not one of f32, f16, i8, b1".to_string())
        );
        assert!("Cosine".parse::<Metric>().is_err());
    }

    #[test]
    fn wrong_dimension_names_collection_and_expected_size() {
        let cfg = CollectionConfig {
            name: "docs".into(),
            dimension: 384,
            metric: Metric::Cosine,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 128,
                ef_search: 64,
            },
            quantization: Quantization::F32,
            indexed_fields: vec![],
        };
        let err = cfg.check_vector("vector", &[0.5; 383]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vector has 383 dimensions, collection \"docs\" expects 384"
        );
        let mut nan = vec![0.5; 384];
        nan[3] = f32::NAN;
        assert!(cfg
            .check_vector("vector", &nan)
            .unwrap_err()
            .to_string()
            .contains("position 3"));
    }
}
