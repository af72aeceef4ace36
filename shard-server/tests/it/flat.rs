//! `--index flat` on the real binary: no graph, every search (approximate or not) returns the
//! exact answer, the collection info says `flat`, and a restart with `--index hnsw` on the
//! same data builds the graph. (The engine's own test covers compaction and value graphs.)

use serde_json::{json, Value};

use crate::crash::{free_port, ServerProcess};
use crate::support::*;

async fn post(http: u16, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn info(http: u16) -> Value {
    reqwest::get(format!("http://127.0.0.1:{http}/collections/docs"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

/// The answers of `exact: true` and of a plain search, for queries unlike the points.
async fn both_answers(http: u16, filter: &Value) -> Vec<(Vec<u64>, Vec<u64>)> {
    let mut out = Vec::new();
    for q in 0..12u64 {
        let mut body =
            json!({"vector": vector(90_000 + q), "limit": 10, "params": {"hnsw_ef": 10}});
        if !filter.is_null() {
            body["filter"] = filter.clone();
        }
        let plain = post(http, "/collections/docs/points/search", body.clone()).await;
        let mut exact_body = body;
        exact_body["params"]["exact"] = json!(true);
        let exact = post(http, "/collections/docs/points/search", exact_body).await;
        out.push((ids(&plain), ids(&exact)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_shard_answers_exactly_and_switches_to_hnsw_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let flat = ["--index".to_string(), "flat".to_string()];
    let server = ServerProcess::spawn_with_peers(dir.path(), grpc, http, &[], &flat);
    server.client().await;
    let points: Vec<Value> = (0..3000).map(json_point).collect();
    for chunk in points.chunks(1000) {
        let put = reqwest::Client::new()
            .put(format!("http://127.0.0.1:{http}/collections/docs/points"))
            .json(&json!({"points": chunk}))
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success());
    }
    let i = info(http).await;
    assert_eq!(i["result"]["index"]["type"], "flat", "{i}");
    assert_eq!(i["result"]["pending_points"], 0, "{i}");
    // A narrow `hnsw_ef` would cost a graph walk recall; a flat shard ignores it.
    for filter in [
        Value::Null,
        json!({"must": [{"key": "pos", "match": {"value": "verb"}}]}),
        json!({"must": [{"key": "year", "range": {"gte": 2003, "lt": 2005}}]}),
    ] {
        for (plain, exact) in both_answers(http, &filter).await {
            assert_eq!(plain, exact, "filter {filter}");
            assert_eq!(plain.len(), 10);
        }
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("vecshard_search_plans_total{plan=\"graph\"}") && !l.ends_with(" 0")
        ),
        "a flat shard walked a graph:\n{metrics}"
    );
    drop(server);

    // The same data as hnsw: the graph is built, and the info says so.
    let server = ServerProcess::spawn_with_peers(dir.path(), grpc, http, &[], &[]);
    server.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let i = info(http).await;
        if i["result"]["pending_points"] == 0 && i["result"]["points"] == 3000 {
            assert_eq!(i["result"]["index"]["type"], "hnsw", "{i}");
            assert!(
                i["result"]["index_memory_bytes"].as_u64().unwrap() > 0,
                "{i}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "graph never built: {i}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(server);

    // A wrong value names the choices.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vecshard-server"))
        .args(["shard", "--dimension", "8", "--index", "ivf"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--index") && stderr.contains("hnsw") && stderr.contains("flat"),
        "{stderr}"
    );
}
