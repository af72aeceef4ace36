//! `vecshardctl` against a real server: loads JSONL and .fvecs files (with a limit and a
//! resume), searches with a filter, gets, deletes and counts, and refuses bad input with a
//! message that names the rows and the limit.

use std::process::{Command, Output};

use serde_json::Value;

// The shard server's test support (an in-process server on loopback), shared by path; each
// suite uses part of it.
#[path = "../../tests/it/support.rs"]
#[allow(dead_code)]
mod support;
use support::*;

async fn ctl(server: &TestServer, args: &[&str], cwd: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vecshardctl"));
    cmd.args(["--addr", &server.grpc])
        .args(args)
        .current_dir(cwd);
    tokio::task::spawn_blocking(move || cmd.output().expect("run vecshardctl"))
        .await
        .unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "vecshardctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn fvecs(rows: impl Iterator<Item = Vec<f32>>) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(&(row.len() as i32).to_le_bytes());
        for v in row {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vecshardctl_loads_resumes_searches_and_refuses_bad_rows() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jsonl: String = (0..300).map(|i| format!("{}\n", json_point(i))).collect();
    std::fs::write(d.join("points.jsonl"), jsonl).unwrap();
    let out = ctl(&server, &["load", "points.jsonl", "--batch", "64"], d).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 300 points"));

    // .fvecs with ids from the row number + offset: a first part, then the rest by resume.
    std::fs::write(d.join("more.fvecs"), fvecs((1000..1100).map(vector))).unwrap();
    let load = ["load", "more.fvecs", "--id-offset", "1000", "--batch", "16"];
    let out = ctl(&server, &[&load[..], &["--limit", "60"]].concat(), d).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&server, &[&load[..], &["--resume"]].concat(), d).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming after row 60"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("loaded 40 points"));
    let count = json_out(&ctl(&server, &["count"], d).await);
    assert_eq!(count["result"]["count"], 400);

    let hits = json_out(
        &ctl(
            &server,
            &[
                "search",
                "--vector-file",
                "more.fvecs",
                "--row",
                "5",
                "--limit",
                "3",
            ],
            d,
        )
        .await,
    );
    assert_eq!(hits["result"][0]["id"], 1005);
    let filter = r#"{"must":[{"key":"pos","match":{"value":"verb"}}]}"#;
    let vector = serde_json::to_string(&vector(7)).unwrap();
    let hits = json_out(
        &ctl(
            &server,
            &["search", "--vector", &vector, "--filter", filter],
            d,
        )
        .await,
    );
    assert_eq!(hits["result"][0]["id"], 7);
    assert!(hits["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["payload"]["pos"] == "verb"));

    let got = json_out(&ctl(&server, &["get", "7", "1042"], d).await);
    assert_eq!(got["result"].as_array().unwrap().len(), 2);
    json_out(&ctl(&server, &["delete", "7"], d).await);
    let count = json_out(&ctl(&server, &["count"], d).await);
    assert_eq!(count["result"]["count"], 399);

    // A row of the wrong dimension: refused with the rows and the limit named, nothing lost.
    let bad = format!(
        "{}\n{}\n",
        json_point(5000),
        r#"{"id": 5001, "vector": [1.0, 2.0]}"#
    );
    std::fs::write(d.join("bad.jsonl"), bad).unwrap();
    let out = ctl(&server, &["load", "bad.jsonl"], d).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rows 0..2 were refused"), "{err}");
    assert!(err.contains("dimension") && err.contains('8'), "{err}");
    let count = json_out(&ctl(&server, &["count"], d).await);
    assert_eq!(count["result"]["count"], 399);
    server.stop().await;
}

/// Runs vecshardctl with `args` (no default `--addr`).
async fn ctl_raw(args: Vec<String>, cwd: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vecshardctl"));
    cmd.args(args).current_dir(cwd);
    tokio::task::spawn_blocking(move || cmd.output().expect("run vecshardctl"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vecshardctl_speaks_tls_and_sends_its_api_key() {
    use std::sync::Arc;
    use vecshard_core::metrics::Metrics;
    use vecshard_engine::shard::{Shard, ShardOptions};
    use vecshard_server::security::SecurityArgs;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = vecshard_security::pki::write_dev_pki(&d.join("tls")).unwrap();
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::write(d.join("keys/read-write"), "rw-k\n").unwrap();
    std::fs::write(d.join("keys/read-only"), "ro-k\n").unwrap();
    let security = SecurityArgs {
        tls_cert: Some(pki.cert.clone()),
        tls_key: Some(pki.key.clone()),
        api_keys_dir: Some(d.join("keys")),
        ..SecurityArgs::default()
    }
    .server()
    .unwrap();
    let shard = Shard::open(
        config(),
        ShardOptions::new(d.join("data")),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let running = vecshard_server::server::start_secure(Arc::new(shard), any, any, security)
        .await
        .unwrap();
    let addr = format!("https://127.0.0.1:{}", running.grpc_addr.port());
    let jsonl: String = (0..50).map(|i| format!("{}\n", json_point(i))).collect();
    std::fs::write(d.join("points.jsonl"), jsonl).unwrap();
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["--addr".into(), addr.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        ctl_raw(args, d)
    };
    let ca = pki.ca.to_str().unwrap();

    let out = run(&["--tls-ca", ca, "--api-key", "rw-k", "load", "points.jsonl"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = json_out(&run(&["--tls-ca", ca, "--api-key", "ro-k", "count"]).await);
    assert_eq!(count["result"]["count"], 50);
    // Refusals, each named.
    let stderr = |out: Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let out = run(&["--tls-ca", ca, "--api-key", "ro-k", "load", "points.jsonl"]).await;
    assert!(!out.status.success());
    assert!(stderr(out).contains("read-only"));
    let out = run(&["--tls-ca", ca, "count"]).await;
    assert!(!out.status.success());
    assert!(stderr(out).contains("API key is required"));
    let out = run(&["--api-key", "rw-k", "count"]).await;
    assert!(!out.status.success());
    assert!(stderr(out).contains("--tls-ca"));
    running.shutdown().await;
}
