//! Command line of `vecshard-server`. Every flag can also come from an environment variable
//! `VECSHARD_…` or from a YAML file given by `--config`; precedence is flag > env > file >
//! default. The file is applied by turning its keys into the matching environment variables
//! before clap parses, so the three sources share one definition of every option.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use vecshard_core::model::{
    CollectionConfig, HnswParams, IndexKind, IndexedField, Metric, Quantization,
};
use vecshard_engine::shard::ShardOptions;
use vecshard_gpu::DeviceChoice;
use vecshard_router::{HedgePolicy, MapSource, RouterOptions, WriteConsistency};

#[derive(Parser, Debug)]
#[command(
    name = "vecshard-server",
    version,
    about = "vecshard: sharded vector database server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve one shard of one collection.
    Shard(Box<ShardArgs>),
    /// Serve a collection spread over shards: route writes, fan searches out, merge results.
    Router(RouterArgs),
    /// Run a local cluster: every shard replica as a child process, a router in front.
    Dev(DevArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// YAML file with any of these options (keys as the long flag names).
    #[arg(long, env = "VECSHARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Shard map file (JSON, format in docs/cluster.md); re-read when its version grows.
    #[arg(
        long,
        env = "VECSHARD_SHARD_MAP",
        required_unless_present = "shard_map_configmap",
        conflicts_with = "shard_map_configmap"
    )]
    pub shard_map: Option<PathBuf>,
    /// Or: the Kubernetes ConfigMap NAMESPACE/NAME holding the map under `shard-map.json`
    /// (written by the operator), watched through the API server.
    #[arg(long, env = "VECSHARD_SHARD_MAP_CONFIGMAP", value_parser = MapSource::config_map)]
    pub shard_map_configmap: Option<MapSource>,
    #[arg(long, env = "VECSHARD_GRPC_LISTEN", default_value = "127.0.0.1:6334")]
    pub grpc_listen: SocketAddr,
    #[arg(long, env = "VECSHARD_HTTP_LISTEN", default_value = "127.0.0.1:6333")]
    pub http_listen: SocketAddr,
    /// Replicas that must acknowledge a write: one, quorum (majority) or all.
    #[arg(
        long,
        env = "VECSHARD_WRITE_CONSISTENCY",
        value_parser = one_of::<WriteConsistency>(&["one", "quorum", "all"]),
        default_value = "quorum"
    )]
    pub write_consistency: WriteConsistency,
    /// Deadline of each call to a shard, in milliseconds.
    #[arg(long, env = "VECSHARD_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    #[arg(long, env = "VECSHARD_MAX_BATCH_POINTS", default_value_t = 10_000)]
    pub max_batch_points: usize,
    #[arg(long, env = "VECSHARD_MAX_BATCH_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_batch_bytes: usize,
    /// Search results the router keeps (LRU); 0 disables the cache. Any write empties it.
    #[arg(long, env = "VECSHARD_CACHE_ENTRIES", default_value_t = 10_000)]
    pub cache_entries: usize,
    /// Age in milliseconds after which a cached result is not served.
    #[arg(long, env = "VECSHARD_CACHE_TTL_MS", default_value_t = 60_000)]
    pub cache_ttl_ms: u64,
    /// Send a read to a second replica when the first has not answered after the shard's
    /// recent p95 latency (the first answer wins).
    #[arg(long, env = "VECSHARD_HEDGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub hedge: bool,
    /// Lower bound of the hedge delay in milliseconds.
    #[arg(long, env = "VECSHARD_HEDGE_MIN_DELAY_MS", default_value_t = 1)]
    pub hedge_min_delay_ms: u64,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

