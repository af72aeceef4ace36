//! `vecshard-bench`: loads wordnet-minilm-384 (or any dataset in its layout) into a running
//! shard over gRPC and reports durable ingest rate, time until fully indexed, recall@10 with
//! QPS and p50/p99 per ef and concurrency, a filtered run, server memory, and the same searches
//! on an in-process index so that the server's overhead is a ratio.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use serde_json::json;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_security::{ClientSecurity, ClientTls};

use vecshard_dataset::{self as dataset, Matrix};

mod channel;
mod sweep;
use channel::{BenchChannel, ClientChannel};

type Client = PointsClient<BenchChannel>;
type QdrantClient = vecshard_proto::qdrant::points_client::PointsClient<BenchChannel>;

/// The client shares the machine with the server it measures: jemalloc takes less of the CPU
/// than glibc's allocator did (malloc/free were ~6 % of the client's time under perf).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(about = "Benchmark a running vecshard shard over gRPC")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:6334")]
    grpc: String,
    #[arg(long, default_value = "../shared/datasets/wordnet-minilm-384")]
    dataset: PathBuf,
    #[arg(long, default_value = "docs")]
    collection: String,
    /// Load only the first N base vectors (ground truth is then recomputed exactly).
    #[arg(long)]
    points: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    ef: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Search requests per (ef, concurrency) cell.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Runs per cell, interleaved across cells; the run with the median QPS is reported, with
    /// the range of all runs (a shared VM's speed varies from second to second).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    load_concurrency: usize,
    /// gRPC connections the client spreads requests over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Points are already loaded: go straight to searches.
    #[arg(long)]
    skip_load: bool,
    /// PID of the server, to report its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Threads of the client's async runtime (1: a single-threaded runtime, the least CPU
    /// taken from a server on the same machine).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Compare `--grpc` (A) with this endpoint (B), e.g. a replica with a router in front of
    /// it: the same searches in alternating blocks, both tables and the p99 ratio B / A.
    /// Replaces the usual search grid and filtered run.
    #[arg(long)]
    compare_grpc: Option<String>,
    /// The client's gRPC channel: tonic's (three HTTP/2 writes per call) or vecshard's h2
    /// channel (one write per call, as the router uses towards replicas).
    #[arg(long, value_enum, default_value = "tonic")]
    client_channel: ClientChannel,
    /// The API that `--compare-grpc` (B) is searched through: vecshard's own
    /// (`vecshard.v1.Points/Search`) or the Qdrant-compatible one (`qdrant.Points/Search`, the
    /// same server port). With `qdrant`, B may be the same URL as `--grpc`.
    #[arg(long, value_enum, default_value = "vecshard")]
    compare_api: Api,
    /// Requests per block in `--compare-grpc` mode.
    #[arg(long, default_value_t = 500)]
    compare_block: usize,
    /// Filtered search over every keyword value, range and combined filters, two query sets
    /// (sweep.rs), at the first `--ef` and each `--concurrency`. Adds the integer field
    /// `updated_at` to the payloads it loads: start the server with
    /// `--index-field updated_at:integer`. Replaces the usual grid.
    #[arg(long)]
    filter_sweep: bool,
    /// Queries per query set in `--filter-sweep`.
    #[arg(long, default_value_t = 300)]
    sweep_queries: usize,
    /// Requests per filter and concurrency in `--filter-sweep`.
    #[arg(long, default_value_t = 1000)]
    sweep_requests: usize,
    /// The server's Prometheus endpoint (e.g. `http://127.0.0.1:16333/metrics`): the sweep
    /// reports each filter's plan from it, and waits for the value graphs to be built.
    #[arg(long)]
    metrics_url: Option<String>,
    /// CA (PEM) that `https://` servers' certificates are checked against.
    #[arg(long, env = "VECSHARD_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// API key sent with every call (`api-key`), to every server measured.
    #[arg(long, env = "VECSHARD_API_KEY")]
    api_key: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Api {
    Vecshard,
    Qdrant,
}

