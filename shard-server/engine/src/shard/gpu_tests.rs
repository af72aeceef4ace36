//! The GPU path over the CPU stand-in of the device (or, with `VECSHARD_TEST_DEVICE=gpu` on a
//! GPU machine, over the GPU itself): answers equal the CPU exact plan's, id for id and score
//! for score, through updates, deletes, filters, batches and compaction; and the device
//! choice without a GPU.

use super::tests::{vector, wait_compacted};
use super::*;
use serde_json::json;
use vecshard_core::model::Quantization;
use vecshard_gpu::DeviceChoice;

/// The shard tests' collection (two indexed fields, 8 dimensions) under another metric.
fn config(metric: Metric, quantization: Quantization) -> CollectionConfig {
    CollectionConfig {
        metric,
        ..super::tests::config(quantization)
    }
}

fn point(i: u64, salt: u64) -> Point {
    let payload = json!({"group": format!("g{}", i % 10), "n": i});
    Point {
        id: PointId::Num(i),
        vector: vector(i + salt),
        payload: payload.as_object().unwrap().clone(),
    }
}

fn options(dir: &std::path::Path, on_device: bool) -> ShardOptions {
    let mut o = ShardOptions::new(dir);
    o.compact_min_dead_slots = 100;
    if on_device {
        if std::env::var("VECSHARD_TEST_DEVICE").as_deref() == Ok("gpu") {
            // On a GPU machine (bench/scripts/gpu-check.sh): the same tests on the device.
            o.device = DeviceChoice::Gpu;
        } else {
            // Segments of 64 slots: many segments per query, and truncated ones.
            o.device_stand_in = Some(64);
        }
        o.gpu_min_points = 0;
        o.gpu_min_batch = 4;
    }
    o
}

fn filters() -> Vec<Option<Filter>> {
    let parse = |v: serde_json::Value| Filter::parse(&v, "filter").unwrap();
    let group = |g: &str| parse(json!({"must": [{"key": "group", "match": {"value": g}}]}));
    let rare = parse(json!({"must": [{"key": "n", "range": {"lt": 40}}]}));
    vec![None, Some(group("g3")), Some(rare), Some(group("nope"))]
}

fn request(i: u64, limit: usize, filter: Option<Filter>) -> SearchRequest {
    SearchRequest {
        vector: vector(90_000 + i),
        limit,
        filter,
        ef: Some(64),
        exact: true,
        with_payload: i.is_multiple_of(2),
        with_vector: false,
    }
}

/// Hits without their versions (each shard assigns its own).
fn unversioned(hits: Vec<ScoredPoint>) -> Vec<ScoredPoint> {
    hits.into_iter()
        .map(|h| ScoredPoint { version: 0, ..h })
        .collect()
}

async fn assert_same_answers(cpu: &Arc<Shard>, gpu: &Arc<Shard>, what: &str) {
    let mut batch = Vec::new();
    for (i, filter) in filters().into_iter().cycle().take(24).enumerate() {
        let req = request(i as u64, [1, 10, 25][i % 3], filter);
        let expected = unversioned(cpu.search(req.clone()).await.unwrap());
        let got = unversioned(gpu.search(req.clone()).await.unwrap());
        assert_eq!(got, expected, "{what}: search {i}");
        batch.push((req, expected));
    }
    let (reqs, expected): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let got: Vec<_> = gpu
        .search_batch(reqs)
        .await
        .unwrap()
        .into_iter()
        .map(unversioned)
        .collect();
    assert_eq!(got, expected, "{what}: batch");
}

