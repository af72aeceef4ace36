//! Calibration sweep for the filtered-search planner (no server): for every `lexname` and `pos`
//! value of the dataset, the cost per search (µs, one thread) and recall@10 of
//! - an exact scan of the matching points over f16 copies (the shard's exact plan),
//! - the full graph walked with the filter as a predicate (the shard's graph plan),
//! - a graph of the value's points only (the shard's value-graph plan, breadth 3 × ef),
//!
//! and the same for filters that match a random share of the points (independent of the
//! vectors, scattered through memory: `random N %`), at one ef, with the first N shared
//! queries. The planner's constants (`shard::planner::CostModel`) come from this table
//! (docs/benchmarks.md). The full graph's filtered walk is skipped below 1 % (it costs
//! 40–110 ms per search there, measured).
//!
//! cargo run --release -p vecshard-engine --example filter_sweep -- \
//!   ../shared/datasets/wordnet-minilm-384 64 200

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use half::f16;
use vecshard_core::model::{normalize, CollectionConfig, HnswParams, Metric, Quantization};
use vecshard_dataset as dataset;
use vecshard_engine::index::VectorIndex;
use vecshard_engine::shard::scoring;
use vecshard_engine::shard::vectors::{Precision, VectorArena};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .map_or("../shared/datasets/wordnet-minilm-384", |s| s),
    );
    let ef: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let nq: usize = args.get(3).map_or(Ok(200), |s| s.parse())?;

    let base = dataset::read_f32_matrix(&dir.join("base.f16.npy"))?;
    let queries = dataset::read_f32_matrix(&dir.join("queries.f32.npy"))?;
    let payloads = dataset::read_payloads(&dir.join("base_payloads.jsonl"), base.rows)?;
    let config = CollectionConfig {
        name: "sweep".into(),
        dimension: base.cols,
        metric: Metric::Cosine,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 128,
            ef_search: ef,
        },
        quantization: Quantization::I8,
        indexed_fields: vec![],
    };
    let rows: Vec<Vec<f32>> = (0..base.rows)
        .map(|r| {
            let mut v = base.row(r).to_vec();
            normalize(&mut v);
            v
        })
        .collect();
    let mut arena = VectorArena::new(base.cols, Precision::F16);
    rows.iter().for_each(|v| arena.push(v));
    let _ = f16::ZERO;
    let build = |keys: &[u32]| -> Result<VectorIndex> {
        let index = VectorIndex::new(&config, 2)?;
        for chunk in keys.chunks(1024) {
            let batch: Vec<(u64, Vec<f32>)> = chunk
                .iter()
                .map(|k| (*k as u64, rows[*k as usize].clone()))
                .collect();
            index.add_batch(&batch, 2)?;
        }
        Ok(index)
    };
    let all: Vec<u32> = (0..base.rows as u32).collect();
    let started = Instant::now();
    let main_index = build(&all)?;
    println!(
        "main graph built in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut values: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for (r, p) in payloads.iter().enumerate() {
        for field in ["pos", "lexname"] {
            if let Some(v) = p.get(field).and_then(|v| v.as_str()) {
                values
                    .entry((field.into(), v.into()))
                    .or_default()
                    .push(r as u32);
            }
        }
        let h = xxhash_rust::xxh3::xxh3_64(&(r as u64).to_le_bytes()) % 1000;
        for share in [10u64, 50, 100, 200, 500] {
            if h < share {
                let name = format!("{:>4.1} %", share as f64 / 10.0);
                values
                    .entry(("random".into(), name))
                    .or_default()
                    .push(r as u32);
            }
        }
    }
    let q: Vec<&[f32]> = (0..nq).map(|i| queries.row(i)).collect();
    let rescore = |cands: Vec<(u64, f32)>, n: usize, query: &[f32]| -> Vec<u32> {
        let scored = cands
            .into_iter()
            .take(n)
            .map(|(k, _)| (k as u32, scoring::dot(query, &rows[k as usize])))
            .collect();
        scoring::top_k(Metric::Cosine, scored, 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    println!("| field | value | matching | share | scan µs | graph µs | graph recall | value graph µs | value graph recall | value graph build s |");
    for ((field, value), keys) in &values {
        let set: roaring::RoaringBitmap = keys.iter().copied().collect();
        let truth: Vec<Vec<u32>> = q
            .iter()
            .map(|query| {
                let scored = keys
                    .iter()
                    .map(|k| (*k, scoring::dot(query, &rows[*k as usize])))
                    .collect();
                scoring::top_k(Metric::Cosine, scored, 10)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            })
            .collect();
        let recall = |found: &[Vec<u32>]| -> f64 {
            found
                .iter()
                .zip(&truth)
                .map(|(f, t)| {
                    f.iter().filter(|k| t.contains(k)).count() as f64 / t.len().max(1) as f64
                })
                .sum::<f64>()
                / found.len() as f64
        };
        // Exact scan over f16 copies.
        let t = Instant::now();
        for query in &q {
            let scored = arena.score_all(Metric::Cosine, query, keys);
            std::hint::black_box(scoring::top_k(Metric::Cosine, scored, 10));
        }
        let scan_us = t.elapsed().as_secs_f64() * 1e6 / nq as f64;
        // Full graph with the predicate, budget as the shard widens it today.
        let share = keys.len() as f64 / base.rows as f64;
        let budget = scoring::graph_budget(10, ef, 2, share);
        let accept = |k: u64| set.contains(k as u32);
        let (graph_us, graph_recall) = if share >= 0.01 {
            let t = Instant::now();
            let found: Vec<Vec<u32>> = q
                .iter()
                .map(|query| {
                    let c = main_index
                        .search(query, budget.breadth, Some(&accept))
                        .unwrap();
                    rescore(c, budget.rescore, query)
                })
                .collect();
            (t.elapsed().as_secs_f64() * 1e6 / nq as f64, recall(&found))
        } else {
            (f64::NAN, f64::NAN)
        };
        // A graph of the value's points.
        let (vg_us, vg_recall, vg_build) = if keys.len() >= 1000 {
            let t = Instant::now();
            let sub = build(keys)?;
            let build_s = t.elapsed().as_secs_f64();
            let breadth = 3 * ef;
            let t = Instant::now();
            let found: Vec<Vec<u32>> = q
                .iter()
                .map(|query| rescore(sub.search(query, breadth, None).unwrap(), breadth, query))
                .collect();
            (
                t.elapsed().as_secs_f64() * 1e6 / nq as f64,
                recall(&found),
                build_s,
            )
        } else {
            (f64::NAN, f64::NAN, f64::NAN)
        };
        println!(
            "| {field} | {value} | {} | {:.2} % | {scan_us:.0} | {graph_us:.0} | {graph_recall:.3} | {vg_us:.0} | {vg_recall:.3} | {vg_build:.2} |",
            keys.len(),
            share * 100.0
        );
    }
    let b = scoring::graph_budget(10, ef, 2, 1.0);
    let t = Instant::now();
    for query in &q {
        std::hint::black_box(rescore(
            main_index.search(query, b.breadth, None).unwrap(),
            b.rescore,
            query,
        ));
    }
    println!(
        "unfiltered graph: {:.0} µs",
        t.elapsed().as_secs_f64() * 1e6 / nq as f64
    );
    Ok(())
}
