//! The shard's HNSW index and rescoring on a dataset in memory, without a server: what
//! `graph_sweep.rs` tunes, and the in-process baseline the server's numbers are compared with
//! (docs/benchmarks.md). Shared by the examples as a module (`#[path]`), not an example.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vecshard_core::error::Result;
use vecshard_core::model::{normalize, CollectionConfig, Metric, Quantization};
use vecshard_dataset::Matrix;
use vecshard_engine::index::VectorIndex;
use vecshard_engine::shard::scoring;

/// An index of `config` holding every row of `base` (normalised, keyed by row number), and
/// how long building it took.
pub fn build_index(
    config: &CollectionConfig,
    base: &Matrix<f32>,
) -> Result<(VectorIndex, Duration)> {
    let index = VectorIndex::new(config, 4)?;
    let started = Instant::now();
    for start in (0..base.rows).step_by(1024) {
        let batch: Vec<(u64, Vec<f32>)> = (start..(start + 1024).min(base.rows))
            .map(|r| {
                let mut v = base.row(r).to_vec();
                normalize(&mut v);
                (r as u64, v)
            })
            .collect();
        index.add_batch(&batch, 2)?;
    }
    Ok((index, started.elapsed()))
}

/// The shard's graph search for `requests` queries (cycling over `queries`) on `threads`
/// threads: `wanted` candidates, rescored exactly against `base`, top 10. Returns recall@10
/// over the first pass and QPS.
#[allow(clippy::too_many_arguments)]
pub fn search(
    index: &VectorIndex,
    base: &Matrix<f32>,
    queries: &Matrix<f32>,
    truth: &[Vec<u32>],
    ef: usize,
    quantization: Quantization,
    threads: usize,
    requests: usize,
) -> (f64, f64) {
    let total = requests.max(queries.rows);
    let next = AtomicUsize::new(0);
    let recall_sum = parking_lot::Mutex::new(0.0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let q = queries.row(i % queries.rows);
                let budget = scoring::graph_budget(10, ef, quantization.oversample(), 1.0);
                let cands = index
                    .search(q, budget.breadth, None)
                    .expect("in-process search");
                let keys = cands.into_iter().map(|(k, _)| k as u32);
                let top =
                    scoring::rescore(Metric::Cosine, keys, std::iter::empty(), budget, 10, |k| {
                        scoring::dot(q, base.row(k as usize))
                    });
                if i < queries.rows {
                    let t = &truth[i];
                    *recall_sum.lock() +=
                        top.iter().filter(|(k, _)| t.contains(k)).count() as f64 / 10.0;
                }
            });
        }
    });
    let qps = total as f64 / started.elapsed().as_secs_f64();
    let recall = *recall_sum.lock() / queries.rows as f64;
    (recall, qps)
}