struct Data {
    base: Matrix<f32>,
    queries: Matrix<f32>,
    truth: Vec<Vec<u32>>,
    payloads: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The client shares the machine with the server: its threads are part of what is measured.
    let runtime = match args.client_threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(args))
}

/// `channels` gRPC connections to `url`, without message size limits (load batches are large).
async fn connect(args: &Args, url: &str) -> Result<Vec<Client>> {
    let security = client_security(args)?;
    let mut clients = Vec::new();
    for _ in 0..args.channels.max(1) {
        let channel = BenchChannel::connect(args.client_channel, url, &security).await?;
        clients.push(
            PointsClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        );
    }
    Ok(clients)
}

/// `channels` connections to `url`'s Qdrant-compatible gRPC API.
async fn connect_qdrant(args: &Args, url: &str) -> Result<Vec<QdrantClient>> {
    let security = client_security(args)?;
    let mut clients = Vec::new();
    for _ in 0..args.channels.max(1) {
        let channel = BenchChannel::connect(args.client_channel, url, &security).await?;
        clients.push(QdrantClient::new(channel));
    }
    Ok(clients)
}

/// `--tls-ca` and `--api-key` as the channels' security.
fn client_security(args: &Args) -> Result<ClientSecurity> {
    let tls = args
        .tls_ca
        .clone()
        .map(|ca| ClientTls::load(ca, None))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--tls-ca: {e}"))?;
    ClientSecurity::none()
        .with_tls(tls)
        .with_api_key(args.api_key.as_deref())
        .map_err(|e| anyhow::anyhow!("--api-key: {e}"))
}

