//! Rebalancing benchmark: how long moving partitions to new shards takes, and what searches
//! and writes see during the move compared with before it. Against a running
//! `vecshard-server dev --max-shards` cluster already loaded with the dataset's first POINTS
//! rows (ids = row numbers, e.g. by `vecshardctl load`):
//!
//!   cargo run --release -p vecshard-rebalance --example move_bench -- \
//!     ROUTER DEV_DATA_DIR DATASET_DIR POINTS TO_SHARDS BASELINE_SECS
//!
//! Two searchers (one search at a time each, the dataset's queries) and one writer (batches of
//! 50 overwrites of loaded ids with their own vectors, so recall's ground truth stays valid)
//! run before and during the move; the move runs in this process with the same steps as
//! `vecshardctl rebalance`. Prints recall@10 before and after, search QPS/p50/p99 and write
//! throughput per phase, the longest pause between two acknowledged writes, and the move time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vecshard_dataset::{read_f32_matrix, top_k_by_dot, Matrix, VectorFile};
use vecshard_proto::shard_map::ShardAssignment;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_rebalance::{FileMapStore, Shards};

type Client = PointsClient<tonic::transport::Channel>;

fn id(n: u64) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    })
}

async fn search(client: &Client, vector: Vec<f32>) -> Result<Vec<u64>, tonic::Status> {
    let hits = client
        .clone()
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector,
            limit: 10,
            ..Default::default()
        })
        .await?
        .into_inner()
        .result;
    Ok(hits
        .into_iter()
        .filter_map(|h| match h.id?.kind? {
            pb::point_id::Kind::Num(n) => Some(n),
            pb::point_id::Kind::Str(_) => None,
        })
        .collect())
}

fn recall(found: &[Vec<u64>], truth: &[Vec<u32>]) -> f64 {
    let hit: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|i| t.contains(&(**i as u32))).count())
        .sum();
    hit as f64 / (10 * truth.len()) as f64
}

async fn measure_recall(client: &Client, queries: &Matrix<f32>, truth: &[Vec<u32>]) -> f64 {
    let mut found = Vec::new();
    for q in 0..truth.len() {
        found.push(
            search(client, queries.row(q).to_vec())
                .await
                .unwrap_or_default(),
        );
    }
    recall(&found, truth)
}

/// (when, latency, ok) of every search; (when, points) of every acknowledged write batch.
#[derive(Default)]
struct Log {
    searches: Vec<(Instant, Duration, bool)>,
    writes: Vec<(Instant, usize)>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn report(name: &str, log: &Log, from: Instant, to: Instant) {
    let secs = (to - from).as_secs_f64();
    let mut lat: Vec<Duration> = log
        .searches
        .iter()
        .filter(|(at, _, ok)| *at >= from && *at < to && *ok)
        .map(|(_, l, _)| *l)
        .collect();
    let failed = log
        .searches
        .iter()
        .filter(|(at, _, ok)| *at >= from && *at < to && !ok)
        .count();
    lat.sort();
    let writes: Vec<&(Instant, usize)> = log
        .writes
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .collect();
    let points: usize = writes.iter().map(|(_, n)| n).sum();
    let mut gap = Duration::ZERO;
    let mut last = from;
    for (at, _) in &writes {
        gap = gap.max(*at - last);
        last = *at;
    }
    gap = gap.max(to - last);
    println!(
        "| {name} | {secs:.1} | {} | {:.0} | {:.2} | {:.2} | {failed} | {:.0} | {:.0} |",
        lat.len(),
        lat.len() as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        points as f64 / secs,
        gap.as_secs_f64() * 1000.0
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: move_bench ROUTER DEV_DATA_DIR DATASET_DIR POINTS TO_SHARDS BASELINE_SECS"
    );
    let (router, data_dir, dataset) = (&args[0], PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let points: usize = args[3].parse()?;
    let to: usize = args[4].parse()?;
    let baseline = Duration::from_secs(args[5].parse()?);

    // Exact top-10 over the loaded rows for 200 queries.
    let queries = read_f32_matrix(&dataset.join("queries.f32.npy"))?;
    let mut file = VectorFile::open(&dataset.join("base.f16.npy"))?;
    let dim = queries.cols;
    let mut data = Vec::with_capacity(points * dim);
    let mut base_rows = Vec::with_capacity(points);
    for _ in 0..points {
        let row = file.next_row()?.expect("POINTS rows in the dataset");
        data.extend_from_slice(&row);
        base_rows.push(row);
    }
    let base = Matrix {
        rows: points,
        cols: dim,
        data,
    };
    let rows: Vec<usize> = (0..points).collect();
    let truth: Vec<Vec<u32>> = (0..200)
        .map(|q| top_k_by_dot(&base, queries.row(q), &rows, 10))
        .collect();

    let client = PointsClient::connect(router.clone())
        .await?
        .max_decoding_message_size(64 << 20);
    let before_recall = measure_recall(&client, &queries, &truth).await;

    let queries = Arc::new(queries);
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..2usize {
        let (client, log, stop, queries) =
            (client.clone(), log.clone(), stop.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = s;
            while !stop.load(Ordering::Relaxed) {
                let q = queries.row(n % queries.rows).to_vec();
                let started = Instant::now();
                let ok = search(&client, q).await.is_ok();
                log.lock()
                    .unwrap()
                    .searches
                    .push((started, started.elapsed(), ok));
                n += 2;
            }
        }));
    }
    {
        let (client, log, stop) = (client.clone(), log.clone(), stop.clone());
        let base_rows = Arc::new(base_rows);
        tasks.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let batch: Vec<pb::Point> = (0..50u64)
                    .map(|j| {
                        let row = ((k * 7919 + j * 104_729) % base_rows.len() as u64) as usize;
                        pb::Point {
                            id: id(row as u64),
                            vector: base_rows[row].clone(),
                            payload_json: format!("{{\"gen\":{k}}}"),
                        }
                    })
                    .collect();
                let request = pb::UpsertRequest {
                    collection: "docs".into(),
                    points: batch,
                    version: 0,
                };
                if client.clone().upsert(request).await.is_ok() {
                    log.lock().unwrap().writes.push((Instant::now(), 50));
                }
            }
        }));
    }

    let t0 = Instant::now();
    tokio::time::sleep(baseline).await;
    let t1 = Instant::now();
    // The move, as `vecshardctl rebalance` runs it.
    let layout: Vec<ShardAssignment> =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("shards.json"))?)?;
    let target = &layout[..to];
    let store = FileMapStore(data_dir.join("shard-map.json"));
    let runner = Shards::new("docs");
    let (mut progress, mut steps, mut copied) = (None, 0, 0u64);
    loop {
        let (next, report) = runner
            .step_toward(&store, progress.clone(), target, 16, 0)
            .await?;
        steps += 1;
        copied += report.points;
        if next.is_none() && progress.is_some() {
            progress = None;
            continue;
        }
        if next.is_none() {
            break;
        }
        progress = next;
    }
    let t2 = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t3 = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let after_recall = measure_recall(&client, &queries, &truth).await;
    let log = log.lock().unwrap();
    println!(
        "moved {points} points' partitions to {to} shards: {:.1} s, {steps} steps, {copied} points copied; recall@10 before {before_recall:.4}, after {after_recall:.4}",
        (t2 - t1).as_secs_f64()
    );
    println!("| phase | seconds | searches | QPS | p50 ms | p99 ms | failed | points written/s | longest write pause ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    report("before", &log, t0, t1);
    report("during the move", &log, t1, t2);
    report("after", &log, t2, t3);
    Ok(())
}
