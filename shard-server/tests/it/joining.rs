//! Joining replicas (the shard map's `joining`): they take every write but no reads and do not
//! count toward the write consistency; a replica with peers is ready only once it has caught up
//! with them; a write waiting on a replica that stopped goes through as soon as a map that no
//! longer counts it is published. Real shard processes on loopback behind an in-process router.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecshard_proto::shard_map::ShardMap;

use crate::cluster::{post_json, replica_count, Cluster, Replica};
use crate::support::*;

fn read_map(cluster: &Cluster) -> ShardMap {
    serde_json::from_slice(&std::fs::read(&cluster.map_path).unwrap()).unwrap()
}

/// Writes `map` with the next version and waits until the router uses it.
async fn publish(cluster: &Cluster, mut map: ShardMap) -> ShardMap {
    map.version += 1;
    map.validate().unwrap();
    std::fs::write(&cluster.map_path, serde_json::to_vec(&map).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.status().await["map_version"].as_u64() != Some(map.version) {
        assert!(Instant::now() < deadline, "the router kept the old map");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    map
}

async fn ready(r: &Replica) -> bool {
    reqwest::get(format!("http://127.0.0.1:{}/readyz", r.http_port))
        .await
        .is_ok_and(|resp| resp.status() == 200)
}

async fn router_count(cluster: &Cluster) -> u64 {
    let (status, v) = cluster
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    v["result"]["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_replica_takes_writes_but_serves_no_reads_and_is_not_waited_for() {
    let mut cluster = Cluster::start(1, 1).await;
    let (status, v) = cluster.upsert((0..300).map(json_point).collect()).await;
    assert_eq!(status, 200, "{v}");

    // A replica with no data and no peers to copy from joins the map: were it asked, counts
    // and gets would come back short.
    let empty = cluster.add_replica_with(0, Vec::new());
    let addr = cluster.replicas[0][empty].addr();
    assert_eq!(replica_count(&cluster.replicas[0][empty]).await, 0);
    let mut map = read_map(&cluster);
    map.shards[0].joining.push(addr.clone());
    let map = publish(&cluster, map).await;

    for _ in 0..40 {
        assert_eq!(
            router_count(&cluster).await,
            300,
            "a read went to the joining replica"
        );
    }
    let (status, v) = cluster
        .post(
            "/collections/docs/points",
            json!({"ids": (0..300).collect::<Vec<u64>>()}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"].as_array().unwrap().len(), 300);
    let status = cluster.status().await;
    assert!(
        status["shards"][0]["replicas"][1]["status"]
            .as_str()
            .unwrap()
            .starts_with("joining"),
        "{status:#}"
    );

    // Writes reach it (it will serve them later) ...
    let (status, v) = cluster.upsert((300..350).map(json_point).collect()).await;
    assert_eq!(status, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica_count(&cluster.replicas[0][empty]).await != 50 {
        assert!(
            Instant::now() < deadline,
            "the joining replica missed writes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... but a joining replica that is down does not hold them up: quorum counts the one
    // serving replica.
    cluster.replicas[0][empty].kill();
    let started = Instant::now();
    let (status, v) = cluster.upsert((350..360).map(json_point).collect()).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the write waited {:?} for a joining replica",
        started.elapsed()
    );
    assert_eq!(router_count(&cluster).await, 360);
    assert_eq!(map.shards[0].joining, [addr]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_is_ready_only_once_it_holds_what_its_peers_hold() {
    let mut cluster = Cluster::start(1, 1).await;
    for batch in 0..10u64 {
        let (status, v) = cluster
            .upsert((batch * 200..batch * 200 + 200).map(json_point).collect())
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let added = cluster.add_replica(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(&cluster.replicas[0][added]).await {
        assert!(
            Instant::now() < deadline,
            "the new replica never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready: it has every point its peer had when it started.
    assert_eq!(replica_count(&cluster.replicas[0][added]).await, 2000);

    // A replica whose only peer is down is ready anyway after a few rounds (it cannot catch
    // up from a peer that is away, and must not stay unready for as long as it is).
    cluster.replicas[0][0].kill();
    cluster.replicas[0][added].kill();
    cluster.replicas[0][added].start();
    let started = Instant::now();
    while !ready(&cluster.replicas[0][added]).await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a replica whose peer is down never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ready after {:?}: before giving up on its peer",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_on_a_stopped_replica_goes_through_once_the_map_counts_it_joining() {
    let mut cluster = Cluster::start(1, 2).await;
    let (status, v) = cluster.upsert((0..10).map(json_point).collect()).await;
    assert_eq!(status, 200, "{v}");

    // Quorum of 2 serving replicas is both: with one stopped, the write waits ...
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !write.is_finished(),
        "acknowledged without the stopped replica"
    );
    // ... until the map lists the stopped replica as joining (the operator does this when its
    // pod is not ready): then it runs again and one acknowledgement is enough, well before
    // the router's 5 s request timeout.
    let mut map = read_map(&cluster);
    let stopped = map.shards[0].replicas.remove(1);
    map.shards[0].joining.push(stopped);
    publish(&cluster, map).await;
    let ((status, v), took) = write.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");

    // Back, it catches up with what it missed.
    cluster.replicas[0][1].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica_count(&cluster.replicas[0][1]).await != 20 {
        assert!(
            Instant::now() < deadline,
            "the restarted replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
