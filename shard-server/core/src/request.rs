//! The requests and answers that pass between the layers (transport → router or shard →
//! engine), independent of any wire format: `convert` maps them to and from the protobuf
//! messages, the HTTP handlers to and from JSON.

use serde_json::{Map, Value};

use crate::filter::Filter;
use crate::model::PointId;

/// One top-k search, as validated by the shard (`Shard::validate_search`).
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub ef: Option<usize>,
    pub exact: bool,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// A hit of a search, or a point read by id (`score` 0).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    pub version: u64,
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
}

/// What an acknowledged write did: its log sequence, how many points it changed, its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub sequence: u64,
    pub affected: u64,
    pub version: u64,
}

/// What a delete removes: points by id, or every point a filter matches.
#[derive(Clone, Debug)]
pub enum DeleteTarget {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// How a read may be answered: partially (some shards missing) or not, and by when.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// With every replica of a shard down, answer from the others instead of failing.
    pub allow_partial: bool,
    /// The caller's deadline (gRPC `grpc-timeout`, HTTP `?timeout=`); calls to shards get the
    /// time that remains.
    pub timeout: Option<std::time::Duration>,
}

/// Results of a batch of searches, one list per query, and the shards missing from them.
#[derive(Debug, Default)]
pub struct SearchResults {
    pub results: Vec<Vec<ScoredPoint>>,
    /// Shards that could not answer (only with `allow_partial`).
    pub unavailable_shards: Vec<String>,
}