#[tokio::test]
async fn the_device_path_answers_exactly_as_the_cpu_exact_plan() {
    for (metric, quantization) in [
        (Metric::Cosine, Quantization::I8),
        (Metric::L2, Quantization::F32),
        (Metric::Dot, Quantization::F32),
    ] {
        let what = format!("{metric:?}/{quantization:?}");
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let metrics = Arc::new(Metrics::new());
        let cpu = Shard::open(
            config(metric, quantization),
            options(d1.path(), false),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let gpu = Shard::open(
            config(metric, quantization),
            options(d2.path(), true),
            metrics.clone(),
        )
        .unwrap();
        assert!(gpu.gpu_in_use() && !cpu.gpu_in_use(), "{what}");
        assert_eq!(metrics.gpu_available.get(), 1);
        for shard in [&cpu, &gpu] {
            shard
                .upsert((0..1500).map(|i| point(i, 0)).collect(), 0)
                .await
                .unwrap();
        }
        assert_same_answers(&cpu, &gpu, &format!("{what} fresh")).await;
        // Replaced and deleted points: masked on the device, then compacted away.
        for shard in [&cpu, &gpu] {
            shard
                .upsert((0..600).map(|i| point(i, 7_000)).collect(), 0)
                .await
                .unwrap();
            shard
                .delete(DeleteTarget::Ids((600..900).map(PointId::Num).collect()), 0)
                .await
                .unwrap();
        }
        assert_same_answers(&cpu, &gpu, &format!("{what} with dead slots")).await;
        wait_compacted(&gpu).await;
        assert_eq!(gpu.metrics.slot_compactions.get(), 1, "{what}");
        assert_same_answers(&cpu, &gpu, &format!("{what} compacted")).await;
        for shard in [&cpu, &gpu] {
            shard
                .upsert((2000..2300).map(|i| point(i, 0)).collect(), 0)
                .await
                .unwrap();
        }
        assert_same_answers(&cpu, &gpu, &format!("{what} written after compaction")).await;
        assert!(metrics.gpu_searches("gpu").get() >= 24 * 4 * 2, "{what}");
        assert_eq!(metrics.gpu_searches("cpu_fallback").get(), 0, "{what}");
        assert!(metrics.gpu_memory_bytes.get() > 0, "{what}");
        cpu.close();
        gpu.close();
    }
}

#[tokio::test]
async fn a_shard_reopened_loads_its_vectors_onto_the_device() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = config(Metric::Cosine, Quantization::I8);
    let cpu = Shard::open(
        cfg.clone(),
        options(d1.path(), false),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    {
        let gpu = Shard::open(
            cfg.clone(),
            options(d2.path(), true),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        for shard in [&cpu, &gpu] {
            shard
                .upsert((0..800).map(|i| point(i, 3)).collect(), 0)
                .await
                .unwrap();
        }
        gpu.close();
    }
    let gpu = Shard::open(cfg, options(d2.path(), true), Arc::new(Metrics::new())).unwrap();
    assert!(gpu.gpu_in_use());
    assert_same_answers(&cpu, &gpu, "reopened").await;
    cpu.close();
    gpu.close();
}

#[tokio::test]
async fn without_a_gpu_auto_searches_on_the_cpu_and_gpu_refuses_to_open() {
    if vecshard_gpu::cuda::libraries_present().is_ok() {
        // A machine with CUDA: bench/gpu-check.sh covers the device; nothing to refuse here.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Metric::Cosine, Quantization::I8);
    let mut o = ShardOptions::new(dir.path());
    o.device = DeviceChoice::Auto;
    let metrics = Arc::new(Metrics::new());
    let shard = Shard::open(cfg.clone(), o.clone(), metrics.clone()).unwrap();
    assert!(!shard.gpu_in_use());
    assert_eq!(metrics.gpu_available.get(), 0);
    shard
        .upsert((0..300).map(|i| point(i, 0)).collect(), 0)
        .await
        .unwrap();
    assert_eq!(shard.search(request(1, 5, None)).await.unwrap().len(), 5);
    shard.close();
    drop(shard);
    o.device = DeviceChoice::Gpu;
    let err = Shard::open(cfg, o, metrics)
        .err()
        .expect("refused without a GPU");
    let msg = err.to_string();
    assert!(
        msg.contains("--device gpu") && msg.contains("libcuda"),
        "{msg}"
    );
}
