//! Snapshots of a real 2-shard × 2-replica cluster taken while a writer runs, restored into a
//! new cluster of real processes: every write acknowledged before the snapshot started is
//! there, per-partition checksums equal the manifest's, searches answer the same. Against a
//! local directory and against a real S3 server (versitygw, built by `e2e/tools.sh`), whose
//! failures (wrong credentials, missing bucket, server down) fail the snapshot with the S3
//! error and leave no snapshot behind. A flipped byte makes a restore refuse, naming the object.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecshard_proto::shard_map::ShardMap;
use vecshard_proto::v1 as pb;
use vecshard_snapshot::{catalog, take, Repository, StoreConfig};

use crate::cluster::{post_json, Cluster, PARTITIONS};
use crate::crash::free_port;
use crate::support::*;

const LOADED: u64 = 3_000;

fn point(id: u64, generation: u64) -> Value {
    json!({"id": id, "vector": vector(id), "payload": {"gen": generation, "pos": "n"}})
}

/// Writes new ids (and rewrites old ones) until `stop`; records each acknowledged write
/// with the time it was acknowledged.
async fn writer(http: String, acked: Arc<Mutex<Vec<(u64, u64, Instant)>>>, stop: Arc<AtomicBool>) {
    let url = format!("{http}/collections/docs/points");
    let mut next = LOADED;
    let mut generation = 1;
    while !stop.load(Ordering::Relaxed) {
        let ids = [next, next + 1, 50 + generation % (LOADED - 50)];
        let body = json!({"points": ids.iter().map(|i| point(*i, generation)).collect::<Vec<_>>()});
        let (status, _) = post_json(&url, reqwest::Method::PUT, body).await;
        if status == 200 {
            let now = Instant::now();
            acked
                .lock()
                .unwrap()
                .extend(ids.iter().map(|i| (*i, generation, now)));
            next += 2;
            generation += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn partition_stats(addr: &str) -> Vec<pb::PartitionStat> {
    vecshard_proto::v1::points_internal_client::PointsInternalClient::connect(addr.to_string())
        .await
        .unwrap()
        .partition_stats(pb::PartitionStatsRequest {
            collection: "docs".into(),
            partition_count: PARTITIONS,
        })
        .await
        .unwrap()
        .into_inner()
        .partitions
}

/// Ids of the top 10 of query `q` through the HTTP search, exact or through the graph.
async fn top10(http: &str, q: u64, exact: bool) -> Vec<u64> {
    let (status, body) = post_json(
        &format!("{http}/collections/docs/points/search"),
        reqwest::Method::POST,
        json!({"vector": vector(5_000_000 + q), "limit": 10, "exact": exact}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

fn recall(got: &[u64], exact: &[u64]) -> f64 {
    got.iter().filter(|i| exact.contains(i)).count() as f64 / exact.len() as f64
}

/// A real S3 server: versitygw with its posix backend, data on disk.
struct S3Server {
    child: Child,
    endpoint: String,
    port: u16,
    root: tempfile::TempDir,
    _sidecar: tempfile::TempDir,
}

const ACCESS: &str = "vecshard-test";
const SECRET: &str = "vecshard-test-secret-key";

impl S3Server {
    fn binary() -> String {
        if let Ok(path) = std::env::var("VECSHARD_VERSITYGW") {
            return path;
        }
        // Builds it (cached by version) from the Go module proxy, as the e2e suites do.
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let out = Command::new("bash")
            .arg(format!("{repo}/e2e/tools.sh"))
            .arg("versitygw")
            .stderr(Stdio::inherit())
            .output()
            .expect("run e2e/tools.sh versitygw");
        assert!(out.status.success(), "building versitygw failed");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_string()
    }

    fn start(bucket: &str) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        // A posix-backend bucket is a directory under the root.
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        // Object metadata (ETags, which completing a multipart upload checks) in a sidecar
        // directory: no dependence on the file system's extended attributes.
        let sidecar = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(root.path(), sidecar.path(), port);
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            root,
            _sidecar: sidecar,
        }
    }

    fn spawn(root: &std::path::Path, sidecar: &std::path::Path, port: u16) -> Child {
        let child = Command::new(Self::binary())
            .args(["--port", &format!("127.0.0.1:{port}")])
            .args(["--access", ACCESS, "--secret", SECRET, "--quiet"])
            .arg("posix")
            .arg("--sidecar")
            .arg(sidecar)
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start versitygw");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "versitygw did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// SIGKILL, then the same server again (same port, same data).
    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.root.path(), self._sidecar.path(), self.port);
    }

    fn signal(&self, name: &str) {
        Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
    }

    fn store(&self, url: &str, secret: &str) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: ACCESS.into(),
            secret_access_key: secret.into(),
            allow_http: true,
            ..StoreConfig::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Snapshot under writes → restore into a new cluster → compare. Returns the manifest.
async fn snapshot_and_restore(store: StoreConfig, restore_flags: Vec<String>) {
    let source = Cluster::start(2, 2).await;
    for chunk in (0..LOADED).collect::<Vec<_>>().chunks(500) {
        let (status, body) = source
            .upsert(chunk.iter().map(|i| point(*i, 0)).collect())
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post_json(
        &format!("{}/collections/docs/points/delete", source.http),
        reqwest::Method::POST,
        json!({"ids": (0..50).collect::<Vec<u64>>()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(source.http.clone(), acked.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let map: ShardMap =
        serde_json::from_str(&std::fs::read_to_string(&source.map_path).unwrap()).unwrap();
    let started = Instant::now();
    let m = take::take(&store, &map, Some("s-under-writes".into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writing.await.unwrap();
    assert_eq!(m.shards.len(), 2);
    assert!(m.points >= LOADED - 50, "{}", m.points);
    let repo = Repository::open(&store).unwrap();
    let listed = catalog::list(&repo, "docs").await.unwrap();
    assert_eq!(listed.len(), 1);
    catalog::verify(&repo, "docs", "s-under-writes")
        .await
        .unwrap();

    // The state each id had when the snapshot started: the newest generation acknowledged
    // before then. Generations only grow, so the restored one is at least that.
    let mut before: BTreeMap<u64, u64> = (50..LOADED).map(|i| (i, 0)).collect();
    for (id, generation, at) in acked.lock().unwrap().iter() {
        if *at < started {
            before.insert(*id, *generation);
        }
    }
    let written_after = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.2 >= started)
        .count();

    // Restore into a new cluster of new processes.
    let mut flags: Vec<&str> = restore_flags.iter().map(String::as_str).collect();
    flags.extend(["--restore-snapshot", "s-under-writes"]);
    let restored = Cluster::start_with(2, 2, &flags).await;
    let shard_manifests: Vec<vecshard_snapshot::ShardManifest> = {
        let mut out = Vec::new();
        for s in &m.shards {
            let path = repo.path(&["docs", "s-under-writes", &s.name, "manifest.json"]);
            out.push(
                vecshard_snapshot::objects::get_json(&repo, &path, Some(&s.manifest))
                    .await
                    .unwrap(),
            );
        }
        out
    };
    for (s, set) in restored.replicas.iter().enumerate() {
        let want: Vec<pb::PartitionStat> = shard_manifests[s]
            .partitions
            .iter()
            .map(|p| pb::PartitionStat {
                partition: p.partition,
                count: p.count,
                checksum: p.checksum,
            })
            .collect();
        for r in set {
            assert_eq!(
                partition_stats(&r.addr()).await,
                want,
                "restored replica {} of shard {s} differs from its manifest",
                r.addr()
            );
        }
    }
    let ids: Vec<u64> = before.keys().copied().collect();
    for chunk in ids.chunks(1000) {
        let (status, body) = restored
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
            let got = found.get(id).copied();
            assert!(
                got.is_some_and(|g| g >= before[id]),
                "id {id}: acknowledged generation {} before the snapshot, restored {got:?}",
                before[id]
            );
        }
    }
    let (_, deleted) = restored
        .post("/collections/docs/points", json!({"ids": [0, 1, 49]}))
        .await;
    assert!(
        deleted["result"].as_array().unwrap().is_empty(),
        "deletes are kept"
    );
    let (_, count) = restored
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(count["result"]["count"].as_u64().unwrap(), m.points);
    // Replaying every write acknowledged after the snapshot started (each is idempotent: a
    // point's vector depends only on its id) brings the restored cluster to the source's
    // points: exact searches then answer the same, and approximate ones as well.
    let after: Vec<u64> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.2 >= started)
        .map(|w| w.0)
        .collect();
    for chunk in after.chunks(500) {
        let (status, body) = restored
            .upsert(chunk.iter().map(|i| point(*i, 1)).collect())
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (mut recall_source, mut recall_restored) = (0.0, 0.0);
    for q in 0..5 {
        let exact = top10(&source.http, q, true).await;
        assert_eq!(top10(&restored.http, q, true).await, exact, "query {q}");
        recall_source += recall(&top10(&source.http, q, false).await, &exact);
        recall_restored += recall(&top10(&restored.http, q, false).await, &exact);
    }
    let (recall_source, recall_restored) = (recall_source / 5.0, recall_restored / 5.0);
    assert!(
        recall_restored >= 0.9 && recall_restored >= recall_source - 0.05,
        "recall@10: restored {recall_restored}, source {recall_source}"
    );
    eprintln!(
        "snapshot of {} points ({} KiB) under writes ({written_after} writes acknowledged after \
         it started) restored into a new 2×2 cluster; recall@10 source {recall_source}, \
         restored {recall_restored}",
        m.points,
        m.bytes / 1024
    );
    // The restored collection takes writes.
    let (status, body) = restored.upsert(vec![point(9_000_000, 1)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_taken_under_writes_restores_into_a_new_cluster_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = StoreConfig {
        url: url.clone(),
        ..StoreConfig::default()
    };
    snapshot_and_restore(store, vec!["--restore-from".into(), url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_goes_to_a_real_s3_server_and_restores_from_it() {
    let s3 = S3Server::start("backups");
    let store = s3.store("s3://backups/vecshard", SECRET);
    // Restoring processes take their credentials from the environment, as the AWS tools do.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    snapshot_and_restore(
        store,
        vec![
            "--restore-from".into(),
            "s3://backups/vecshard".into(),
            "--s3-endpoint".into(),
            s3.endpoint.clone(),
        ],
    )
    .await;
    assert!(
        s3.root
            .path()
            .join("backups/vecshard/docs/s-under-writes/manifest.json")
            .exists(),
        "the snapshot is in the S3 server's bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_objects_go_to_s3_as_multipart_uploads_and_come_back_verified() {
    let s3 = S3Server::start("backups");
    let repo = Repository::open(&s3.store("s3://backups/big", SECRET)).unwrap();
    let path = repo.path(&["docs", "s", "docs-0", "records.bin"]);
    let mut w =
        vecshard_snapshot::objects::ObjectWriter::create(&repo, path.clone(), "records.bin");
    // 25 MiB in 1 MiB writes: three parts of object_store's 10 MiB buffer.
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    for _ in 0..25 {
        w.write(&chunk).await.unwrap();
    }
    let entry = w.finish().await.unwrap();
    assert_eq!(entry.size, 25 << 20);
    let out = tempfile::tempdir().unwrap();
    vecshard_snapshot::objects::download_verified(&repo, &path, &entry, &out.path().join("f"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(out.path().join("f")).unwrap().len(),
        25 << 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_failures_fail_the_snapshot_with_the_store_error_and_leave_no_snapshot() {
    let s3 = S3Server::start("backups");
    let cluster = Cluster::start(1, 1).await;
    let (status, _) = cluster
        .upsert((0..200).map(|i| point(i, 0)).collect())
        .await;
    assert_eq!(status, 200);
    let map: ShardMap =
        serde_json::from_str(&std::fs::read_to_string(&cluster.map_path).unwrap()).unwrap();

    let wrong_key = s3.store("s3://backups/p", "not-the-secret");
    let err = take::take(&wrong_key, &map, None).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("signature")
            || err.to_string().contains("403")
            || err.to_string().to_lowercase().contains("access"),
        "wrong credentials: {err}"
    );
    let no_bucket = s3.store("s3://no-such-bucket/p", SECRET);
    let err = take::take(&no_bucket, &map, None).await.unwrap_err();
    assert!(
        err.to_string().contains("NoSuchBucket") || err.to_string().contains("404"),
        "missing bucket: {err}"
    );
    let down = StoreConfig {
        endpoint: format!("http://127.0.0.1:{}", free_port()),
        ..s3.store("s3://backups/p", SECRET)
    };
    let err = take::take(&down, &map, None).await.unwrap_err();
    assert!(!err.to_string().is_empty());
    // None of them left a snapshot; the collection still serves.
    let good = s3.store("s3://backups/p", SECRET);
    let repo = Repository::open(&good).unwrap();
    assert!(catalog::list(&repo, "docs").await.unwrap().is_empty());
    let (_, count) = cluster
        .post("/collections/docs/points/count", json!({}))
        .await;
    assert_eq!(count["result"]["count"].as_u64().unwrap(), 200);

    // Retention: three snapshots and an orphan (objects of a snapshot with no manifest).
    for id in ["a-1", "a-2", "a-3"] {
        take::take(&good, &map, Some(id.into())).await.unwrap();
    }
    let orphan = repo.path(&["docs", "a-0-failed", "docs-0", "records.bin"]);
    vecshard_snapshot::objects::put_bytes(&repo, &orphan, "records.bin", vec![1, 2, 3])
        .await
        .unwrap();
    // Retention over a schedule's own snapshots (a-2, a-3) leaves the others (a-1) alone;
    // the orphan goes either way.
    let only = vec!["a-2".to_string(), "a-3".to_string()];
    let pruned = catalog::prune(&repo, "docs", 1, &[], Some(&only))
        .await
        .unwrap();
    assert_eq!(pruned.expired, vec!["a-2".to_string()]);
    assert_eq!(pruned.orphans, vec!["a-0-failed".to_string()]);
    // Over every snapshot: the newest two stay.
    take::take(&good, &map, Some("a-2".into())).await.unwrap();
    let pruned = catalog::prune(&repo, "docs", 2, &[], None).await.unwrap();
    assert_eq!(pruned.expired, vec!["a-1".to_string()]);
    assert!(pruned.orphans.is_empty());
    let left: Vec<String> = catalog::list(&repo, "docs")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.snapshot_id)
        .collect();
    assert_eq!(left, vec!["a-2".to_string(), "a-3".to_string()]);
    assert_eq!(
        catalog::snapshot_ids(&repo, "docs").await.unwrap(),
        left,
        "no objects of pruned or failed snapshots are left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_uploading_replica_and_of_the_s3_server_mid_upload_leave_no_snapshot() {
    let mut s3 = S3Server::start("backups");
    let mut cluster = Cluster::start(1, 1).await;
    let (status, _) = cluster
        .upsert((0..500).map(|i| point(i, 0)).collect())
        .await;
    assert_eq!(status, 200);
    let map: ShardMap =
        serde_json::from_str(&std::fs::read_to_string(&cluster.map_path).unwrap()).unwrap();
    let store = s3.store("s3://backups/k", SECRET);
    let repo = Repository::open(&store).unwrap();

    // The S3 server hangs (SIGSTOP): the replica is caught inside its upload. Then the replica
    // is killed (-9) mid-upload, and the S3 server too.
    s3.signal("STOP");
    let taking = {
        let (store, map) = (store.clone(), map.clone());
        tokio::spawn(async move { take::take(&store, &map, Some("killed".into())).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !taking.is_finished(),
        "the upload should hang on the stopped server"
    );
    cluster.replicas[0][0].kill();
    let err = tokio::time::timeout(Duration::from_secs(30), taking)
        .await
        .expect("the snapshot fails once its replica is gone")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "UNAVAILABLE", "{err}");
    s3.kill_and_restart();
    cluster.replicas[0][0].start();
    wait_until_serving(&cluster).await;

    // No snapshot exists; the next one succeeds; retention collects what the killed one left.
    assert!(catalog::list(&repo, "docs").await.unwrap().is_empty());
    take::take(&store, &map, Some("next".into())).await.unwrap();
    catalog::prune(&repo, "docs", 10, &[], None).await.unwrap();
    assert_eq!(
        catalog::snapshot_ids(&repo, "docs").await.unwrap(),
        vec!["next".to_string()]
    );
    catalog::verify(&repo, "docs", "next").await.unwrap();
}

/// Waits until the cluster's router answers a count again.
async fn wait_until_serving(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = cluster
            .post("/collections/docs/points/count", json!({}))
            .await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_or_missing_object_makes_the_restore_refuse_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let store = StoreConfig {
        url: url.clone(),
        ..StoreConfig::default()
    };
    let cluster = Cluster::start(1, 1).await;
    let (status, _) = cluster
        .upsert((0..500).map(|i| point(i, 0)).collect())
        .await;
    assert_eq!(status, 200);
    let map: ShardMap =
        serde_json::from_str(&std::fs::read_to_string(&cluster.map_path).unwrap()).unwrap();
    take::take(&store, &map, Some("good".into())).await.unwrap();

    let request = vecshard_server::snapshot::RestoreRequest {
        store: store.clone(),
        collection: None,
        snapshot: "latest".into(),
        shard: None,
    };
    let config = config();
    let restore = |target: std::path::PathBuf| {
        let request = request.clone();
        let config = config.clone();
        async move {
            vecshard_server::snapshot::restore_if_empty(
                &request, &target, &config, PARTITIONS, "docs-0",
            )
            .await
        }
    };
    // Intact: restores; a second call leaves the filled directory alone.
    let ok = tempfile::tempdir().unwrap();
    assert!(restore(ok.path().join("d")).await.unwrap());
    assert!(!restore(ok.path().join("d")).await.unwrap());

    // A flipped byte in the records: refused, naming the object; nothing is served from it.
    let records = dir.path().join("docs/good/docs-0/records.bin");
    let mut bytes = std::fs::read(&records).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&records, &bytes).unwrap();
    let target = tempfile::tempdir().unwrap();
    let err = restore(target.path().join("d"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("docs/good/docs-0/records.bin") && err.contains("corrupt"),
        "{err}"
    );
    assert!(
        target.path().join("d/RESTORING").exists(),
        "an unfinished restore is marked, and starts over at the next start"
    );
    bytes[middle] ^= 0x40;
    std::fs::write(&records, &bytes).unwrap();
    assert!(
        restore(target.path().join("d")).await.unwrap(),
        "the retry starts over"
    );

    // A missing object is named too.
    std::fs::remove_file(dir.path().join("docs/good/docs-0/log.bin")).unwrap();
    let target = tempfile::tempdir().unwrap();
    let err = restore(target.path().join("d"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("log.bin") && err.contains("does not exist"),
        "{err}"
    );

    // A snapshot of another dimension is refused with the field and both values.
    let mut other = config.clone();
    other.dimension = DIM + 1;
    let target = tempfile::tempdir().unwrap();
    let err = vecshard_server::snapshot::restore_if_empty(
        &request,
        &target.path().join("d"),
        &other,
        PARTITIONS,
        "docs-0",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("dimension: the snapshot has 8, this collection 9"),
        "{err}"
    );
}