async fn run(args: Args) -> Result<()> {
    let mut data = load_dataset(&args)?;
    if args.filter_sweep {
        sweep::add_synthetic_field(&mut data.payloads);
    }
    println!(
        "dataset: {} base × {} dims, {} queries",
        data.base.rows, data.base.cols, data.queries.rows
    );
    let clients = connect(&args, &args.grpc).await?;
    let mut report = serde_json::Map::new();

    if !args.skip_load {
        let (rate, index_secs) = load(&args, &clients, &data).await?;
        println!("ingest: {rate:.0} points/s acknowledged (durable); fully indexed {index_secs:.1} s after the last ack");
        report.insert("ingest_points_per_s".into(), json!(rate));
        report.insert("index_catchup_s".into(), json!(index_secs));
    }
    let info = clients[0]
        .clone()
        .info(pb::InfoRequest {
            collection: args.collection.clone(),
        })
        .await?
        .into_inner();
    println!(
        "server: {} points, hnsw m={} ef_construction={}, quantization {}, index memory {:.1} MiB",
        info.points,
        info.hnsw_m,
        info.hnsw_ef_construction,
        info.quantization,
        info.index_memory_bytes as f64 / 1048576.0
    );

    if args.filter_sweep {
        if let Some(url) = &args.metrics_url {
            sweep::wait_for_value_graphs(url).await?;
        }
        report.insert(
            "filter_sweep".into(),
            sweep::run(&args, &clients, &data).await?,
        );
        if let Some(pid) = args.server_pid {
            report_memory(pid, &mut report)?;
        }
        println!("\nJSON {}", serde_json::Value::Object(report));
        return Ok(());
    }

    if let Some(url) = &args.compare_grpc {
        let other = connect(&args, url).await?;
        let cells = match args.compare_api {
            Api::Vecshard => compare(&args, &clients, &other, &data).await?,
            Api::Qdrant => {
                let other: Vec<QdrantClient> = connect_qdrant(&args, url).await?;
                compare(&args, &clients, &other, &data).await?
            }
        };
        report.insert("compare".into(), cells);
        println!("\nJSON {}", serde_json::Value::Object(report));
        return Ok(());
    }

    println!(
        "\n| ef | concurrency | recall@10 | QPS (median of {}) | QPS range | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|",
        args.repeat.max(1)
    );
    let mut cells = Vec::new();
    let grid: Vec<(usize, usize)> = args
        .ef
        .iter()
        .flat_map(|&ef| args.concurrency.iter().map(move |&c| (ef, c)))
        .collect();
    // Repeats are interleaved (every cell once, then again) so that a slow spell of the
    // machine spreads over cells instead of sinking all runs of one.
    let mut runs_of: Vec<Vec<CellResult>> = grid.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.repeat.max(1) {
        for (i, &(ef, c)) in grid.iter().enumerate() {
            runs_of[i].push(run_searches(&args, &clients, &data, ef, c, None).await?);
        }
    }
    for (&(ef, c), mut runs) in grid.iter().zip(runs_of) {
        runs.sort_by(|a, b| a.qps.total_cmp(&b.qps));
        let (low, high) = (runs[0].qps, runs[runs.len() - 1].qps);
        let r = &runs[runs.len() / 2];
        println!(
            "| {ef} | {c} | {:.4} | {:.0} | {low:.0}–{high:.0} | {:.2} | {:.2} |",
            r.recall, r.qps, r.p50_ms, r.p99_ms
        );
        cells.push(json!({"ef": ef, "concurrency": c, "recall": r.recall, "qps": r.qps, "qps_min": low, "qps_max": high, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}));
    }
    report.insert("searches".into(), json!(cells));

    if let Some((lexname, share)) = pick_filter_value(&data.payloads) {
        let truth = filtered_truth(&data, &lexname);
        let filter = json!({"must": [{"key": "lexname", "match": {"value": lexname}}]}).to_string();
        let c = *args.concurrency.iter().max().unwrap_or(&8);
        let ef = args.ef.iter().copied().find(|e| *e >= 64).unwrap_or(64);
        let r = run_searches(
            &args,
            &clients,
            &Data {
                truth,
                ..data_view(&data)
            },
            ef,
            c,
            Some(filter),
        )
        .await?;
        println!(
            "\nfiltered (lexname = {lexname}, {:.1} % of points), ef {ef}, concurrency {c}: recall@10 {:.4}, {:.0} QPS, p50 {:.2} ms, p99 {:.2} ms",
            share * 100.0, r.recall, r.qps, r.p50_ms, r.p99_ms
        );
        report.insert("filtered".into(), json!({"lexname": lexname, "share": share, "recall": r.recall, "qps": r.qps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}));
    }

    if let Some(pid) = args.server_pid {
        report_memory(pid, &mut report)?;
    }

    println!("\nJSON {}", serde_json::Value::Object(report));
    Ok(())
}

fn data_view(d: &Data) -> Data {
    Data {
        base: Matrix {
            rows: 0,
            cols: d.base.cols,
            data: vec![],
        },
        queries: Matrix {
            rows: d.queries.rows,
            cols: d.queries.cols,
            data: d.queries.data.clone(),
        },
        truth: vec![],
        payloads: vec![],
    }
}

fn load_dataset(args: &Args) -> Result<Data> {
    let mut base = dataset::read_f32_matrix(&args.dataset.join("base.f16.npy"))?;
    let queries = dataset::read_f32_matrix(&args.dataset.join("queries.f32.npy"))?;
    let n = args.points.unwrap_or(base.rows).min(base.rows);
    let payloads = dataset::read_payloads(&args.dataset.join("base_payloads.jsonl"), n)?;
    let truth = if n == base.rows {
        let gt = dataset::read_i32_matrix(&args.dataset.join("groundtruth.i32.npy"))?;
        (0..gt.rows)
            .map(|q| gt.row(q)[..10].iter().map(|x| *x as u32).collect())
            .collect()
    } else {
        base.data.truncate(n * base.cols);
        base.rows = n;
        exact_truth(&base, &queries, |_| true)
    };
    Ok(Data {
        base,
        queries,
        truth,
        payloads,
    })
}

