//! `vecshardctl load`: batches of points sent with bounded concurrency, a progress bar with
//! rate and ETA, retries with backoff when the server is busy or a shard is briefly away, and
//! a checkpoint so that an interrupted load resumes where it stopped.
//!
//! The checkpoint records how many rows from the start are acknowledged: batches finish out of
//! order, so it advances only over a contiguous prefix. Upserts are idempotent (last writer
//! wins), so the few batches past the checkpoint that were already written are simply written
//! again on resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;

use crate::source::PointSource;

pub struct LoadOptions {
    pub collection: String,
    pub batch: usize,
    pub concurrency: usize,
    pub limit: Option<usize>,
    pub resume: bool,
    pub checkpoint: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    input: PathBuf,
    input_bytes: u64,
    collection: String,
    rows_done: usize,
}

/// Acknowledged batches → the number of rows acknowledged from the start.
pub struct Watermark {
    batch: usize,
    /// Next batch index not yet acknowledged.
    next: usize,
    done: BTreeSet<usize>,
    /// Rows before batch 0 (a resumed load).
    base: usize,
    total: usize,
}

impl Watermark {
    pub fn new(base: usize, batch: usize, total: usize) -> Self {
        Watermark {
            batch,
            next: 0,
            done: BTreeSet::new(),
            base,
            total,
        }
    }

    /// Marks batch `index` acknowledged; returns the rows acknowledged from the start.
    pub fn ack(&mut self, index: usize) -> usize {
        self.done.insert(index);
        while self.done.remove(&self.next) {
            self.next += 1;
        }
        self.rows()
    }

    pub fn rows(&self) -> usize {
        (self.base + self.next * self.batch).min(self.total)
    }
}

pub async fn load(
    client: PointsClient<vecshard_security::SecureChannel>,
    input: &Path,
    mut source: PointSource,
    rows: usize,
    options: LoadOptions,
) -> Result<()> {
    let input = input
        .canonicalize()
        .with_context(|| format!("reading {}", input.display()))?;
    let input_bytes = std::fs::metadata(&input)?.len();
    let total = options.limit.map_or(rows, |l| l.min(rows));
    let start = starting_row(&options, &input, input_bytes)?;
    if start >= total {
        out!(
            "nothing to do: {start} of {total} rows were already loaded (checkpoint {})",
            options.checkpoint.display()
        );
        return Ok(());
    }
    source.skip(start)?;

    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} points  {per_sec}  elapsed {elapsed}  ETA {eta}",
        )
        .expect("valid template"),
    );
    bar.set_position(start as u64);
    let started = Instant::now();
    let mut watermark = Watermark::new(start, options.batch, total);
    let mut in_flight = FuturesUnordered::new();
    let mut next_batch = 0usize;
    let mut row = start;
    let mut last_saved = Instant::now();
    loop {
        while in_flight.len() < options.concurrency && row < total {
            let n = options.batch.min(total - row);
            let mut points = Vec::with_capacity(n);
            for _ in 0..n {
                match source.next_point()? {
                    Some(p) => points.push(p),
                    None => bail!("{} ended at row {row}, expected {total}", input.display()),
                }
            }
            let (index, first_row) = (next_batch, row);
            next_batch += 1;
            row += n;
            let request = pb::UpsertRequest {
                collection: options.collection.clone(),
                points,
                version: 0,
            };
            let client = client.clone();
            in_flight.push(async move {
                let result = upsert_with_retry(client, request).await;
                (index, first_row, n, result)
            });
        }
        let Some((index, first_row, n, result)) = in_flight.next().await else {
            break;
        };
        if let Err(status) = result {
            save(&options, &input, input_bytes, watermark.rows())?;
            bail!(
                "rows {first_row}..{} were refused: {} ({:?}); {} rows are loaded, rerun with --resume to continue",
                first_row + n,
                status.message(),
                status.code(),
                watermark.rows()
            );
        }
        bar.inc(n as u64);
        let done = watermark.ack(index);
        if last_saved.elapsed() > Duration::from_secs(1) {
            save(&options, &input, input_bytes, done)?;
            last_saved = Instant::now();
        }
    }
    save(&options, &input, input_bytes, watermark.rows())?;
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    let loaded = total - start;
    out!(
        "loaded {loaded} points in {secs:.1} s ({:.0} points/s, acknowledged durable)",
        loaded as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Where to start: after the checkpoint's rows with `--resume`, else at 0.
fn starting_row(options: &LoadOptions, input: &Path, input_bytes: u64) -> Result<usize> {
    let saved: Option<Checkpoint> = std::fs::read_to_string(&options.checkpoint)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(saved) = saved else {
        if options.resume {
            eprintln!(
                "no checkpoint at {}: starting from the first row",
                options.checkpoint.display()
            );
        }
        return Ok(0);
    };
    if !options.resume {
        if saved.rows_done > 0 {
            eprintln!(
                "note: a checkpoint says {} rows were loaded; pass --resume to continue from there",
                saved.rows_done
            );
        }
        return Ok(0);
    }
    if saved.input != input
        || saved.input_bytes != input_bytes
        || saved.collection != options.collection
    {
        bail!(
            "checkpoint {} is for {} ({} bytes) into {:?}, not this load; remove it or pass another --checkpoint",
            options.checkpoint.display(),
            saved.input.display(),
            saved.input_bytes,
            saved.collection
        );
    }
    eprintln!("resuming after row {}", saved.rows_done);
    Ok(saved.rows_done)
}

fn save(options: &LoadOptions, input: &Path, input_bytes: u64, rows_done: usize) -> Result<()> {
    let checkpoint = Checkpoint {
        input: input.to_path_buf(),
        input_bytes,
        collection: options.collection.clone(),
        rows_done,
    };
    if let Some(dir) = options.checkpoint.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so that a crash never leaves a half-written checkpoint.
    let tmp = options.checkpoint.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&checkpoint)?)?;
    std::fs::rename(&tmp, &options.checkpoint)
        .with_context(|| format!("writing checkpoint {}", options.checkpoint.display()))
}

/// Busy (RESOURCE_EXHAUSTED) and briefly unavailable servers are retried with exponential
/// backoff; a refused batch (INVALID_ARGUMENT) is not.
async fn upsert_with_retry(
    mut client: PointsClient<vecshard_security::SecureChannel>,
    request: pb::UpsertRequest,
) -> std::result::Result<pb::WriteResponse, tonic::Status> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match client.upsert(request.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if attempt < 8
                    && matches!(
                        s.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    ) =>
            {
                attempt += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(s) => return Err(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn the_watermark_advances_only_over_a_contiguous_prefix() {
        let mut w = Watermark::new(1000, 100, 1450);
        assert_eq!(w.ack(1), 1000, "batch 0 is still in flight");
        assert_eq!(w.ack(2), 1000);
        assert_eq!(w.ack(0), 1300);
        assert_eq!(w.ack(4), 1300);
        assert_eq!(w.ack(3), 1450, "the last, short batch ends at the total");
    }
}
