//! Points to load, read from a file: `.npy`/`.fvecs` vectors (ids from the row number or a
//! payload field, payloads from a JSONL file of the same order) or `.jsonl` points
//! (`{"id": …, "vector": […], "payload": {…}}` per line).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use vecshard_dataset::{count_lines, JsonLines, VectorFile};
use vecshard_proto::v1 as pb;

pub enum PointSource {
    Vectors {
        file: VectorFile,
        payloads: Option<JsonLines>,
        /// Payload field holding the id; `None`: the row number plus `id_offset`.
        id_field: Option<String>,
        id_offset: u64,
        row: u64,
    },
    Points {
        lines: JsonLines,
        row: u64,
    },
}

impl PointSource {
    /// Opens `input`; returns the source and its number of rows.
    pub fn open(
        input: &Path,
        payloads: Option<&Path>,
        id_field: Option<String>,
        id_offset: u64,
    ) -> Result<(PointSource, usize)> {
        if input.extension().and_then(|e| e.to_str()) == Some("jsonl") {
            if payloads.is_some() || id_field.is_some() || id_offset != 0 {
                bail!("--payloads, --id-field and --id-offset apply to .npy/.fvecs input; a .jsonl file carries ids and payloads itself");
            }
            let rows = count_lines(input)?;
            let lines = JsonLines::open(input)?;
            return Ok((PointSource::Points { lines, row: 0 }, rows));
        }
        let file = VectorFile::open(input)?;
        let rows = file.rows;
        if id_field.is_some() && payloads.is_none() {
            bail!("--id-field needs --payloads (the field is read from the payload file)");
        }
        let payloads = payloads.map(JsonLines::open).transpose()?;
        Ok((
            PointSource::Vectors {
                file,
                payloads,
                id_field,
                id_offset,
                row: 0,
            },
            rows,
        ))
    }

    /// Starts at row `n` (resume).
    pub fn skip(&mut self, n: usize) -> Result<()> {
        match self {
            PointSource::Vectors {
                file,
                payloads,
                row,
                ..
            } => {
                file.seek_row(n)?;
                if let Some(p) = payloads {
                    p.skip(n)?;
                }
                *row = n as u64;
            }
            PointSource::Points { lines, row } => {
                lines.skip(n)?;
                *row = n as u64;
            }
        }
        Ok(())
    }

    /// The next point, or `None` at the end.
    pub fn next_point(&mut self) -> Result<Option<pb::Point>> {
        match self {
            PointSource::Vectors {
                file,
                payloads,
                id_field,
                id_offset,
                row,
            } => {
                let Some(vector) = file.next_row()? else {
                    return Ok(None);
                };
                let payload = match payloads {
                    Some(p) => p.next_object()?.with_context(|| {
                        format!("the payload file has fewer lines than the vectors ({row} rows)")
                    })?,
                    None => Default::default(),
                };
                let id = match id_field {
                    Some(field) => id_from_json(
                        payload.get(field.as_str()),
                        &format!("payload field {field:?} of row {row}"),
                    )?,
                    None => pb::point_id::Kind::Num(*row + *id_offset),
                };
                *row += 1;
                Ok(Some(pb::Point {
                    id: Some(pb::PointId { kind: Some(id) }),
                    vector,
                    payload_json: Value::Object(payload).to_string(),
                }))
            }
            PointSource::Points { lines, row } => {
                let Some(mut object) = lines.next_object()? else {
                    return Ok(None);
                };
                let at = format!("line {}", *row + 1);
                *row += 1;
                let id = id_from_json(object.get("id"), &format!("\"id\" on {at}"))?;
                let vector: Vec<f32> = serde_json::from_value(
                    object
                        .remove("vector")
                        .with_context(|| format!("\"vector\" is missing on {at}"))?,
                )
                .with_context(|| format!("\"vector\" on {at} is not an array of numbers"))?;
                let payload = match object.remove("payload") {
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(p @ Value::Object(_)) => p,
                    Some(_) => bail!("\"payload\" on {at} is not a JSON object"),
                };
                Ok(Some(pb::Point {
                    id: Some(pb::PointId { kind: Some(id) }),
                    vector,
                    payload_json: payload.to_string(),
                }))
            }
        }
    }
}

/// A point id from JSON: an unsigned integer or a string.
pub fn id_from_json(value: Option<&Value>, what: &str) -> Result<pb::point_id::Kind> {
    match value {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            Ok(pb::point_id::Kind::Num(n.as_u64().expect("checked")))
        }
        Some(Value::String(s)) => Ok(pb::point_id::Kind::Str(s.clone())),
        Some(other) => bail!("{what} must be an unsigned integer or a string, got {other}"),
        None => bail!("{what} is missing"),
    }
}

/// A point id typed on the command line: digits are a numeric id, anything else a string.
pub fn id_from_arg(text: &str) -> pb::PointId {
    let kind = match text.parse::<u64>() {
        Ok(n) => pb::point_id::Kind::Num(n),
        Err(_) => pb::point_id::Kind::Str(text.to_string()),
    };
    pb::PointId { kind: Some(kind) }
}