/// Exact top-10 by inner product over the rows that `keep` accepts.
fn exact_truth(
    base: &Matrix<f32>,
    queries: &Matrix<f32>,
    keep: impl Fn(usize) -> bool + Sync,
) -> Vec<Vec<u32>> {
    let rows: Vec<usize> = (0..base.rows).filter(|r| keep(*r)).collect();
    (0..queries.rows)
        .map(|q| top10_among(base, queries.row(q), &rows))
        .collect()
}

/// The 10 rows among `rows` with the highest inner product with `query`, best first.
fn top10_among(base: &Matrix<f32>, query: &[f32], rows: &[usize]) -> Vec<u32> {
    dataset::top_k_by_dot(base, query, rows, 10)
}

/// A lexname matching 1–5 % of the points (closest to 3 %), as the filtered run asks.
fn pick_filter_value(
    payloads: &[serde_json::Map<String, serde_json::Value>],
) -> Option<(String, f64)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in payloads {
        if let Some(l) = p.get("lexname").and_then(|v| v.as_str()) {
            *counts.entry(l.to_string()).or_default() += 1;
        }
    }
    let n = payloads.len().max(1) as f64;
    counts
        .into_iter()
        .map(|(l, c)| (l, c as f64 / n))
        .filter(|(_, s)| (0.01..=0.05).contains(s))
        .min_by(|a, b| (a.1 - 0.03).abs().total_cmp(&(b.1 - 0.03).abs()))
}

fn filtered_truth(data: &Data, lexname: &str) -> Vec<Vec<u32>> {
    exact_truth(&data.base, &data.queries, |r| {
        data.payloads[r].get("lexname").and_then(|v| v.as_str()) == Some(lexname)
    })
}

