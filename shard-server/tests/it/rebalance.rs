//! Rebalancing on real shard processes behind in-process routers: 2 → 3 → 2 shards while a
//! writer (new ids, overwrites of a hot set, deletes) and a searcher run throughout, with
//! `kill -9` of a source replica during a backfill and of a receiving replica during dual
//! writes, a coordinator that reloads its recorded progress before every step (as a restarted
//! one would), and a router that keeps the old shard map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecshard_proto::shard_map::{ShardAssignment, ShardMap};
use vecshard_proto::v1 as pb;
use vecshard_rebalance::{FileMapStore, Progress, Shards, Step};
use vecshard_router::{HedgePolicy, MapSource, Router, RouterOptions, WriteConsistency};
use vecshard_server::server::{self, RunningServer};

use crate::cluster::{post_json, Cluster, PARTITIONS};
use crate::support::*;

const LOADED: u64 = 2_000;
/// Ids below this are the hot set the writer keeps overwriting.
const HOT: u64 = 40;

/// Last acknowledged state of every id the writer touched: `Some(generation)` for a live
/// point whose payload says that generation, `None` for a deleted one.
type History = Arc<Mutex<BTreeMap<u64, Option<u64>>>>;

/// One write: its body, URL, method, and the state of each id once it is acknowledged.
type Write<'a> = (Value, &'a str, reqwest::Method, Vec<(u64, Option<u64>)>);

fn point(id: u64, generation: u64) -> Value {
    json!({"id": id, "vector": vector(id), "payload": {"gen": generation}})
}

/// Sends until acknowledged (the router retries stale maps itself; this retries what still
/// fails, e.g. a write timing out while a replica restarts). Returns the failed attempts.
async fn until_acknowledged(url: &str, method: reqwest::Method, body: Value) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let (status, answer) = post_json(url, method.clone(), body.clone()).await;
        if status == 200 {
            return failed;
        }
        failed += 1;
        assert!(
            Instant::now() < deadline,
            "a write failed for a minute: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes until `stop`; returns (writes, failed attempts, longest time without an ack).
async fn writer(http: String, history: History, stop: Arc<AtomicBool>) -> (u64, u32, Duration) {
    let points_url = format!("{http}/collections/docs/points");
    let delete_url = format!("{http}/collections/docs/points/delete");
    let (mut next, mut generation, mut failed) = (LOADED, 0u64, 0u32);
    let (mut writes, mut longest, mut last_ack) = (0u64, Duration::ZERO, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        generation += 1;
        let (body, url, method, outcome): Write = match generation % 5 {
            0..=2 => {
                let ids: Vec<u64> = (next..next + 8).collect();
                next += 8;
                let points = ids
                    .iter()
                    .map(|i| point(*i, generation))
                    .collect::<Vec<_>>();
                let outcome = ids.iter().map(|i| (*i, Some(generation))).collect();
                (
                    json!({"points": points}),
                    &points_url,
                    reqwest::Method::PUT,
                    outcome,
                )
            }
            3 => {
                let ids: Vec<u64> = (0..8).map(|k| (generation * 7 + k * 5) % HOT).collect();
                let points = ids
                    .iter()
                    .map(|i| point(*i, generation))
                    .collect::<Vec<_>>();
                let outcome = ids.iter().map(|i| (*i, Some(generation))).collect();
                (
                    json!({"points": points}),
                    &points_url,
                    reqwest::Method::PUT,
                    outcome,
                )
            }
            _ => {
                let ids: Vec<u64> = (0..4)
                    .map(|k| HOT + (generation * 13 + k * 97) % (next - HOT))
                    .collect();
                let outcome = ids.iter().map(|i| (*i, None)).collect();
                (
                    json!({"ids": ids}),
                    &delete_url,
                    reqwest::Method::POST,
                    outcome,
                )
            }
        };
        failed += until_acknowledged(url, method, body).await;
        writes += 1;
        longest = longest.max(last_ack.elapsed());
        last_ack = Instant::now();
        history.lock().unwrap().extend(outcome);
    }
    (writes, failed, longest)
}

/// Searches until `stop`; returns (searches, failures, longest run of consecutive failures).
/// Panics if a result ever holds an id twice.
async fn searcher(http: String, stop: Arc<AtomicBool>) -> (u64, u64, u64) {
    let url = format!("{http}/collections/docs/points/search");
    let (mut searches, mut failures, mut streak, mut worst) = (0u64, 0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        searches += 1;
        let q = vector(1_000_000 + searches % 50);
        let (status, body) = post_json(
            &url,
            reqwest::Method::POST,
            json!({"vector": q, "limit": 20}),
        )
        .await;
        if status != 200 {
            failures += 1;
            streak += 1;
            worst = worst.max(streak);
            continue;
        }
        streak = 0;
        let ids: Vec<u64> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        let unique: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "a search returned an id twice: {ids:?}"
        );
    }
    (searches, failures, worst)
}

