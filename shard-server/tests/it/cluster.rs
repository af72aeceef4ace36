//! Several real shard processes on loopback behind an in-process router: routing, replication,
//! merging, failures of whole shards and of single replicas, and the `dev` command's cleanup.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecshard_proto::shard_map::ShardMap;
use vecshard_router::{HedgePolicy, MapSource, Router, RouterOptions, WriteConsistency};
use vecshard_server::server::{self, RunningServer};

use crate::crash::{free_port, ServerProcess};
use crate::support::*;

pub(crate) struct Replica {
    /// gRPC addresses of the other replicas of the same shard, to catch up from.
    peers: Vec<String>,
    /// Further command-line flags.
    extra: Vec<String>,
    dir: PathBuf,
    pub(crate) grpc_port: u16,
    pub(crate) http_port: u16,
    process: Option<ServerProcess>,
}

impl Replica {
    pub(crate) fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
    pub(crate) fn start(&mut self) {
        self.process = Some(ServerProcess::spawn_with_peers(
            &self.dir,
            self.grpc_port,
            self.http_port,
            &self.peers,
            &self.extra,
        ));
    }
    pub(crate) fn kill(&mut self) {
        drop(self.process.take()); // SIGKILL + wait
    }
}

/// Hash partitions of the test clusters' shard map (and of their replicas).
pub(crate) const PARTITIONS: u32 = 64;

pub(crate) struct Cluster {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) map_path: PathBuf,
    pub(crate) replicas: Vec<Vec<Replica>>,
    router: Option<RunningServer>,
    pub(crate) http: String,
}

impl Cluster {
    pub(crate) async fn start(shards: usize, replicas: usize) -> Cluster {
        Self::start_with(shards, replicas, &[]).await
    }

    /// A cluster whose replicas get `extra` flags.
    pub(crate) async fn start_with(shards: usize, replicas: usize, extra: &[&str]) -> Cluster {
        Self::start_spare(shards, shards, replicas, extra).await
    }

