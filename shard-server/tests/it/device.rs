//! `--device` on a machine without CUDA (CI's): `auto` serves from the CPU and says so in its
//! metrics and collection info; `gpu` refuses to start, naming what is missing. (On a GPU
//! machine the device itself is checked by `shard-server/bench/scripts/gpu-check.sh`.)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::crash::{free_port, ServerProcess};

fn no_cuda() -> bool {
    vecshard_gpu::cuda::libraries_present().is_err()
}

#[tokio::test]
async fn auto_without_a_gpu_serves_from_the_cpu_and_says_so() {
    if !no_cuda() {
        return; // a machine with CUDA: auto takes the GPU there.
    }
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let server = ServerProcess::spawn_with_peers(
        dir.path(),
        grpc,
        http,
        &[],
        &["--device".into(), "auto".into()],
    );
    server.client().await;
    let base = format!("http://127.0.0.1:{http}");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vecshard_gpu_available 0"), "{metrics}");
    let info: serde_json::Value = reqwest::get(format!("{base}/collections/docs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["result"]["device"], "cpu", "{info}");
}

#[test]
fn gpu_without_a_gpu_refuses_to_start_and_names_what_is_missing() {
    if !no_cuda() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_vecshard-server"))
        .args(["shard", "--dimension", "8", "--device", "gpu"])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--device gpu") && stderr.contains("libcuda"),
        "{stderr}"
    );
    // A wrong value names the choices.
    let out = Command::new(env!("CARGO_BIN_EXE_vecshard-server"))
        .args(["shard", "--dimension", "8", "--device", "tpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auto") && stderr.contains("gpu"),
        "{stderr}"
    );
}