impl RouterArgs {
    /// `client`: how the router calls the replicas (`SecurityArgs::client`).
    pub fn router_options(&self, client: vecshard_security::ClientSecurity) -> RouterOptions {
        RouterOptions {
            shard_map: match (&self.shard_map, &self.shard_map_configmap) {
                (_, Some(cm)) => cm.clone(),
                (Some(path), None) => MapSource::File(path.clone()),
                (None, None) => unreachable!("clap requires one of the two"),
            },
            write_consistency: self.write_consistency,
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms.max(1)),
            max_batch_points: self.max_batch_points,
            max_batch_bytes: self.max_batch_bytes,
            cache_entries: self.cache_entries,
            cache_ttl: std::time::Duration::from_millis(self.cache_ttl_ms),
            hedge: HedgePolicy {
                enabled: self.hedge,
                min_delay: std::time::Duration::from_millis(self.hedge_min_delay_ms),
                ..HedgePolicy::default()
            },
            client,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    #[arg(long, env = "VECSHARD_COLLECTION", default_value = "docs")]
    pub collection: String,
    #[arg(long, env = "VECSHARD_DIMENSION", default_value_t = 384)]
    pub dimension: usize,
    #[arg(long, env = "VECSHARD_METRIC", value_parser = one_of::<Metric>(&["cosine", "dot", "l2"]), default_value = "cosine")]
    pub metric: Metric,
    #[arg(long, env = "VECSHARD_SHARDS", default_value_t = 2)]
    pub shards: usize,
    /// Shard processes started (at least --shards): the extra ones own no partitions until
    /// `vecshardctl rebalance --shards N` moves some to them.
    #[arg(long, env = "VECSHARD_MAX_SHARDS")]
    pub max_shards: Option<usize>,
    #[arg(long, env = "VECSHARD_REPLICAS", default_value_t = 2)]
    pub replicas: usize,
    /// Hash partitions of the collection (fixed once data exists).
    #[arg(long, env = "VECSHARD_PARTITIONS", default_value_t = 256)]
    pub partitions: u32,
    /// Each replica keeps its data in DATA_DIR/shard-I-replica-J.
    #[arg(long, env = "VECSHARD_DATA_DIR", default_value = "./vecshard-data")]
    pub data_dir: PathBuf,
    /// Router HTTP address.
    #[arg(long, env = "VECSHARD_HTTP_LISTEN", default_value = "127.0.0.1:6333")]
    pub http_listen: SocketAddr,
    /// Router gRPC address.
    #[arg(long, env = "VECSHARD_GRPC_LISTEN", default_value = "127.0.0.1:6334")]
    pub grpc_listen: SocketAddr,
    /// First port of the replicas (each takes two: gRPC, then HTTP).
    #[arg(long, env = "VECSHARD_BASE_PORT", default_value_t = 7100)]
    pub base_port: u16,
    #[arg(long, env = "VECSHARD_QUANTIZATION", value_parser = one_of::<Quantization>(&["f32", "f16", "i8", "b1"]), default_value = "f16")]
    pub quantization: Quantization,
    /// `hnsw` (a graph per shard) or `flat` (no graph: every search is an exact scan).
    #[arg(long, env = "VECSHARD_INDEX", value_parser = one_of::<IndexKind>(&["hnsw", "flat"]), default_value = "hnsw")]
    pub index: IndexKind,
    /// Payload field to index, NAME:KIND (keyword, integer, float); repeat or comma-separate.
    #[arg(
        long = "index-field",
        env = "VECSHARD_INDEX_FIELD",
        value_delimiter = ',',
        default_value = "pos:keyword,lexname:keyword"
    )]
    pub index_fields: Vec<IndexedField>,
    #[arg(
        long,
        env = "VECSHARD_WRITE_CONSISTENCY",
        value_parser = one_of::<WriteConsistency>(&["one", "quorum", "all"]),
        default_value = "quorum"
    )]
    pub write_consistency: WriteConsistency,
    /// Start the cluster from a snapshot in this repository (`s3://bucket/prefix`,
    /// `file:///dir` or a path): the snapshot's shard count and partition assignment are
    /// used, and every replica fills its empty data directory from its shard's snapshot.
    #[arg(long, env = "VECSHARD_RESTORE_FROM")]
    pub restore_from: Option<String>,
    /// Snapshot to start from: its id, or `latest`.
    #[arg(long, env = "VECSHARD_RESTORE_SNAPSHOT", default_value = "latest")]
    pub restore_snapshot: String,
    /// Collection whose snapshot to start from (default: --collection).
    #[arg(long, env = "VECSHARD_RESTORE_COLLECTION")]
    pub restore_collection: Option<String>,
    #[command(flatten)]
    pub store: vecshard_snapshot::args::StoreArgs,
    /// Require this API key (read-write) on the router; repeat for several. Off by default.
    #[arg(long = "api-key", env = "VECSHARD_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// A read-only API key (search, get, count, scroll, info); repeat for several.
    #[arg(
        long = "read-only-api-key",
        env = "VECSHARD_READ_ONLY_API_KEY",
        value_delimiter = ','
    )]
    pub read_only_api_keys: Vec<String>,
    /// Serve TLS on every port with a CA and certificate for localhost generated into
    /// DATA_DIR/tls (kept across restarts); the shards accept only the router's and each
    /// other's certificates. Clients trust DATA_DIR/tls/ca.crt.
    #[arg(long, env = "VECSHARD_TLS", default_value_t = false)]
    pub tls: bool,
    /// Search results the router keeps (LRU); 0 disables its cache. Any write empties it.
    #[arg(long, env = "VECSHARD_CACHE_ENTRIES", default_value_t = 10_000)]
    pub cache_entries: usize,
}

