//! Latency autoscaling on the real node, with a real metrics pipeline: Prometheus scraping the
//! pods and prometheus-adapter serving `custom.metrics.k8s.io` with the chart's own rules
//! (both started by `e2e/run.sh`, which sets `VECSHARD_E2E_PROMETHEUS`). One shard starts with
//! one replica under a CPU limit, so a second replica adds real capacity:
//! - idle: the custom metrics API answers a number for every pod (0 for a pod without
//!   searches, not NaN) and the HPA's `ScalingActive` is true;
//! - searches with fresh vectors and a writer push the p95 over the target: the HPA, the
//!   ShardSet and the StatefulSet go to 2; the new replica is in the shard map as joining
//!   (writes, no reads) until it has caught up; every acknowledged point is found by a search
//!   of its own vector all along (4 checks a second); no write fails;
//! - 30 s of steady load without a change of replicas;
//! - the heavy load stops and Prometheus is stopped with it: for longer than a scale-down takes
//!   with metrics, the replicas stay at 2 and the HPA reports `ScalingActive` false (an outage
//!   freezes scaling; it must not read as "no load" and scale down);
//! - Prometheus starts again: back to 1 replica within the stabilization window, with
//!   searches, writes and the read-your-writes check still succeeding while the replica leaves;
//!   every acknowledged write is there at the end.

use super::*;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use vecshard_operator::crd::ShardSet;

/// Points loaded before the test scales anything.
const POINTS: usize = 6_000;
/// Written points use dataset rows from here (the loaded ones are below).
const WRITE_ROWS: usize = 20_000;
const SCALE_DOWN_WINDOW_S: u64 = 30;
const HEAVY_SEARCHERS: usize = 6;

