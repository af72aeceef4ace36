//! The benchmark binary end to end on a slice of the real dataset: it must load, search and
//! report recall that agrees with exact ground truth.

use std::path::PathBuf;
use std::process::Command;

use vecshard_core::model::{FieldKind, IndexedField, Quantization};

// The shard server's test support (an in-process server on loopback), shared by path; each
// suite uses part of it.
#[path = "../../tests/it/support.rs"]
#[allow(dead_code)]
mod support;
use support::*;

fn dataset() -> Option<PathBuf> {
    let dir = std::env::var_os("VECSHARD_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/datasets/wordnet-minilm-384")
        });
    dir.join("base.f16.npy").exists().then_some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_a_dataset_slice_and_reports_high_recall() {
    let Some(dir) = dataset() else {
        eprintln!("wordnet-minilm-384 not found (set VECSHARD_DATASET); skipping the benchmark smoke test");
        return;
    };
    let mut collection = config();
    collection.dimension = 384;
    collection.quantization = Quantization::I8;
    collection.indexed_fields = vec![IndexedField {
        name: "lexname".into(),
        kind: FieldKind::Keyword,
    }];
    let server = TestServer::start_collection(collection, |_| {}).await;
    let grpc = server.grpc.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vecshard-bench"))
            .args([
                "--grpc",
                &grpc,
                "--points",
                "3000",
                "--ef",
                "64",
                "--concurrency",
                "4",
            ])
            .args(["--requests", "1000"])
            .arg("--dataset")
            .arg(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .expect("bench prints a JSON summary");
    let report: serde_json::Value = serde_json::from_str(json_line).unwrap();
    let recall = report["searches"][0]["recall"].as_f64().unwrap();
    assert!(
        recall >= 0.95,
        "recall@10 {recall} on 3,000 points at ef 64"
    );
    assert!(report["ingest_points_per_s"].as_f64().unwrap() > 0.0);
    server.stop().await;
}
