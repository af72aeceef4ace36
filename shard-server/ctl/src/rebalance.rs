//! `vecshardctl rebalance`: changes the shard count of a `vecshard-server dev` cluster, with
//! the same steps the operator runs in Kubernetes (`vecshard-rebalance`). The cluster's shard
//! map is the file the router watches; the shard processes available are those dev started
//! (`--max-shards`, listed in `shards.json`); progress is recorded in `rebalance.json` before
//! each step, so an interrupted run continues where it stopped when started again.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use vecshard_proto::shard_map::ShardAssignment;
use vecshard_rebalance::{FileMapStore, MapStore, Progress, Shards};

const LAYOUT_FILE: &str = "shards.json";
const PROGRESS_FILE: &str = "rebalance.json";

pub async fn run(data_dir: &Path, collection: &str, shards: usize, batch: usize) -> Result<()> {
    let layout_path = data_dir.join(LAYOUT_FILE);
    let layout: Vec<ShardAssignment> =
        serde_json::from_str(&std::fs::read_to_string(&layout_path).with_context(|| {
            format!(
                "reading {} (written by vecshard-server dev --data-dir {})",
                layout_path.display(),
                data_dir.display()
            )
        })?)
        .with_context(|| format!("{} is not a shard list", layout_path.display()))?;
    let store = FileMapStore(data_dir.join("shard-map.json"));
    let map = store.read().await?;
    if shards == 0 || shards > layout.len() {
        bail!(
            "--shards is {shards}; this dev cluster runs {} shard processes (start it with \
             vecshard-server dev --max-shards N for more)",
            layout.len()
        );
    }
    if shards as u32 > map.partitions {
        bail!(
            "--shards is {shards}, above the collection's {} partitions: every shard must own one",
            map.partitions
        );
    }
    if batch == 0 {
        bail!("--batch-partitions must be at least 1");
    }
    let target = &layout[..shards];
    let progress_path = data_dir.join(PROGRESS_FILE);
    let mut progress: Option<Progress> =
        match std::fs::read_to_string(&progress_path) {
            Ok(text) => Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a rebalance progress", progress_path.display())
            })?),
            Err(_) => None,
        };
    if let Some(p) = &progress {
        out!(
            "resuming: {} shards → {}, {}",
            p.from_shards,
            p.to_shards,
            p.describe()
        );
    }
    let runner = Shards::new(collection);
    let started = Instant::now();
    let mut failures = 0;
    loop {
        let now = vecshard_unix_ms();
        let step_started = Instant::now();
        let described = progress.as_ref().map(Progress::describe);
        match runner
            .step_toward(&store, progress.clone(), target, batch, now)
            .await
        {
            Ok((next, report)) => {
                failures = 0;
                if let Some(what) = described {
                    let mut line = format!(
                        "{what}: done in {:.2}s",
                        step_started.elapsed().as_secs_f64()
                    );
                    if report.points > 0 {
                        line +=
                            &format!(", {} points ({} bytes) copied", report.points, report.bytes);
                    }
                    if report.dropped > 0 {
                        line += &format!(", {} records dropped", report.dropped);
                    }
                    if let Some(v) = report.published {
                        line += &format!(", shard map version {v}");
                    }
                    out!("{line}");
                }
                match &next {
                    Some(p) => {
                        if progress.is_none() {
                            out!(
                                "plan: {} shards → {}, {} partitions in {} batches",
                                p.from_shards,
                                p.to_shards,
                                p.batches.iter().map(|b| b.partitions.len()).sum::<usize>(),
                                p.batches.len()
                            );
                        }
                        record(&progress_path, p)?;
                    }
                    None => {
                        let _ = std::fs::remove_file(&progress_path);
                        if progress.is_some() {
                            // A plan finished or was abandoned: plan again toward the target.
                            progress = None;
                            continue;
                        }
                        out!(
                            "balanced over {shards} shards (shard map version {}) in {:.1}s",
                            store.read().await?.version,
                            started.elapsed().as_secs_f64()
                        );
                        return Ok(());
                    }
                }
                progress = next;
            }
            Err(e) => {
                failures += 1;
                if failures >= 20 {
                    return Err(e.context("rebalancing stopped after 20 failed tries; run the command again to continue"));
                }
                eprintln!("step failed (try {failures} of 20, retrying in 1s): {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Durably, before the step runs.
fn record(path: &Path, progress: &Progress) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(progress)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn vecshard_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