#[derive(Args, Debug, Clone)]
pub struct ShardArgs {
    /// YAML file with any of these options (keys as the long flag names).
    #[arg(long, env = "VECSHARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Collection name; requests naming another collection get NOT_FOUND.
    #[arg(long, env = "VECSHARD_COLLECTION", default_value = "docs")]
    pub collection: String,
    /// Vector dimension (fixed for the life of the collection).
    #[arg(long, env = "VECSHARD_DIMENSION")]
    pub dimension: usize,
    #[arg(long, env = "VECSHARD_METRIC", value_parser = one_of::<Metric>(&["cosine", "dot", "l2"]), default_value = "cosine")]
    pub metric: Metric,
    #[arg(long, env = "VECSHARD_DATA_DIR", default_value = "./vecshard-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "VECSHARD_GRPC_LISTEN", default_value = "127.0.0.1:6334")]
    pub grpc_listen: SocketAddr,
    #[arg(long, env = "VECSHARD_HTTP_LISTEN", default_value = "127.0.0.1:6333")]
    pub http_listen: SocketAddr,
    /// HNSW links per node.
    #[arg(long, env = "VECSHARD_HNSW_M", default_value_t = 16)]
    pub hnsw_m: usize,
    #[arg(long, env = "VECSHARD_HNSW_EF_CONSTRUCTION", default_value_t = 128)]
    pub hnsw_ef_construction: usize,
    /// Default search breadth; requests may override it with `ef`.
    #[arg(long, env = "VECSHARD_HNSW_EF_SEARCH", default_value_t = 64)]
    pub hnsw_ef_search: usize,
    /// How the graph stores vectors; full-precision copies are kept for exact rescoring.
    #[arg(long, env = "VECSHARD_QUANTIZATION", value_parser = one_of::<Quantization>(&["f32", "f16", "i8", "b1"]), default_value = "f16")]
    pub quantization: Quantization,
    /// `hnsw`: searches walk an HNSW graph (approximate unless a request asks for `exact`);
    /// `flat`: no graph is built or kept, and every search is an exact scan (on the GPU where
    /// one serves the shard). A data dir can switch between the two across restarts.
    #[arg(long, env = "VECSHARD_INDEX", value_parser = one_of::<IndexKind>(&["hnsw", "flat"]), default_value = "hnsw")]
    pub index: IndexKind,
    /// Payload field to index for filtering, NAME:KIND with KIND keyword, integer or float.
    /// Repeat the flag, or separate with commas.
    #[arg(
        long = "index-field",
        env = "VECSHARD_INDEX_FIELD",
        value_delimiter = ','
    )]
    pub index_fields: Vec<IndexedField>,
    /// Shard name used in metrics labels.
    #[arg(long, env = "VECSHARD_SHARD_NAME", default_value = "0")]
    pub shard_name: String,
    #[arg(long, env = "VECSHARD_MAX_BATCH_POINTS", default_value_t = 10_000)]
    pub max_batch_points: usize,
    #[arg(long, env = "VECSHARD_MAX_BATCH_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_batch_bytes: usize,
    /// Searches executing at once; 0 means one per CPU core.
    #[arg(long, env = "VECSHARD_SEARCH_THREADS", default_value_t = 0)]
    pub search_threads: usize,
    /// Requests allowed to wait before the server answers RESOURCE_EXHAUSTED / 429.
    #[arg(long, env = "VECSHARD_MAX_QUEUED_REQUESTS", default_value_t = 1024)]
    pub max_queued_requests: usize,
    /// Filters matching at most this many points are always answered by an exact scan; above
    /// it the planner picks the plan it estimates cheapest (docs/api.md#search-planning).
    #[arg(long, env = "VECSHARD_EXACT_SCAN_THRESHOLD", default_value_t = 1024)]
    pub exact_scan_threshold: u64,
    /// Keep a graph of its own for each frequent value of every indexed keyword field, so
    /// that filters on those values walk a graph in which every point matches.
    #[arg(long, env = "VECSHARD_VALUE_GRAPHS", default_value_t = true, action = clap::ArgAction::Set)]
    pub value_graphs: bool,
    /// Values with fewer points get no value graph (the planner scans them exactly).
    #[arg(long, env = "VECSHARD_VALUE_GRAPH_MIN_POINTS", default_value_t = 2000)]
    pub value_graph_min_points: u64,
    /// Values held by more than this share of the points (0–1) get no value graph: the full
    /// graph's filtered walk is cheap enough for them.
    #[arg(long, env = "VECSHARD_VALUE_GRAPH_MAX_SHARE", default_value_t = 0.4, value_parser = parse_share)]
    pub value_graph_max_share: f64,
    /// A value-graph walk is this many times as broad as the search's `ef`: one value's points
    /// are close together, and a crowded neighbourhood needs a wider beam for the same recall.
    #[arg(long, env = "VECSHARD_VALUE_GRAPH_BREADTH_FACTOR", default_value_t = 3)]
    pub value_graph_breadth_factor: usize,
    /// Back the graph with transparent huge pages (Linux, THP `madvise` or `always`): fewer
    /// TLB misses per search. `false` leaves the kernel's default.
    #[arg(long, env = "VECSHARD_HUGE_PAGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub huge_pages: bool,
    /// Where exact searches run: `gpu` (a device copy of the vectors; the server refuses to
    /// start without a usable GPU), `cpu`, or `auto` (the GPU when one is usable, else the
    /// CPU, logged, with `vecshard_gpu_available 0`). Approximate searches always walk the
    /// graph on the CPU.
    #[arg(long, env = "VECSHARD_DEVICE", value_parser = one_of::<DeviceChoice>(&["auto", "cpu", "gpu"]), default_value = "auto")]
    pub device: DeviceChoice,
    /// GPU memory the device copy may use, in MiB; 0: 90% of the GPU's free memory at start.
    /// Past it the shard searches on the CPU (logged, `vecshard_gpu_available 0`).
    #[arg(long, env = "VECSHARD_GPU_MEMORY_LIMIT_MB", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=(1 << 24)))]
    pub gpu_memory_limit_mb: u64,
    /// Exact scans of fewer points stay on the CPU (a GPU round trip costs more).
    #[arg(long, env = "VECSHARD_GPU_MIN_POINTS", default_value_t = 8192)]
    pub gpu_min_points: u64,
    /// SearchBatch calls of at least this many searches are answered exactly on the GPU.
    #[arg(long, env = "VECSHARD_GPU_MIN_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub gpu_min_batch: u64,
    /// Queries in one GPU batch at most (concurrent searches and SearchBatch calls share
    /// batches).
    #[arg(long, env = "VECSHARD_GPU_MAX_BATCH", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub gpu_max_batch: u64,
    /// Microseconds the GPU thread waits for more searches before running a batch; 0: it runs
    /// what is queued at once (batches then form only while the GPU is busy).
    #[arg(long, env = "VECSHARD_GPU_BATCH_WINDOW_US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub gpu_batch_window_us: u64,
    /// Seconds between saves of the HNSW graph (to `graph.usearch` in the data dir) while
    /// points keep arriving, so that a restart loads the graph instead of rebuilding it;
    /// 0: only when the server stops. The graph is saved only when it has changed.
    #[arg(long, env = "VECSHARD_GRAPH_SAVE_INTERVAL", default_value_t = 300)]
    pub graph_save_interval: u64,
    /// sled page cache in MiB.
    #[arg(long, env = "VECSHARD_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// Operation-log entries kept for replicas to catch up from.
    #[arg(long, env = "VECSHARD_WAL_RETENTION", default_value_t = 100_000)]
    pub wal_retention: u64,
    /// Hash partitions of the collection (as in the shard map): the unit in which replicas
    /// compare and repair their data.
    #[arg(long, env = "VECSHARD_PARTITIONS", default_value_t = 256)]
    pub partitions: u32,
    /// gRPC addresses of the other replicas of this shard, to catch up from
    /// (e.g. `http://10.0.0.6:6334`); repeat or comma-separate.
    #[arg(long = "peer", env = "VECSHARD_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Find the peers by resolving this DNS name every few seconds, as `HOST:PORT` (in
    /// Kubernetes the shard's headless Service, e.g. `docs-0:6334`); addresses equal to
    /// `--pod-ip` are this replica. Replaces `--peer`.
    #[arg(long, env = "VECSHARD_PEER_SERVICE", conflicts_with = "peers", value_parser = parse_host_port)]
    pub peer_service: Option<(String, u16)>,
    /// This replica's own IP address (Kubernetes: the downward API's `status.podIP`).
    #[arg(long, env = "VECSHARD_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// Stop when this process (the parent, e.g. `vecshard-server dev`) goes away.
    #[arg(long, env = "VECSHARD_PARENT_PID", hide = true)]
    pub parent_pid: Option<u32>,
    /// Before opening an empty data directory, fill it from a snapshot in this repository
    /// (`s3://bucket/prefix`, `file:///dir` or a path; S3 credentials from `AWS_*`). Every
    /// object is verified first; a data directory that holds data is left alone.
    #[arg(long, env = "VECSHARD_RESTORE_FROM")]
    pub restore_from: Option<String>,
    /// Snapshot to restore: its id, or `latest`.
    #[arg(long, env = "VECSHARD_RESTORE_SNAPSHOT", default_value = "latest")]
    pub restore_snapshot: String,
    /// Collection whose snapshot to restore (default: --collection).
    #[arg(long, env = "VECSHARD_RESTORE_COLLECTION")]
    pub restore_collection: Option<String>,
    /// Shard of the snapshot to restore (default: the one named --shard-name, else the one at
    /// the same index: `docs-1` restores the snapshot's second shard).
    #[arg(long, env = "VECSHARD_RESTORE_SHARD")]
    pub restore_shard: Option<String>,
    #[command(flatten)]
    pub store: vecshard_snapshot::args::StoreArgs,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

