//! Transport layers. Handlers are thin: validate → convert → call the shard → convert back.
//! Both transports share the conversions and the request accounting defined here.

pub mod grpc;
pub mod http;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::PointId;
use crate::shard::Shard;

/// Answers NOT_FOUND unless `name` is the collection this shard serves (empty means it).
pub fn check_collection(shard: &Shard, name: &str) -> Result<()> {
    let served = &shard.config().name;
    if name.is_empty() || name == served {
        Ok(())
    } else {
        Err(Error::not_found(format!(
            "collection {name:?} not found; this server serves {served:?}"
        )))
    }
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

/// Counts a finished request in `vecshard_requests_total{op,code}`.
pub fn observe<T>(metrics: &Metrics, op: &'static str, result: &Result<T>) {
    let code = match result {
        Ok(_) => "OK",
        Err(e) => e.code(),
    };
    metrics.count(op, code);
}