fn target_ms() -> u32 {
    std::env::var("VECSHARD_E2E_TARGET_P95_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn autoscaling_follows_latency_and_a_new_replica_serves_only_once_caught_up() -> Result<()> {
    let t = Instant::now();
    let log = |what: &str| super::log(t, what);
    let client = client().await?;
    let ns = namespace(&client, "autoscale").await?;
    let provisioner = tokio::spawn(provision_local_volumes(client.clone(), ns.clone()));
    storage_class(&client).await?;

    // ---- 1 shard x 1 replica, autoscaling 1..2 on the p95 ----
    let mut vc = collection(NAME, 1, 1);
    let spec = &mut vc.spec;
    spec.image = SERVER_IMAGE.into();
    spec.storage.storage_class_name = Some(STORAGE_CLASS.into());
    spec.partitions = 16;
    spec.router.replicas = 1;
    // The limit makes a second replica add capacity (without one, both share the node's cores
    // and the HPA pegs at its maximum).
    spec.resources = Some(serde_json::from_value(json!({
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "300m"},
    }))?);
    spec.router.resources = Some(serde_json::from_value(
        json!({"requests": {"cpu": "10m", "memory": "64Mi"}}),
    )?);
    let target = target_ms();
    spec.autoscaling = Some(serde_json::from_value(json!({
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetP95LatencyMs": target,
        "scaleUpStabilizationSeconds": 0,
        "scaleDownStabilizationSeconds": SCALE_DOWN_WINDOW_S,
    }))?);
    create(&client, &ns, &vc).await?;
    phase(&client, &ns, NAME, "Ready", POD_WAIT).await?;
    let router = router_client(&client, &ns).await?;
    let data = Dataset::open(Path::new(&env("VECSHARD_E2E_DATASET")?))?;
    for start in (0..POINTS).step_by(500) {
        let points = (start..start + 500)
            .map(|i| data.point(i as u64, i))
            .collect();
        upsert(&router, points).await?;
    }
    ensure!(count(&router).await? == POINTS as u64);
    log(&format!(
        "collection Ready with 1 replica, {POINTS} points loaded; target p95 {target} ms"
    ));

    // ---- idle: a number for every pod, the HPA active ----
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    let idle = eventually(
        "the custom metrics API to answer for every pod and the shard HPA to be active",
        Duration::from_secs(180),
        || async {
            let values = pod_latencies(&client, &ns)
                .await
                .map_err(|e| e.to_string())?;
            let pods = ready_pods(&client, &ns).await.map_err(|e| e.to_string())?;
            let hpa = hpas.get("docs-0").await.map_err(|e| e.to_string())?;
            let active = hpa_condition(&hpa, "ScalingActive");
            let state = format!("metrics {values:?}, pods {pods:?}, ScalingActive {active:?}");
            let all = pods.iter().all(|p| values.contains_key(p));
            if all && active.as_ref().is_some_and(|(s, _)| s == "True") {
                Ok(Some(state))
            } else {
                Err(state)
            }
        },
    )
    .await?;
    log(&format!("idle: {idle}"));
    let phase = Arc::new(Mutex::new("idle"));
    let timeline = timeline(client.clone(), ns.clone(), phase.clone());
    let set_phase = |p: &'static str| *phase.lock().unwrap() = p;
    tokio::time::sleep(Duration::from_secs(6)).await;
    set_phase("load");

    // ---- load: the HPA scales the shard to 2; the new replica joins before it serves ----
    let written = WriteLoad::start(router.clone(), data.clone());
    let checker = ReadYourWrites::start(router.clone(), data.clone(), written.acked.clone());
    let heavy: Vec<_> = (0..HEAVY_SEARCHERS)
        .map(|_| searcher(router.clone(), data.clone()))
        .collect();
    let maps = MapWatch::start(client.clone(), ns.clone());
    let scaled = eventually(
        "the HPA, the ShardSet and the StatefulSet to reach 2 replicas, both serving",
        Duration::from_secs(300),
        || async {
            let state = scale_state(&client, &ns).await.map_err(|e| e.to_string())?;
            if state.settled(2) {
                Ok(Some(state.describe()))
            } else {
                Err(state.describe())
            }
        },
    )
    .await?;
    log(&format!("scaled up: {scaled}"));
    log(&format!(
        "latencies under load: {:?}",
        pod_latencies(&client, &ns).await?
    ));
    let seen = maps.snapshot();
    ensure!(
        seen.joined,
        "the new replica was never listed as joining in the shard map: {:?}",
        seen.history
    );
    log(&format!(
        "shard maps seen while scaling up: {:?}",
        seen.history
    ));

    // ---- 30 s of steady load: no change ----
    set_phase("steady");
    let steady_from = Instant::now();
    while steady_from.elapsed() < Duration::from_secs(30) {
        let state = scale_state(&client, &ns).await?;
        ensure!(
            state.settled(2),
            "replicas changed under steady load: {}",
            state.describe()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    log("steady for 30 s at 2 replicas");

    // ---- load stops during a Prometheus outage: scaling freezes at 2 ----
    let mut heavy_searched = Vec::new();
    for s in heavy {
        heavy_searched.push(s.stop().await?);
    }
    let light = searcher_paced(router.clone(), data.clone(), Duration::from_millis(200));
    prometheus_ctl("stop")?;
    set_phase("outage");
    let outage = Instant::now();
    // Longer than the scale-down below takes with metrics: window + rate window + syncs.
    let outage_for = Duration::from_secs(SCALE_DOWN_WINDOW_S + 30 + 30);
    let mut frozen = None;
    let mut reported = None;
    // The operator looks at the HPAs at least once a minute: give its condition that long
    // after the HPA's own, if the outage window alone did not.
    while outage.elapsed() < outage_for
        || (reported.is_none() && outage.elapsed() < outage_for + Duration::from_secs(60))
    {
        let state = scale_state(&client, &ns).await?;
        ensure!(
            state.settled(2),
            "replicas changed while Prometheus was down: {}",
            state.describe()
        );
        let hpa = hpas.get("docs-0").await?;
        if let Some((status, why)) = hpa_condition(&hpa, "ScalingActive") {
            if status == "False" {
                frozen = Some(why);
            }
        }
        if let Some((status, why)) = collection_condition(&client, &ns, "AutoscalingActive").await?
        {
            if status == "False" && why.starts_with("MetricsUnavailable") {
                reported = Some(why);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let frozen = frozen.context("the HPA never reported the metric missing during the outage")?;
    let reported = reported.context(
        "the collection's AutoscalingActive condition never turned False during the outage",
    )?;
    log(&format!(
        "the collection said AutoscalingActive False: {reported}"
    ));
    log(&format!(
        "Prometheus down {:.0}s with the heavy load gone: replicas held at 2; ScalingActive \
         False ({frozen})",
        outage.elapsed().as_secs_f64()
    ));
    prometheus_ctl("start")?;
    set_phase("light");

    // ---- metrics back: down to 1 within the window, searches and writes still succeed ----
    let stopped = Instant::now();
    let down = eventually(
        "back to 1 replica once the load stopped",
        // The stabilization window, plus the rule's 30 s rate window (the p95 stays high that
        // long after the load stops), plus scrapes and HPA syncs.
        Duration::from_secs(SCALE_DOWN_WINDOW_S + 30 + 60),
        || async {
            let state = scale_state(&client, &ns).await.map_err(|e| e.to_string())?;
            let latencies = pod_latencies(&client, &ns).await.unwrap_or_default();
            let seen = format!("{}; p95 per pod {latencies:?}", state.describe());
            if state.settled(1) {
                Ok(Some(seen))
            } else {
                Err(seen)
            }
        },
    )
    .await?;
    log(&format!(
        "scaled down {:.0}s after Prometheus came back (stabilization {SCALE_DOWN_WINDOW_S}s): \
         {down}",
        stopped.elapsed().as_secs_f64()
    ));
    let active = eventually(
        "the collection's AutoscalingActive condition to be True again",
        Duration::from_secs(90),
        || async {
            match collection_condition(&client, &ns, "AutoscalingActive").await {
                Ok(Some((status, why))) if status == "True" => Ok(Some(why)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    log(&format!("AutoscalingActive True again: {active}"));
    // A few more seconds of reads and writes on the one replica left.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let light = light.stop().await?;
    let samples = timeline.stop().await?;
    let path = std::env::var("VECSHARD_E2E_TIMELINE")
        .unwrap_or_else(|_| "/tmp/vecshard-autoscale-timeline.csv".into());
    std::fs::write(&path, samples.join("\n") + "\n")?;
    log(&format!(
        "timeline ({} samples) in {path}; plot: python3 e2e/plot-autoscale.py {path}",
        samples.len() - 1
    ));
    let checked = checker.stop().await?;
    let written = written.stop().await?;
    maps.stop();

    // ---- nothing failed, nothing lost ----
    let failed_searches: u64 = heavy_searched.iter().map(|s| s.failed).sum::<u64>() + light.failed;
    let ok_searches: u64 =
        heavy_searched.iter().map(|s| s.ok + s.retried).sum::<u64>() + light.ok + light.retried;
    log(&format!(
        "searches: {ok_searches} ok, {failed_searches} failed; read-your-writes checks: {} ok, \
         {} misses, {} errors; writes: {} points acknowledged, {} failed attempts",
        checked.ok,
        checked.misses.len(),
        checked.errors,
        written.acked.len(),
        written.failed
    ));
    ensure!(
        failed_searches == 0,
        "searches failed (after a retry): {:?} {:?}",
        heavy_searched
            .iter()
            .flat_map(|s| s.last_failures.clone())
            .collect::<Vec<_>>(),
        light.last_failures
    );
    ensure!(
        checked.misses.is_empty(),
        "acknowledged points not found by a search of their own vector: {:?}",
        checked.misses
    );
    ensure!(checked.ok > 0, "the read-your-writes check never ran");
    ensure!(
        checked.errors == 0,
        "{} read-your-writes searches failed twice",
        checked.errors
    );
    ensure!(
        written.failed == 0,
        "{} write attempts failed while the shard scaled",
        written.failed
    );
    let missing = missing_ids(&router, &written.acked).await?;
    ensure!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    let total = count(&router).await?;
    ensure!(
        total == (POINTS + written.acked.len()) as u64,
        "count {total}, expected {}",
        POINTS + written.acked.len()
    );
    log(&format!("all {total} points there"));

    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .delete(NAME, &DeleteParams::default())
        .await?;
    provisioner.abort();
    Ok(())
}

/// Every 2 s until stopped: the test's phase, the highest p95 over the shard pods (as the HPA
/// reads it), the HPA's desired replicas, the ready shard pods and the serving replicas in
/// the map, as CSV lines (a header first). `e2e/plot-autoscale.py` draws them.
fn timeline(
    client: Client,
    ns: String,
    phase: Arc<Mutex<&'static str>>,
) -> Background<Vec<String>> {
    let started = Instant::now();
    let header = "seconds,phase,p95_ms,desired,ready,serving".to_string();
    Background::start(vec![header], move |mut lines| {
        let (client, ns, phase) = (client.clone(), ns.clone(), phase.clone());
        async move {
            let at = started.elapsed().as_secs_f64();
            let p95 = pod_latencies(&client, &ns).await.ok().and_then(|values| {
                values
                    .iter()
                    .filter(|(pod, _)| !pod.contains("router"))
                    .map(|(_, v)| v * 1000.0)
                    .reduce(f64::max)
            });
            if let Ok(state) = scale_state(&client, &ns).await {
                let phase = *phase.lock().unwrap();
                let p95 = p95.map_or(String::new(), |v| format!("{v:.1}"));
                lines.push(format!(
                    "{at:.1},{phase},{p95},{},{},{}",
                    state.hpa_desired, state.ready_pods, state.serving
                ));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            lines
        }
    })
}

/// `(status, "reason: message")` of the collection's condition `kind`.
async fn collection_condition(
    client: &Client,
    ns: &str,
    kind: &str,
) -> Result<Option<(String, String)>> {
    let vc = Api::<VectorCollection>::namespaced(client.clone(), ns)
        .get(NAME)
        .await?;
    Ok(vc.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == kind)
            .map(|c| (c.status, format!("{}: {}", c.reason, c.message)))
    }))
}

/// Stops or starts the run's Prometheus (`e2e/run.sh` writes the script).
fn prometheus_ctl(action: &str) -> Result<()> {
    let ctl = env("VECSHARD_E2E_PROMETHEUS_CTL")?;
    let status = std::process::Command::new(&ctl).arg(action).status()?;
    ensure!(status.success(), "{ctl} {action}: {status}");
    Ok(())
}

/// `vecshard_search_p95_seconds` per pod of `ns`, as the HPA controller reads it.
async fn pod_latencies(client: &Client, ns: &str) -> Result<BTreeMap<String, f64>> {
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/vecshard_search_p95_seconds"
    );
    let request = http::Request::get(path).body(Vec::new())?;
    let list: serde_json::Value = client.request(request).await?;
    let mut values = BTreeMap::new();
    for item in list["items"].as_array().context("a metric value list")? {
        let pod = item["describedObject"]["name"]
            .as_str()
            .context("describedObject.name")?;
        let value = item["value"].as_str().context("value")?;
        values.insert(pod.to_string(), quantity(value)?);
    }
    Ok(values)
}

/// A Kubernetes quantity as the adapter writes metric values: `0`, `12m`, `1500u`, `2`.
fn quantity(text: &str) -> Result<f64> {
    let (number, scale) = match text.char_indices().last() {
        Some((i, 'm')) => (&text[..i], 1e-3),
        Some((i, 'u')) => (&text[..i], 1e-6),
        Some((i, 'n')) => (&text[..i], 1e-9),
        Some((i, 'k')) => (&text[..i], 1e3),
        _ => (text, 1.0),
    };
    Ok(number
        .parse::<f64>()
        .with_context(|| format!("metric value {text:?}"))?
        * scale)
}

fn hpa_condition(hpa: &HorizontalPodAutoscaler, kind: &str) -> Option<(String, String)> {
    hpa.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status.clone(),
                format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                ),
            )
        })
}

/// Replica counts along the scaling chain, and the shard map's serving and joining replicas.
#[derive(Debug)]
struct ScaleState {
    hpa_desired: i32,
    shard_set: i32,
    stateful_set: i32,
    ready_pods: usize,
    serving: usize,
    joining: usize,
}

impl ScaleState {
    fn settled(&self, n: usize) -> bool {
        let n32 = n as i32;
        self.hpa_desired == n32
            && self.shard_set == n32
            && self.stateful_set == n32
            && self.ready_pods == n
            && self.serving == n
            && self.joining == 0
    }

    fn describe(&self) -> String {
        format!(
            "HPA desired {}, ShardSet {}, StatefulSet {}, ready shard pods {}, map: {} serving, {} joining",
            self.hpa_desired,
            self.shard_set,
            self.stateful_set,
            self.ready_pods,
            self.serving,
            self.joining
        )
    }
}

async fn scale_state(client: &Client, ns: &str) -> Result<ScaleState> {
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .get("docs-0")
        .await?;
    let ss = Api::<ShardSet>::namespaced(client.clone(), ns)
        .get("docs-0")
        .await?;
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get("docs-0")
        .await?;
    let map = shard_map(client, ns).await?;
    let shard = map.shards.first().context("a shard in the map")?;
    Ok(ScaleState {
        hpa_desired: hpa.status.map_or(0, |s| s.desired_replicas),
        shard_set: ss.spec.replicas,
        stateful_set: sts.spec.and_then(|s| s.replicas).unwrap_or(0),
        ready_pods: ready_pods(client, ns)
            .await?
            .iter()
            .filter(|p| p.starts_with("docs-0-"))
            .count(),
        serving: shard.replicas.len(),
        joining: shard.joining.len(),
    })
}

async fn shard_map(client: &Client, ns: &str) -> Result<vecshard_proto::shard_map::ShardMap> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("docs-shard-map")
        .await?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(vecshard_proto::shard_map::CONFIGMAP_KEY))
        .context("the shard map in its ConfigMap")?;
    Ok(serde_json::from_str(text)?)
}