/// A parser of one of `names` into `T` through its `FromStr` (the domain's one parser of the
/// name), listing the names in `--help` and in the error.
fn one_of<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|name| name.parse::<T>())
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("peer service {s:?} must be HOST:PORT"))?;
    let port = port.parse().map_err(|_| {
        format!("peer service {s:?}: port {port:?} is not a number from 1 to 65535")
    })?;
    if host.is_empty() {
        return Err(format!("peer service {s:?} has no host"));
    }
    Ok((host.to_string(), port))
}

impl ShardArgs {
    /// Where this replica finds the other replicas of its shard.
    pub fn peer_source(&self) -> crate::replication::PeerSource {
        match &self.peer_service {
            Some((host, port)) => crate::replication::PeerSource::Dns {
                host: host.clone(),
                port: *port,
                own_ip: self.pod_ip,
            },
            None => crate::replication::PeerSource::Static(self.peers.clone()),
        }
    }

    /// What `--restore-from` asks for, if given.
    pub fn restore_request(&self) -> Result<Option<crate::snapshot::RestoreRequest>, String> {
        let Some(url) = &self.restore_from else {
            return Ok(None);
        };
        Ok(Some(crate::snapshot::RestoreRequest {
            store: self.store.store(url).map_err(|e| e.to_string())?,
            collection: self.restore_collection.clone(),
            snapshot: self.restore_snapshot.clone(),
            shard: self.restore_shard.clone(),
        }))
    }