async fn load(args: &Args, clients: &[Client], data: &Data) -> Result<(f64, f64)> {
    let n = data.base.rows;
    let batches: Vec<std::ops::Range<usize>> = (0..n)
        .step_by(args.batch)
        .map(|s| s..(s + args.batch).min(n))
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let batches = Arc::new(batches);
    let mut tasks = Vec::new();
    for w in 0..args.load_concurrency.max(1) {
        let mut client = clients[w % clients.len()].clone();
        let (next, batches) = (next.clone(), batches.clone());
        let collection = args.collection.clone();
        // Each worker builds its own requests from its copy of the data.
        let base = data.base.data.clone();
        let cols = data.base.cols;
        let payloads: Vec<String> = data
            .payloads
            .iter()
            .map(|p| serde_json::Value::Object(p.clone()).to_string())
            .collect();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(range) = batches.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                let points = range
                    .clone()
                    .map(|r| pb::Point {
                        id: Some(pb::PointId {
                            kind: Some(pb::point_id::Kind::Num(r as u64)),
                        }),
                        vector: base[r * cols..(r + 1) * cols].to_vec(),
                        payload_json: payloads.get(r).cloned().unwrap_or_default(),
                    })
                    .collect();
                client
                    .upsert(pb::UpsertRequest {
                        collection: collection.clone(),
                        points,
                        version: 0,
                    })
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let acked = Instant::now();
    let mut client = clients[0].clone();
    loop {
        let info = client
            .info(pb::InfoRequest {
                collection: args.collection.clone(),
            })
            .await?
            .into_inner();
        if info.pending_points == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((n as f64 / load_secs, acked.elapsed().as_secs_f64()))
}

async fn run_searches(
    args: &Args,
    clients: &[Client],
    data: &Data,
    ef: usize,
    concurrency: usize,
    filter: Option<String>,
) -> Result<CellResult> {
    let total = args.requests.max(data.queries.rows);
    let search = SearchSpec::new(args, data, ef, filter);
    let block = search_block(clients, &search, concurrency, 0..total).await?;
    Ok(CellResult::of(&[block], data))
}

/// What every request of a cell asks: the queries (request i asks query i mod their number).
#[derive(Clone)]
struct SearchSpec {
    collection: String,
    queries: Arc<Vec<Vec<f32>>>,
    ef: usize,
    filter: String,
}

impl SearchSpec {
    fn new(args: &Args, data: &Data, ef: usize, filter: Option<String>) -> Self {
        SearchSpec {
            collection: args.collection.clone(),
            queries: Arc::new(
                (0..data.queries.rows)
                    .map(|q| data.queries.row(q).to_vec())
                    .collect(),
            ),
            ef,
            filter: filter.unwrap_or_default(),
        }
    }
}

/// Latencies of a run of requests, the ids answered to the first pass over the queries, and
/// the run's wall time.
struct Block {
    latencies: Vec<Duration>,
    results: Vec<(usize, Vec<u32>)>,
    wall: Duration,
}

/// A client that answers a search with the ids of its hits: vecshard's API or Qdrant's.
trait SearchClient: Clone + Send + 'static {
    fn search(
        &mut self,
        search: &SearchSpec,
        query: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u32>>> + Send;
}

impl SearchClient for Client {
    async fn search(&mut self, search: &SearchSpec, query: usize) -> Result<Vec<u32>> {
        let resp = PointsClient::search(
            self,
            pb::SearchRequest {
                collection: search.collection.clone(),
                vector: search.queries[query].clone(),
                limit: 10,
                filter_json: search.filter.clone(),
                ef: search.ef as u32,
                ..Default::default()
            },
        )
        .await?
        .into_inner();
        Ok(resp
            .result
            .iter()
            .filter_map(|h| match h.id.as_ref()?.kind {
                Some(pb::point_id::Kind::Num(n)) => Some(n as u32),
                _ => None,
            })
            .collect())
    }
}

impl SearchClient for QdrantClient {
    async fn search(&mut self, search: &SearchSpec, query: usize) -> Result<Vec<u32>> {
        use vecshard_proto::qdrant as q;
        anyhow::ensure!(
            search.filter.is_empty(),
            "the Qdrant API comparison runs unfiltered searches"
        );
        let resp = QdrantClient::search(
            self,
            q::SearchPoints {
                collection_name: search.collection.clone(),
                vector: search.queries[query].clone(),
                limit: 10,
                params: Some(q::SearchParams {
                    hnsw_ef: Some(search.ef as u64),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?
        .into_inner();
        Ok(resp
            .result
            .iter()
            .filter_map(|h| match h.id.as_ref()?.point_id_options {
                Some(q::point_id::PointIdOptions::Num(n)) => Some(n as u32),
                _ => None,
            })
            .collect())
    }
}

/// Sends requests `range` (request i asks query i mod the query count), `concurrency` at a
/// time, spread over `clients`.
async fn search_block<C: SearchClient>(
    clients: &[C],
    search: &SearchSpec,
    concurrency: usize,
    range: std::ops::Range<usize>,
) -> Result<Block> {
    let nq = search.queries.len();
    let end = range.end;
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut client = clients[w % clients.len()].clone();
        let next = next.clone();
        let search = search.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut results: Vec<(usize, Vec<u32>)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>((latencies, results));
                }
                let q = i % nq;
                let t = Instant::now();
                let ids = client.search(&search, q).await?;
                latencies.push(t.elapsed());
                if i < nq {
                    results.push((q, ids));
                }
            }
        }));
    }
    let mut block = Block {
        latencies: Vec::new(),
        results: Vec::new(),
        wall: Duration::ZERO,
    };
    for t in tasks {
        let (l, r) = t.await??;
        block.latencies.extend(l);
        block.results.extend(r);
    }
    block.wall = started.elapsed();
    Ok(block)
}