/// Polls the shard map while the test runs: its versions with their serving/joining counts,
/// and whether a replica was ever listed as joining.
struct MapWatch {
    seen: Arc<Mutex<SeenMaps>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Debug, Default)]
struct SeenMaps {
    joined: bool,
    /// (version, serving, joining), each version once.
    history: Vec<(u64, usize, usize)>,
}

impl MapWatch {
    fn start(client: Client, ns: String) -> MapWatch {
        let seen = Arc::new(Mutex::new(SeenMaps::default()));
        let out = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(map) = shard_map(&client, &ns).await {
                    let shard = &map.shards[0];
                    let mut seen = out.lock().unwrap();
                    seen.joined |= !shard.joining.is_empty();
                    if seen.history.last().map(|h| h.0) != Some(map.version) {
                        seen.history
                            .push((map.version, shard.replicas.len(), shard.joining.len()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        MapWatch { seen, task }
    }

    fn snapshot(&self) -> SeenMaps {
        self.seen.lock().unwrap().clone()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// The vector of the `k`-th written point.
fn written_row(k: u64) -> usize {
    WRITE_ROWS + (k as usize % 20_000)
}

const WRITE_BASE: u64 = 2_000_000;

/// Upserts batches of 10 new points (ids from 2,000,000) with a short pause, recording the
/// acknowledged ids where the read-your-writes check can see them.
struct WriteLoad {
    acked: Arc<Mutex<Vec<u64>>>,
    inner: Background<u64>,
}

struct WriteTotals {
    acked: Vec<u64>,
    failed: u64,
}

impl WriteLoad {
    fn start(router: Points, data: Dataset) -> WriteLoad {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let shared = acked.clone();
        let inner = Background::start(0u64, move |mut failed| {
            let (router, data, shared) = (router.clone(), data.clone(), shared.clone());
            async move {
                let next = shared.lock().unwrap().len() as u64;
                let ids: Vec<u64> = (next..next + 10).map(|k| WRITE_BASE + k).collect();
                let points = ids
                    .iter()
                    .map(|&id| data.point(id, written_row(id - WRITE_BASE)))
                    .collect();
                match tokio::time::timeout(Duration::from_secs(30), upsert(&router, points)).await {
                    Ok(Ok(())) => shared.lock().unwrap().extend(ids),
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                failed
            }
        });
        WriteLoad { acked, inner }
    }

    async fn stop(self) -> Result<WriteTotals> {
        let failed = self.inner.stop().await?;
        let acked = self.acked.lock().unwrap().clone();
        Ok(WriteTotals { acked, failed })
    }
}

#[derive(Default)]
struct Checked {
    ok: u64,
    /// Acknowledged ids a search of their own vector did not return.
    misses: Vec<u64>,
    /// Searches that failed twice (counted, not misses).
    errors: u64,
}

/// Searches for the vector of the newest acknowledged point and of one older point in turn
/// (sweeping through all of them), through the router: each must come back. A replica that
/// served reads before it had caught up would miss some. (A graph search with a wide beam, not
/// an exact scan: the debug-built server's scan is slow enough that a check every 250 ms would
/// keep the pod's p95 up on its own.)
struct ReadYourWrites;

impl ReadYourWrites {
    fn start(router: Points, data: Dataset, acked: Arc<Mutex<Vec<u64>>>) -> Background<Checked> {
        let mut sweep = 0usize;
        Background::start(Checked::default(), move |mut c| {
            let (router, data) = (router.clone(), data.clone());
            let picks: Vec<u64> = {
                let acked = acked.lock().unwrap();
                match acked.len() {
                    0 => Vec::new(),
                    n => {
                        sweep = (sweep + 7) % n;
                        vec![acked[n - 1], acked[sweep]]
                    }
                }
            };
            async move {
                for id in picks {
                    let vector = data.base[written_row(id - WRITE_BASE)].clone();
                    let mut result = own_vector_ids(&router, vector.clone()).await;
                    if result.is_err() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        result = own_vector_ids(&router, vector).await;
                    }
                    match result {
                        Ok(ids) if ids.contains(&id) => c.ok += 1,
                        Ok(_) => c.misses.push(id),
                        Err(_) => c.errors += 1,
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                c
            }
        })
    }
}

/// Ids of a top-10 search with a wide beam (ef 256): the point whose vector it is comes back.
async fn own_vector_ids(router: &Points, vector: Vec<f32>) -> Result<Vec<u64>> {
    let hits = router
        .clone()
        .search(SearchRequest {
            collection: NAME.into(),
            vector,
            limit: 10,
            ef: 256,
            ..Default::default()
        })
        .await?
        .into_inner()
        .result;
    Ok(hits.iter().filter_map(|h| num_of(h.id.as_ref())).collect())
}