    pub fn collection_config(&self) -> Result<CollectionConfig, String> {
        if self.dimension == 0 || self.dimension > 65_536 {
            return Err(format!(
                "--dimension is {}, it must be between 1 and 65536",
                self.dimension
            ));
        }
        if self.hnsw_m < 2 || self.hnsw_m > 256 {
            return Err(format!(
                "--hnsw-m is {}, it must be between 2 and 256",
                self.hnsw_m
            ));
        }
        Ok(CollectionConfig {
            name: self.collection.clone(),
            dimension: self.dimension,
            metric: self.metric,
            hnsw: HnswParams {
                m: self.hnsw_m,
                ef_construction: self.hnsw_ef_construction.max(1),
                ef_search: self.hnsw_ef_search.max(1),
            },
            quantization: self.quantization,
            indexed_fields: self.index_fields.clone(),
        })
    }

    pub fn shard_options(&self) -> ShardOptions {
        let mut o = ShardOptions::new(&self.data_dir);
        o.shard_name = self.shard_name.clone();
        o.max_batch_points = self.max_batch_points;
        o.max_batch_bytes = self.max_batch_bytes;
        if self.search_threads > 0 {
            o.search_threads = self.search_threads;
        }
        o.max_queued_requests = self.max_queued_requests.max(1);
        o.exact_scan_threshold = self.exact_scan_threshold;
        o.value_graphs = vecshard_engine::shard::value_graphs::ValueGraphPolicy {
            enabled: self.value_graphs,
            min_points: self.value_graph_min_points,
            max_share: self.value_graph_max_share,
            breadth_factor: self.value_graph_breadth_factor,
        };
        o.cache_bytes = self.cache_mb * 1024 * 1024;
        o.wal_retention = self.wal_retention;
        o.partitions = self.partitions.max(1);
        o.huge_pages = self.huge_pages;
        o.index = self.index;
        o.device = self.device;
        o.device_options = vecshard_gpu::DeviceOptions {
            memory_limit: self.gpu_memory_limit_mb << 20,
            max_batch: self.gpu_max_batch as usize,
            batch_window: std::time::Duration::from_micros(self.gpu_batch_window_us),
        };
        o.gpu_min_points = self.gpu_min_points;
        o.gpu_min_batch = self.gpu_min_batch as usize;
        o.graph_save_interval = (self.graph_save_interval > 0)
            .then(|| std::time::Duration::from_secs(self.graph_save_interval));
        o
    }
}