/// A second router whose shard-map file is a copy that never changes.
async fn stale_router(cluster: &Cluster) -> (RunningServer, String) {
    let path = cluster._dir.path().join("old-shard-map.json");
    std::fs::copy(&cluster.map_path, &path).unwrap();
    let options = RouterOptions {
        shard_map: MapSource::File(path),
        write_consistency: WriteConsistency::Quorum,
        request_timeout: Duration::from_secs(5),
        max_batch_points: 10_000,
        max_batch_bytes: 64 << 20,
        cache_entries: 0,
        cache_ttl: Duration::from_secs(60),
        hedge: HedgePolicy::default(),
        client: Default::default(),
    };
    let router = Router::open(options, Duration::from_secs(30))
        .await
        .unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let running = server::start(router, any, any).await.unwrap();
    let http = format!("http://{}", running.http_addr);
    (running, http)
}

fn target(cluster: &Cluster, shards: usize) -> Vec<ShardAssignment> {
    cluster.replicas[..shards]
        .iter()
        .enumerate()
        .map(|(i, set)| ShardAssignment {
            name: format!("docs-{i}"),
            partitions: Vec::new(),
            replicas: set.iter().map(|r| r.addr()).collect(),
            joining: Vec::new(),
        })
        .collect()
}

/// What to do to the cluster while a step runs.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// SIGKILL a replica of the shard giving partitions away, 20 ms into the step.
    KillSource,
    /// SIGKILL a replica of the receiving shard right after the step, restart it 300 ms later.
    KillReceiver,
}