struct CellResult {
    recall: f64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl CellResult {
    /// Recall over the first pass of the queries, QPS over the blocks' summed wall time,
    /// percentiles over all their latencies.
    fn of(blocks: &[Block], data: &Data) -> CellResult {
        let mut latencies: Vec<Duration> = blocks
            .iter()
            .flat_map(|b| b.latencies.iter().copied())
            .collect();
        latencies.sort();
        let mut recall_sum = 0.0;
        for (q, ids) in blocks.iter().flat_map(|b| &b.results) {
            let truth = &data.truth[*q];
            recall_sum +=
                ids.iter().filter(|i| truth.contains(i)).count() as f64 / truth.len().max(1) as f64;
        }
        let wall: f64 = blocks.iter().map(|b| b.wall.as_secs_f64()).sum();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1000.0
        };
        CellResult {
            recall: recall_sum / data.queries.rows as f64,
            qps: latencies.len() as f64 / wall,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
        }
    }
}

/// `--compare-grpc`: the same searches against two endpoints (typically a shard replica and a
/// router in front of it), in alternating blocks of `--compare-block` requests, so that the
/// VM's slow and fast spells fall on both alike; reports both and the p99 ratio B / A.
async fn compare<B: SearchClient>(
    args: &Args,
    a: &[Client],
    b: &[B],
    data: &Data,
) -> Result<serde_json::Value> {
    println!(
        "\nA = {} (vecshard.v1), B = {} ({:?} API), blocks of {} requests alternating (A first \
         in even blocks)",
        args.grpc,
        args.compare_grpc.as_deref().unwrap_or_default(),
        args.compare_api,
        args.compare_block
    );
    println!("| ef | concurrency | recall A | recall B | QPS A | QPS B | p50 A | p50 B | p99 A ms | p99 B ms | p99 B / A |\n|---|---|---|---|---|---|---|---|---|---|---|");
    let total = args.requests.max(data.queries.rows);
    let step = args.compare_block.max(1);
    let mut cells = Vec::new();
    for &ef in &args.ef {
        for &c in &args.concurrency {
            let search = SearchSpec::new(args, data, ef, None);
            let (mut blocks_a, mut blocks_b) = (Vec::new(), Vec::new());
            for (k, start) in (0..total).step_by(step).enumerate() {
                let range = start..(start + step).min(total);
                if k % 2 == 0 {
                    blocks_a.push(search_block(a, &search, c, range.clone()).await?);
                    blocks_b.push(search_block(b, &search, c, range).await?);
                } else {
                    blocks_b.push(search_block(b, &search, c, range.clone()).await?);
                    blocks_a.push(search_block(a, &search, c, range).await?);
                }
            }
            let (ra, rb) = (
                CellResult::of(&blocks_a, data),
                CellResult::of(&blocks_b, data),
            );
            println!(
                "| {ef} | {c} | {:.4} | {:.4} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                ra.recall, rb.recall, ra.qps, rb.qps, ra.p50_ms, rb.p50_ms, ra.p99_ms, rb.p99_ms,
                rb.p99_ms / ra.p99_ms
            );
            cells.push(json!({"ef": ef, "concurrency": c,
                "a": {"recall": ra.recall, "qps": ra.qps, "p50_ms": ra.p50_ms, "p99_ms": ra.p99_ms},
                "b": {"recall": rb.recall, "qps": rb.qps, "p50_ms": rb.p50_ms, "p99_ms": rb.p99_ms},
                "p99_ratio": rb.p99_ms / ra.p99_ms}));
        }
    }
    Ok(json!(cells))
}

/// Prints the server's resident and peak memory and adds them to the report.
fn report_memory(pid: u32, report: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let (rss, hwm) = process_memory(pid)?;
    println!(
        "\nserver memory: resident {:.0} MiB (peak {:.0} MiB)",
        rss as f64 / 1048576.0,
        hwm as f64 / 1048576.0
    );
    report.insert("server_rss_bytes".into(), json!(rss));
    report.insert("server_peak_rss_bytes".into(), json!(hwm));
    Ok(())
}

fn process_memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}