/// Parses the command line, after applying the `--config` file (if any) as environment defaults.
pub fn parse() -> Result<Cli, String> {
    let args: Vec<String> = std::env::args().collect();
    let file = config_file_arg(&args).or_else(|| std::env::var("VECSHARD_CONFIG").ok());
    if let Some(path) = file {
        apply_config_file(&path)?;
    }
    Ok(Cli::parse_from(args))
}

fn config_file_arg(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_string).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    })
}

/// Sets `VECSHARD_<KEY>` for each key of the YAML file that is not already in the environment.
/// Must run before any thread starts (it edits the process environment).
fn apply_config_file(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {path}: {e}"))?;
    let doc: serde_yaml::Mapping = serde_yaml::from_str(&text)
        .map_err(|e| format!("config file {path} is not a YAML mapping: {e}"))?;
    let command = Cli::command();
    let name = std::env::args().nth(1).unwrap_or_default();
    let sub = command.find_subcommand(&name).ok_or_else(|| {
        format!("--config needs a subcommand first (shard, router or dev), got {name:?}")
    })?;
    for (key, value) in doc {
        let key = key
            .as_str()
            .ok_or_else(|| format!("config file {path}: keys must be strings"))?;
        let wanted = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(wanted.as_str()))
            .ok_or_else(|| format!("config file {path}: unknown option {key:?}"))?;
        let env = arg
            .get_env()
            .expect("every option has an env var")
            .to_string_lossy()
            .to_string();
        let text = match value {
            serde_yaml::Value::Sequence(items) => items
                .iter()
                .map(yaml_scalar)
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            v => yaml_scalar(&v)?,
        };
        if std::env::var_os(&env).is_none() {
            std::env::set_var(env, text);
        }
    }
    Ok(())
}

fn yaml_scalar(v: &serde_yaml::Value) -> Result<String, String> {
    match v {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "config value {other:?} must be a string, number or boolean"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_build_the_collection_config() {
        let cli = Cli::parse_from([
            "vecshard-server",
            "shard",
            "--dimension",
            "384",
            "--metric",
            "l2",
            "--index-field",
            "pos:keyword",
            "--index-field",
            "year:integer,price:float",
            "--quantization",
            "i8",
        ]);
        let Command::Shard(args) = cli.command else {
            panic!("parsed as shard")
        };
        let cfg = args.collection_config().unwrap();
        assert_eq!(cfg.dimension, 384);
        assert_eq!(cfg.metric, Metric::L2);
        assert_eq!(cfg.indexed_fields.len(), 3);
        assert_eq!(cfg.quantization, Quantization::I8);
    }

    #[test]
    fn gpu_flags_out_of_range_are_refused_naming_the_flag_and_the_range() {
        let shard = |extra: &[&str]| {
            let mut argv = vec!["vecshard-server", "shard", "--dimension", "8"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        for (flag, value) in [
            ("--gpu-max-batch", "0"),
            ("--gpu-min-batch", "0"),
            ("--gpu-max-batch", "65537"),
            ("--gpu-batch-window-us", "10001"),
            ("--gpu-memory-limit-mb", "99999999"),
        ] {
            let err = shard(&[flag, value]).expect_err(flag).to_string();
            assert!(
                err.contains(flag) && err.contains(value) && err.contains(".."),
                "{flag} {value}: {err}"
            );
        }
        let Command::Shard(args) = shard(&["--gpu-max-batch", "256", "--device", "cpu"])
            .unwrap()
            .command
        else {
            panic!("parsed as shard")
        };
        assert_eq!(args.shard_options().device_options.max_batch, 256);
    }
}