/// Rebalances to `shards`, recording progress in a file and reloading it before every step.
/// `fault(progress)` picks what to break during a step. Returns the steps run.
async fn rebalance(
    cluster: &mut Cluster,
    shards: usize,
    fault: impl Fn(&Progress) -> Fault,
    on_step: &mut impl FnMut(&Progress),
) -> u32 {
    let store = FileMapStore(cluster.map_path.clone());
    let record = cluster._dir.path().join("rebalance.json");
    let runner = Shards::new("docs");
    let target = target(cluster, shards);
    let mut steps = 0;
    let mut failures = 0;
    // Each fault strikes once, not again when its step is retried.
    let mut struck = BTreeSet::new();
    loop {
        // A coordinator restarted between steps knows only what it recorded.
        let progress: Option<Progress> = std::fs::read_to_string(&record)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap());
        let (batch_to, batch_from) = progress
            .as_ref()
            .and_then(|p| p.current())
            .map(|b| (shard_index(&b.to), shard_index(&b.from)))
            .unwrap_or((0, 0));
        let what = match &progress {
            Some(p) if struck.insert((p.batch, p.step.as_str())) => fault(p),
            _ => Fault::None,
        };
        let step = runner.step_toward(&store, progress.clone(), &target, 8, 0);
        let result = match what {
            Fault::KillSource => {
                let kill = async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    cluster.replicas[batch_from][1].kill();
                };
                let (result, ()) = tokio::join!(step, kill);
                cluster.replicas[batch_from][1].start();
                result
            }
            _ => step.await,
        };
        match result {
            Ok((next, _)) => {
                steps += 1;
                if what == Fault::KillReceiver {
                    cluster.replicas[batch_to][0].kill();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cluster.replicas[batch_to][0].start();
                }
                match next {
                    Some(p) => {
                        on_step(&p);
                        std::fs::write(&record, serde_json::to_string(&p).unwrap()).unwrap();
                    }
                    None if progress.is_some() => {
                        let _ = std::fs::remove_file(&record);
                    }
                    None => {
                        eprintln!(
                            "rebalanced to {shards} shards: {steps} steps, {failures} failed tries"
                        );
                        return steps;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                assert!(failures < 60, "rebalancing kept failing: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn shard_index(name: &str) -> usize {
    name.rsplit('-').next().unwrap().parse().unwrap()
}

async fn partition_stats(addr: &str) -> Vec<pb::PartitionStat> {
    let mut client =
        vecshard_proto::v1::points_internal_client::PointsInternalClient::connect(addr.to_string())
            .await
            .unwrap();
    client
        .partition_stats(pb::PartitionStatsRequest {
            collection: "docs".into(),
            partition_count: PARTITIONS,
        })
        .await
        .unwrap()
        .into_inner()
        .partitions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_go_from_2_to_3_and_back_under_writes_searches_and_kills_losing_nothing() {
    let mut cluster = Cluster::start_spare(3, 2, 2, &[]).await;
    for chunk in (0..LOADED).collect::<Vec<_>>().chunks(500) {
        let points = chunk.iter().map(|i| point(*i, 0)).collect();
        assert_eq!(cluster.upsert(points).await.0, 200);
    }
    let history: History = Arc::new(Mutex::new((0..LOADED).map(|i| (i, Some(0))).collect()));
    let (stale, stale_http) = stale_router(&cluster).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(cluster.http.clone(), history.clone(), stop.clone()));
    let searching = tokio::spawn(searcher(cluster.http.clone(), stop.clone()));
    let started = Instant::now();

    // 2 → 3: a source replica killed during the first backfill, a receiving replica during
    // the second batch's dual writes; the stale router tried once writes are dual.
    let mut stale_checked = false;
    let mut check_stale = |p: &Progress| {
        if p.step == Step::Backfill && !stale_checked {
            stale_checked = true;
            let http = stale_http.clone();
            let refused = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    let url = format!("{http}/collections/docs/points");
                    post_json(
                        &url,
                        reqwest::Method::PUT,
                        json!({"points": [point(9_999_999, 1)]}),
                    )
                    .await
                })
            })
            .join()
            .unwrap();
            assert_eq!(
                refused.0, 409,
                "a router with the old map must be refused: {refused:?}"
            );
        }
    };
    let steps_out = rebalance(
        &mut cluster,
        3,
        |p| match (p.batch, p.step) {
            (0, Step::Backfill) => Fault::KillSource,
            (1, Step::DualWrite) => Fault::KillReceiver,
            _ => Fault::None,
        },
        &mut check_stale,
    )
    .await;
    assert!(stale_checked);
    let out_secs = started.elapsed().as_secs_f64();
    // 3 → 2: a source replica (of the shard being emptied) killed during a backfill.
    let steps_in = rebalance(
        &mut cluster,
        2,
        |p| match (p.batch, p.step) {
            (0, Step::Backfill) => Fault::KillSource,
            _ => Fault::None,
        },
        &mut |_| {},
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (writes, write_failures, longest_gap) = writing.await.unwrap();
    let (searches, search_failures, worst_streak) = searching.await.unwrap();
    eprintln!(
        "rebalance 2→3 in {out_secs:.1}s ({steps_out} steps), 3→2 ({steps_in} steps); \
         {writes} writes ({write_failures} failed attempts, longest wait {longest_gap:?}); \
         {searches} searches, {search_failures} failed, at most {worst_streak} in a row"
    );
    assert!(worst_streak < 2, "a search failed twice in a row");

    let map: ShardMap =
        serde_json::from_str(&std::fs::read_to_string(&cluster.map_path).unwrap()).unwrap();
    assert_eq!(map.shards.len(), 2);
    assert!(map.moves.is_empty());
    cluster
        .wait_until_replicas_agree(Duration::from_secs(60))
        .await;

    // Every acknowledged write is there at its last state.
    let history = history.lock().unwrap().clone();
    let ids: Vec<u64> = history.keys().copied().collect();
    for chunk in ids.chunks(1000) {
        let (status, body) = cluster
            .post("/collections/docs/points", json!({"ids": chunk}))
            .await;
        assert_eq!(status, 200, "{body}");
        let found: BTreeMap<u64, u64> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_u64().unwrap(),
                    p["payload"]["gen"].as_u64().unwrap(),
                )
            })
            .collect();
        for id in chunk {
            assert_eq!(found.get(id).copied(), history[id], "id {id}");
        }
    }
    let live: Vec<u64> = history
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(i, _)| *i)
        .collect();
    let (_, count) = cluster
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(
        count["result"]["count"].as_u64().unwrap(),
        live.len() as u64
    );
    let (_, refused) = cluster
        .post("/collections/docs/points", json!({"ids": [9_999_999]}))
        .await;
    assert!(
        refused["result"].as_array().unwrap().is_empty(),
        "the stale router's write landed"
    );

    // No replica holds a partition its shard does not own; the retired shard holds nothing.
    let owners = map.owners();
    for (s, set) in cluster.replicas.iter().enumerate() {
        for r in set {
            for stat in partition_stats(&r.addr()).await {
                assert!(
                    s < 2 && owners[stat.partition as usize] == s,
                    "shard {s} replica {} holds partition {} ({} points)",
                    r.addr(),
                    stat.partition,
                    stat.count
                );
            }
        }
    }

    // Exact search equals an oracle over the recorded history.
    for q in 0..5u64 {
        let query = vector(2_000_000 + q);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cosine = |i: u64| {
            let v = vector(i);
            v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>() / (norm(&v) * norm(&query))
        };
        let mut oracle: Vec<(u64, f32)> = live.iter().map(|i| (*i, cosine(*i))).collect();
        oracle.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (_, body) = cluster
            .post(
                "/collections/docs/points/search",
                json!({"vector": query, "limit": 10, "exact": true}),
            )
            .await;
        let got: Vec<u64> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = oracle[..10].iter().map(|(i, _)| *i).collect();
        assert_eq!(got, want, "query {q}");
    }
    stale.shutdown().await;

    // A replica added after the moves takes its shard's partition ownership from its peers
    // before copying from them: it ends with exactly its shard's points, none of the
    // partitions that moved away and still linger in its peers' logs.
    let added = cluster.add_replica(0);
    let addr = cluster.replicas[0][added].addr();
    let peer = partition_stats(&cluster.replicas[0][0].addr()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = tokio::time::timeout(Duration::from_secs(5), async {
            match vecshard_proto::v1::points_internal_client::PointsInternalClient::connect(
                addr.clone(),
            )
            .await
            {
                Ok(mut c) => c
                    .partition_stats(pb::PartitionStatsRequest {
                        collection: "docs".into(),
                        partition_count: PARTITIONS,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner().partitions),
                Err(_) => None,
            }
        })
        .await
        .ok()
        .flatten();
        if stats.as_ref() == Some(&peer) {
            break;
        }
        if let Some(stats) = &stats {
            for stat in stats {
                assert_eq!(
                    owners[stat.partition as usize], 0,
                    "the added replica holds partition {} of another shard",
                    stat.partition
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the added replica did not catch up: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator publishes the added replica with a newer map version and no ownership
    // change: every replica (the old ones at the older ownership version, the added one at
    // its peers') serves the router's newer map, for writes and reads.
    let mut grown = map.clone();
    grown.version += 1;
    grown.shards[0].replicas.push(addr);
    std::fs::write(&cluster.map_path, serde_json::to_vec(&grown).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.status().await["map_version"].as_u64() != Some(grown.version) {
        assert!(
            Instant::now() < deadline,
            "the router never loaded the newer map"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<u64> = (3_000_000..3_000_040).collect();
    let (status, body) = cluster
        .upsert(ids.iter().map(|i| point(*i, 9)).collect())
        .await;
    assert_eq!(status, 200, "a write under the newer map: {body}");
    let (status, body) = cluster
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(status, 200, "a count under the newer map: {body}");
    assert_eq!(
        body["result"]["count"].as_u64().unwrap(),
        live.len() as u64 + ids.len() as u64
    );
}