    /// `shards` shard processes of which the map gives partitions to the first `mapped` (the
    /// others are spares for rebalancing).
    pub(crate) async fn start_spare(
        shards: usize,
        mapped: usize,
        replicas: usize,
        extra: &[&str],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<Vec<Replica>> = Vec::new();
        for s in 0..shards {
            let mut set: Vec<Replica> = (0..replicas)
                .map(|r| Replica {
                    peers: Vec::new(),
                    // Replicas compare partitions the way the shard map cuts them.
                    extra: [
                        "--partitions",
                        &PARTITIONS.to_string(),
                        "--shard-name",
                        &format!("docs-{s}"),
                    ]
                    .into_iter()
                    .chain(extra.iter().copied())
                    .map(str::to_string)
                    .collect(),
                    dir: dir.path().join(format!("shard-{s}-replica-{r}")),
                    grpc_port: free_port(),
                    http_port: free_port(),
                    process: None,
                })
                .collect();
            let addrs: Vec<String> = set
                .iter()
                .map(|r| format!("http://127.0.0.1:{}", r.grpc_port))
                .collect();
            for (i, replica) in set.iter_mut().enumerate() {
                replica.peers = addrs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, a)| a.clone())
                    .collect();
                replica.start();
            }
            all.push(set);
        }
        let layout = all
            .iter()
            .take(mapped)
            .map(|set| {
                set.iter()
                    .map(|r| format!("http://127.0.0.1:{}", r.grpc_port))
                    .collect()
            })
            .collect();
        let map_path = dir.path().join("shard-map.json");
        std::fs::write(
            &map_path,
            serde_json::to_string(&ShardMap::even("docs", PARTITIONS, layout)).unwrap(),
        )
        .unwrap();
        // Every replica answers before the test starts writing.
        for set in &all {
            futures::future::join_all(set.iter().map(replica_count)).await;
        }
        let mut cluster = Cluster {
            _dir: dir,
            map_path,
            replicas: all,
            router: None,
            http: String::new(),
        };
        cluster.start_router().await;
        cluster
    }

    /// Starts one more replica of `shard` with an empty data dir, its peers the shard's
    /// other replicas; returns its index in `replicas[shard]`.
    pub(crate) fn add_replica(&mut self, shard: usize) -> usize {
        let peers = self.replicas[shard].iter().map(Replica::addr).collect();
        self.add_replica_with(shard, peers)
    }

    /// `add_replica` with the given peers (none: it has nothing to copy from).
    pub(crate) fn add_replica_with(&mut self, shard: usize, peers: Vec<String>) -> usize {
        let set = &self.replicas[shard];
        let mut replica = Replica {
            peers,
            extra: set[0].extra.clone(),
            dir: self
                ._dir
                .path()
                .join(format!("shard-{shard}-replica-{}", set.len())),
            grpc_port: free_port(),
            http_port: free_port(),
            process: None,
        };
        replica.start();
        self.replicas[shard].push(replica);
        self.replicas[shard].len() - 1
    }

    pub(crate) async fn start_router(&mut self) {
        let options = RouterOptions {
            shard_map: MapSource::File(self.map_path.clone()),
            write_consistency: WriteConsistency::Quorum,
            request_timeout: Duration::from_secs(5),
            max_batch_points: 10_000,
            max_batch_bytes: 64 << 20,
            cache_entries: 1000,
            cache_ttl: Duration::from_secs(60),
            hedge: HedgePolicy::default(),
            client: Default::default(),
        };
        let router = Router::open(options, Duration::from_secs(30))
            .await
            .unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let running = server::start(router, any, any).await.unwrap();
        self.http = format!("http://{}", running.http_addr);
        self.router = Some(running);
    }

    async fn stop_router(&mut self) {
        self.router.take().unwrap().shutdown().await;
    }

    /// Upserts through the router; returns status and body.
    pub(crate) async fn upsert(&self, points: Vec<Value>) -> (u16, Value) {
        let url = format!("{}/collections/docs/points", self.http);
        post_json(&url, reqwest::Method::PUT, json!({ "points": points })).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        post_json(&format!("{}{path}", self.http), reqwest::Method::POST, body).await
    }

    /// The router's view of every replica (`GET /cluster`).
    pub(crate) async fn status(&self) -> Value {
        reqwest::get(format!("{}/cluster", self.http))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["result"]
            .clone()
    }

    /// Waits until every replica of every shard is reachable and holds the same data (equal
    /// counts and checksums, no diverged partition); returns the final status.
    pub(crate) async fn wait_until_replicas_agree(&self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status().await;
            let agree = status["shards"].as_array().unwrap().iter().all(|shard| {
                let replicas = shard["replicas"].as_array().unwrap();
                replicas.iter().all(|r| r["reachable"] == true)
                    && replicas.iter().all(|r| {
                        r["points"] == replicas[0]["points"]
                            && r["checksum"] == replicas[0]["checksum"]
                    })
                    && shard["diverged_partitions"].as_array().unwrap().is_empty()
            });
            if agree {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not converge: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The Prometheus text a server (router or replica) at `base` serves on `/metrics`.
async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples on the lines `line` accepts (0 when none does).
fn metric_total(metrics: &str, line: impl Fn(&str) -> bool) -> f64 {
    metrics
        .lines()
        .filter(|l| line(l))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

/// Status and JSON body; status 0 when the server could not be reached.
pub(crate) async fn post_json(url: &str, method: reqwest::Method, body: Value) -> (u16, Value) {
    match reqwest::Client::new()
        .request(method, url)
        .json(&body)
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Kills the dev process (and so, through `--parent-pid`, its replicas) if the test fails.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn replica_count(r: &Replica) -> u64 {
    let url = format!(
        "http://127.0.0.1:{}/collections/docs/points/count",
        r.http_port
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = reqwest::Client::new()
            .post(&url)
            .json(&json!({}))
            .send()
            .await
        {
            if let Ok(v) = resp.json::<Value>().await {
                if let Some(n) = v["result"]["count"].as_u64() {
                    return n;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "replica on {} never answered",
            r.http_port
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_partitions_replicates_and_merges_exactly() {
    let mut cluster = Cluster::start(2, 2).await;
    let points: Vec<Value> = (0..400).map(json_point).collect();
    let (status, v) = post_json(
        &format!("{}/collections/docs/points", cluster.http),
        reqwest::Method::PUT,
        json!({"points": points}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["affected"], 400);

    // Every replica of a shard holds the same points, and the shards split them.
    let mut per_shard = Vec::new();
    for set in &cluster.replicas {
        let counts = futures::future::join_all(set.iter().map(replica_count)).await;
        assert!(
            counts.windows(2).all(|w| w[0] == w[1]),
            "replicas disagree: {counts:?}"
        );
        per_shard.push(counts[0]);
    }
    assert_eq!(per_shard.iter().sum::<u64>(), 400);
    assert!(
        per_shard.iter().all(|c| *c > 100),
        "partitions should spread points: {per_shard:?}"
    );

    // Exact search through the router equals a brute-force oracle over all points.
    for q in 0..10u64 {
        let query = vector(5000 + q);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let mut oracle: Vec<(u64, f32)> = (0..400u64)
            .map(|i| {
                let v = vector(i);
                (
                    i,
                    v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>()
                        / (norm(&v) * norm(&query)),
                )
            })
            .collect();
        oracle.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (status, v) = cluster
            .post(
                "/collections/docs/points/search",
                json!({"vector": query, "limit": 10, "exact": true}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let got: Vec<u64> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = oracle.iter().take(10).map(|x| x.0).collect();
        assert_eq!(got, want, "query {q}");
    }

    // Filters, get across shards in the asked order, count, delete, and a router restart.
    let (_, v) = cluster.post("/collections/docs/points/search", json!({"vector": vector(3), "limit": 5, "with_payload": true, "filter": {"must": [{"key": "pos", "match": {"value": "noun"}}]}})).await;
    assert!(
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["payload"]["pos"] == "noun"),
        "{v}"
    );
    let (_, v) = cluster
        .post(
            "/collections/docs/points",
            json!({"ids": [399, 0, 12345, 7]}),
        )
        .await;
    let ids: Vec<u64> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![399, 0, 7]);
    let (status, v) = cluster
        .post(
            "/collections/docs/points/delete",
            json!({"filter": {"must": [{"key": "year", "match": {"value": 2003}}]}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["affected"], 40);
    cluster.stop_router().await;
    cluster.start_router().await;
    let (_, v) = cluster
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(v["result"]["count"], 360, "a router restart loses nothing");
    // Bad input is refused by the router itself, with the shard's wording.
    let (status, v) = cluster
        .post(
            "/collections/docs/points/search",
            json!({"vector": [0.5, 0.5], "limit": 3}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has 2 dimensions, collection \"docs\" expects 8"),
        "{v}"
    );
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_with_every_replica_down_fails_searches_naming_it_then_recovers() {
    let mut cluster = Cluster::start(2, 2).await;
    let points: Vec<Value> = (0..100).map(json_point).collect();
    cluster.upsert(points).await;
    for r in &mut cluster.replicas[1] {
        r.kill();
    }
    let (status, v) = cluster
        .post(
            "/collections/docs/points/search",
            json!({"vector": vector(1), "limit": 3}),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "UNAVAILABLE");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shard docs-1"),
        "{v}"
    );
    // With allow_partial the other shard answers, and the response says what is missing.
    let (status, v) = cluster
        .post(
            "/collections/docs/points/search",
            json!({"vector": vector(1), "limit": 100, "allow_partial": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["partial"], true);
    assert_eq!(v["unavailable_shards"], json!(["docs-1"]));
    let shard0 = replica_count(&cluster.replicas[0][0]).await as usize;
    assert_eq!(v["result"].as_array().unwrap().len(), shard0.min(100));
    for r in &mut cluster.replicas[1] {
        r.start();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = cluster
            .post(
                "/collections/docs/points/search",
                json!({"vector": vector(1), "limit": 3}),
            )
            .await;
        if status == 200 {
            assert_eq!(v["result"][0]["id"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "searches did not recover: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_during_quorum_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(2, 2).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let url = format!("{}/collections/docs/points", cluster.http);
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (url, acked) = (url.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let stop = Instant::now() + Duration::from_secs(4);
            let mut batch = 0;
            while Instant::now() < stop {
                let ids: Vec<u64> = (0..20).map(|j| w * 1_000_000 + batch * 20 + j).collect();
                batch += 1;
                let body =
                    json!({"points": ids.iter().map(|i| json_point(*i)).collect::<Vec<_>>()});
                if let Ok(resp) = client.put(&url).json(&body).send().await {
                    if resp.status().is_success() {
                        acked.lock().unwrap().extend(ids);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.replicas[0][1].kill(); // kill -9 mid-write
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.replicas[0][1].start();
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<u64> = acked.lock().unwrap().iter().copied().collect();
    assert!(
        acked.len() > 200,
        "too few acknowledged writes: {}",
        acked.len()
    );
    // With 2 replicas a quorum is both, so every acknowledged write is on both replicas.
    for chunk in acked.chunks(5000) {
        let (status, v) = cluster
            .post(
                "/collections/docs/points",
                json!({"ids": chunk, "with_payload": false}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["result"].as_array().unwrap().len(),
            chunk.len(),
            "acknowledged points are missing"
        );
    }
    let c0 = replica_count(&cluster.replicas[0][0]).await;
    let c1 = replica_count(&cluster.replicas[0][1]).await;
    let acked_on_shard0 = c0.min(c1);
    assert!(acked_on_shard0 > 0);
    // After the restart the replicas agree again: counts and checksums per partition.
    let status = cluster
        .wait_until_replicas_agree(Duration::from_secs(40))
        .await;
    let total: u64 = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["replicas"][0]["points"].as_u64().unwrap())
        .sum();
    assert!(total >= acked.len() as u64, "{status:#}");
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waits_for_a_restarting_replica_and_fails_only_after_the_timeout() {
    let mut cluster = Cluster::start(1, 2).await;
    let (status, v) = cluster.upsert((0..10).map(json_point).collect()).await;
    assert_eq!(status, 200, "{v}");

    // One of the two replicas (a quorum is both) is down when the write arrives and back
    // 700 ms later: the router sends again until it answers, and the write is acknowledged.
    cluster.replicas[0][1].kill();
    let write = {
        let url = format!("{}/collections/docs/points", cluster.http);
        let points: Vec<Value> = (10..20).map(json_point).collect();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = post_json(&url, reqwest::Method::PUT, json!({ "points": points })).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.replicas[0][1].start();
    let ((status, v), took) = write.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(
        took >= Duration::from_millis(600),
        "answered in {took:?}: before the replica was back"
    );
    assert_eq!(replica_count(&cluster.replicas[0][1]).await, 20);

    // A replica that stays away: the write fails once the router's request timeout (5 s)
    // has passed, as UNAVAILABLE naming the shard and the replica.
    cluster.replicas[0][1].kill();
    let started = Instant::now();
    let (status, v) = cluster.upsert((20..30).map(json_point).collect()).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 of 2 replicas acknowledged"),
        "{message}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.replicas[0][1].grpc_port)),
        "{message}"
    );
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(10)).contains(&took),
        "failed after {took:?}"
    );
    cluster.stop_router().await;
}

fn dev_children(data_dir: &Path) -> Vec<String> {
    // Replica processes only: the dev process's own command line names the data dir too.
    let pattern = format!("vecshard-server shard .*{}", data_dir.display());
    let out = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_a_cluster_and_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (http, grpc) = (free_port(), free_port());
    let base = crate::crash::free_ports(8);
    let dev = Command::new(env!("CARGO_BIN_EXE_vecshard-server"))
        .args([
            "dev",
            "--dimension",
            "8",
            "--shards",
            "2",
            "--replicas",
            "2",
            "--index-field",
            "pos:keyword",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
        ])
        .args(["--base-port", &base.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut dev = KillOnDrop(dev);
    let url = format!("http://127.0.0.1:{http}/collections/docs/points");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = post_json(
            &url,
            reqwest::Method::PUT,
            json!({"points": [json_point(1), json_point(2)]}),
        )
        .await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dev cluster never accepted a write"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dev_children(&data).len(), 4, "one process per replica");
    assert!(Command::new("kill")
        .args(["-TERM", &dev.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = dev.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        dev_children(&data).is_empty(),
        "replicas left behind: {:?}",
        dev_children(&data)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_writes_catches_up_from_its_peers() {
    // 3 replicas, quorum 2: writes are acknowledged while one replica is down.
    let mut cluster = Cluster::start(1, 3).await;
    let url = format!("{}/collections/docs/points", cluster.http);
    let first: Vec<Value> = (0..50).map(json_point).collect();
    assert_eq!(
        post_json(&url, reqwest::Method::PUT, json!({"points": first}))
            .await
            .0,
        200
    );
    cluster.replicas[0][2].kill();
    let missed: Vec<Value> = (50..250).map(json_point).collect();
    let (status, v) = post_json(&url, reqwest::Method::PUT, json!({"points": missed})).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = cluster
        .post("/collections/docs/points/delete", json!({"ids": [0, 1, 2]}))
        .await;
    assert_eq!(status, 200, "{v}");
    cluster.replicas[0][2].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = futures::future::join_all(cluster.replicas[0].iter().map(replica_count)).await;
        if counts.iter().all(|c| *c == 247) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never converged: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_cache_serves_repeats_and_never_hides_a_write() {
    let mut cluster = Cluster::start(2, 1).await;
    let points: Vec<Value> = (0..100).map(json_point).collect();
    cluster.upsert(points).await;
    let query = json!({"vector": vector(12_345), "limit": 1});
    let (_, first) = cluster
        .post("/collections/docs/points/search", query.clone())
        .await;
    let (_, second) = cluster
        .post("/collections/docs/points/search", query.clone())
        .await;
    assert_eq!(first["result"], second["result"]);
    assert_ne!(first["result"][0]["id"], 12_345);
    let metrics = metrics_text(&cluster.http).await;
    assert!(
        metrics.contains("vecshard_router_cache_lookups_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    // A write through the router empties the cache: the new exact match is found at once.
    let (status, _) = post_json(
        &format!("{}/collections/docs/points", cluster.http),
        reqwest::Method::PUT,
        json!({"points": [json_point(12_345)]}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, third) = cluster.post("/collections/docs/points/search", query).await;
    assert_eq!(third["result"][0]["id"], 12_345, "{third}");
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_trimmed_log_copies_the_partitions_and_the_replicas_agree() {
    // Logs keep only 8 entries: a replica down for more writes than that cannot catch up
    // from the log and must copy its peers' partitions (points and tombstones).
    let mut cluster = Cluster::start_with(1, 3, &["--wal-retention", "8"]).await;
    cluster.upsert((0..50).map(json_point).collect()).await;
    cluster.replicas[0][2].kill();
    for batch in 0..30u64 {
        let points = (0..5).map(|j| json_point(100 + batch * 5 + j)).collect();
        let (status, v) = cluster.upsert(points).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = cluster
        .post(
            "/collections/docs/points/delete",
            json!({"ids": [0, 1, 2, 3]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    cluster.replicas[0][2].start();
    let status = cluster
        .wait_until_replicas_agree(Duration::from_secs(40))
        .await;
    assert_eq!(
        status["shards"][0]["replicas"][2]["points"],
        50 - 4 + 150,
        "{status:#}"
    );
    cluster.stop_router().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_replica_is_hedged_around_and_deadlines_bound_the_wait() {
    let mut cluster = Cluster::start(1, 2).await;
    cluster.upsert((0..200).map(json_point).collect()).await;
    // A replica that hangs (SIGSTOP: connections accepted, never answered) holds up no read
    // for more than the hedge delay: the read also goes to the other replica. A fresh router
    // knows no latencies yet, so it tries the replicas in map order: the hung one first.
    cluster.stop_router().await;
    cluster.replicas[0][0]
        .process
        .as_ref()
        .unwrap()
        .signal("STOP");
    let started = Instant::now();
    cluster.start_router().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "router start waited {:?}",
        started.elapsed()
    );
    let mut slowest = Duration::ZERO;
    for i in 0..20u64 {
        // Distinct queries, so that the result cache does not answer them.
        let body = json!({"vector": vector(1000 + i), "limit": 5});
        let started = Instant::now();
        let (status, v) = cluster.post("/collections/docs/points/search", body).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200, "{v}");
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a search took {slowest:?}"
    );
    let metrics = metrics_text(&cluster.http).await;
    let hedged = metric_total(&metrics, |l| {
        l.starts_with("vecshard_router_hedged_reads_total")
    });
    assert!(hedged >= 1.0, "no hedged reads counted:\n{metrics}");
    // With both replicas hung, the caller's deadline (?timeout=) ends the wait, not the
    // router's 5 s call timeout.
    cluster.replicas[0][1]
        .process
        .as_ref()
        .unwrap()
        .signal("STOP");
    let started = Instant::now();
    let (status, v) = cluster
        .post(
            "/collections/docs/points/search?timeout=0.3",
            json!({"vector": vector(5000), "limit": 5}),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "DEADLINE_EXCEEDED", "{v}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    // The same over gRPC: the caller's grpc-timeout bounds the wait, and the answer is
    // DEADLINE_EXCEEDED from the router, not CANCELLED from the transport.
    let addr = cluster.router.as_ref().unwrap().grpc_addr;
    let mut grpc =
        vecshard_proto::v1::points_client::PointsClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let mut request = tonic::Request::new(vecshard_proto::v1::SearchRequest {
        collection: "docs".into(),
        vector: vector(5000),
        limit: 5,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = grpc.search(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    for r in &cluster.replicas[0] {
        r.process.as_ref().unwrap().signal("CONT");
    }
    let (status, v) = cluster
        .post(
            "/collections/docs/points/search",
            json!({"vector": vector(7), "limit": 5}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"][0]["id"], 7);
    cluster.stop_router().await;
}

/// Searches a replica refused (`RESOURCE_EXHAUSTED`), from its own metrics (the router sends
/// searches to shards as `search_batch`).
async fn refused_searches(r: &Replica) -> f64 {
    let metrics = metrics_text(&format!("http://127.0.0.1:{}", r.http_port)).await;
    metric_total(&metrics, |l| {
        l.starts_with("vecshard_requests_total{op=\"search") && l.contains("RESOURCE_EXHAUSTED")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_refused_by_a_busy_replica_is_answered_by_another() {
    let mut cluster = Cluster::start(1, 2).await;
    cluster.upsert((0..2000).map(json_point).collect()).await;
    // Replica 0 admits one queued read at a time; replica 1 keeps the default queue.
    let busy = &mut cluster.replicas[0][0];
    busy.kill();
    busy.extra
        .extend(["--max-queued-requests", "1", "--search-threads", "1"].map(str::to_string));
    busy.start();
    replica_count(&cluster.replicas[0][0]).await;
    let cluster = Arc::new(cluster);
    let mut burst = 0u64;
    while refused_searches(&cluster.replicas[0][0]).await == 0.0 {
        assert!(
            burst < 10,
            "replica 0 never refused a search: the test did not run"
        );
        let searches = (0..200u64).map(|i| {
            let cluster = cluster.clone();
            // Distinct, exact searches: the router's cache cannot answer them and each
            // holds a read thread for a while.
            let body =
                json!({"vector": vector(100_000 + burst * 1000 + i), "limit": 5, "exact": true});
            tokio::spawn(async move { cluster.post("/collections/docs/points/search", body).await })
        });
        for s in futures::future::join_all(searches).await {
            let (status, v) = s.unwrap();
            assert_eq!(
                status, 200,
                "a refusal of one replica reached the client: {v}"
            );
        }
        burst += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_the_internal_service_and_the_router_does_not() {
    use vecshard_proto::v1 as pb;
    use vecshard_proto::v1::points_internal_client::PointsInternalClient;
    let mut cluster = Cluster::start(1, 1).await;
    let points: Vec<Value> = (0..20).map(json_point).collect();
    assert_eq!(cluster.upsert(points).await.0, 200);
    let stats = |addr: String| async move {
        let mut client = PointsInternalClient::connect(addr).await.unwrap();
        client
            .partition_stats(pb::PartitionStatsRequest {
                collection: "docs".into(),
                partition_count: PARTITIONS,
            })
            .await
    };
    let shard = format!("http://127.0.0.1:{}", cluster.replicas[0][0].grpc_port);
    let answer = stats(shard).await.unwrap().into_inner();
    assert_eq!(
        answer.partitions.iter().map(|p| p.count).sum::<u64>(),
        20,
        "the replica's fingerprints cover every point"
    );
    let router = format!("http://{}", cluster.router.as_ref().unwrap().grpc_addr);
    let refused = stats(router).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    cluster.stop_router().await;
}
