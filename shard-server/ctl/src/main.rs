//! `vecshardctl`: the command-line client of a vecshard router or shard (gRPC). Loads
//! datasets (`.npy`, `.fvecs`, `.jsonl`) with a progress bar and resume, searches with
//! filters, gets, deletes and counts points, and shows collection info and replica status.
//! Results are printed as JSON.

#[macro_use]
mod output;
mod load;
mod rebalance;
mod snapshot;
mod source;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use vecshard_dataset::VectorFile;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_security::{ClientSecurity, ClientTls, SecureChannel};

use source::{id_from_arg, PointSource};

#[derive(Parser, Debug)]
#[command(
    name = "vecshardctl",
    version,
    about = "Load, search and inspect a vecshard collection"
)]
struct Cli {
    /// gRPC address of the router (or of a single shard).
    #[arg(
        long,
        env = "VECSHARD_ADDR",
        default_value = "http://127.0.0.1:6334",
        global = true
    )]
    addr: String,
    #[arg(
        long,
        env = "VECSHARD_COLLECTION",
        default_value = "docs",
        global = true
    )]
    collection: String,
    /// CA (PEM) that `https://` servers' certificates are checked against.
    #[arg(long, env = "VECSHARD_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for commands that call replicas directly (`rebalance`,
    /// `snapshot`) in a cluster whose replicas serve only its components; with --tls-key.
    #[arg(long, env = "VECSHARD_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "VECSHARD_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// API key sent with every call (`api-key` header).
    #[arg(long, env = "VECSHARD_API_KEY", global = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// How this run connects: the TLS and key flags.
    fn client_security(&self) -> Result<ClientSecurity> {
        let tls = self
            .tls_ca
            .clone()
            .map(|ca| ClientTls::load(ca, self.tls_cert.clone().zip(self.tls_key.clone())))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--tls-ca: {e}"))?;
        ClientSecurity::none()
            .with_tls(tls)
            .with_api_key(self.api_key.as_deref())
            .map_err(|e| anyhow::anyhow!("--api-key: {e}"))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upsert every row of a file: .npy (f16/f32) or .fvecs vectors, or .jsonl points
    /// ({"id":…,"vector":[…],"payload":{…}} per line).
    Load {
        input: PathBuf,
        /// JSONL file with one payload object per vector row, in the same order.
        #[arg(long)]
        payloads: Option<PathBuf>,
        /// Take each point's id from this payload field instead of the row number.
        #[arg(long)]
        id_field: Option<String>,
        /// Added to the row number to make the id.
        #[arg(long, default_value_t = 0)]
        id_offset: u64,
        /// Load only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Batches in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Continue after the rows the checkpoint says are loaded.
        #[arg(long)]
        resume: bool,
        /// Where progress is recorded (default: .vecshardctl/<collection>-<file name>.json).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Top-k similarity search.
    Search {
        /// The query vector as a JSON array.
        #[arg(long, conflicts_with = "vector_file")]
        vector: Option<String>,
        /// Take the query vector from a row of a .npy/.fvecs file.
        #[arg(long, requires = "row")]
        vector_file: Option<PathBuf>,
        #[arg(long)]
        row: Option<usize>,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Qdrant filter JSON, e.g. '{"must":[{"key":"pos","match":{"value":"noun"}}]}'.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        ef: Option<u32>,
        #[arg(long)]
        exact: bool,
        #[arg(long)]
        with_vector: bool,
        #[arg(long)]
        no_payload: bool,
        /// Answer from the shards that are up when a whole shard is down.
        #[arg(long)]
        allow_partial: bool,
    },
    /// Fetch points by id.
    Get {
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        with_vector: bool,
    },
    /// Delete points by id or by filter.
    Delete {
        #[arg(required_unless_present = "filter")]
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        filter: Option<String>,
    },
    /// Count live points, optionally matching a filter.
    Count {
        #[arg(long)]
        filter: Option<String>,
    },
    /// Collection parameters, point counts and index state.
    Info,
    /// Every replica of every shard: reachable, points, log position, checksum, divergence,
    /// and the partitions moving between shards.
    Status,
    /// Change the shard count of a `vecshard-server dev` cluster online: partitions move to
    /// (or away from) the spare shard processes while reads and writes go on. In Kubernetes,
    /// change `spec.shards` of the VectorCollection instead.
    Rebalance {
        /// Shards the collection should have (at most dev's --max-shards).
        #[arg(long)]
        shards: usize,
        /// The dev cluster's --data-dir (holds shard-map.json and shards.json).
        #[arg(long, default_value = "./vecshard-data")]
        data_dir: PathBuf,
        /// Partitions moved together in one batch.
        #[arg(long, default_value_t = 16)]
        batch_partitions: usize,
    },
    /// Snapshots of the collection in a repository (S3-compatible or a directory): create,
    /// list, verify, delete, prune. S3 credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn connect(addr: &str) -> Result<PointsClient<SecureChannel>> {
    let mut channel = vecshard_security::current_client()
        .channel(addr, Duration::from_secs(3), None)
        .map_err(|e| anyhow::anyhow!("--addr: {e}"))?;
    std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut channel, cx))
        .await
        .with_context(|| format!("cannot reach vecshard at {addr} (is it running? see --addr)"))?;
    Ok(PointsClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

async fn run(cli: Cli) -> Result<()> {
    // Every call of this run (to the router, and to replicas for rebalance and snapshot).
    vecshard_security::set_process_client(cli.client_security()?);
    let collection = cli.collection.clone();
    if let Command::Rebalance {
        shards,
        data_dir,
        batch_partitions,
    } = &cli.command
    {
        return rebalance::run(data_dir, &collection, *shards, *batch_partitions).await;
    }
    if let Command::Snapshot(command) = cli.command {
        return snapshot::run(command, &cli.addr, &collection).await;
    }
    let mut client = connect(&cli.addr).await?;
    let status = |s: tonic::Status| anyhow::anyhow!("{} ({:?})", s.message(), s.code());
    match cli.command {
        Command::Load {
            input,
            payloads,
            id_field,
            id_offset,
            limit,
            batch,
            concurrency,
            resume,
            checkpoint,
        } => {
            if batch == 0 || concurrency == 0 {
                bail!("--batch and --concurrency must be at least 1");
            }
            let (source, rows) =
                PointSource::open(&input, payloads.as_deref(), id_field, id_offset)?;
            let checkpoint = checkpoint.unwrap_or_else(|| {
                let name = input
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                PathBuf::from(".vecshardctl").join(format!("{collection}-{name}.json"))
            });
            let options = load::LoadOptions {
                collection,
                batch,
                concurrency,
                limit,
                resume,
                checkpoint,
            };
            load::load(client, &input, source, rows, options).await?;
        }
        Command::Search {
            vector,
            vector_file,
            row,
            limit,
            filter,
            ef,
            exact,
            with_vector,
            no_payload,
            allow_partial,
        } => {
            let vector = match (vector, vector_file, row) {
                (Some(text), _, _) => serde_json::from_str::<Vec<f32>>(&text)
                    .context("--vector must be a JSON array of numbers")?,
                (None, Some(file), Some(row)) => {
                    let mut f = VectorFile::open(&file)?;
                    if row >= f.rows {
                        bail!(
                            "--row {row} is past the end of {} ({} rows)",
                            file.display(),
                            f.rows
                        );
                    }
                    f.seek_row(row)?;
                    f.next_row()?.expect("row exists")
                }
                _ => bail!("give the query as --vector '[…]' or --vector-file FILE --row N"),
            };
            let started = std::time::Instant::now();
            let resp = client
                .search(pb::SearchRequest {
                    collection,
                    vector,
                    limit,
                    filter_json: filter.unwrap_or_default(),
                    ef: ef.unwrap_or(0),
                    exact,
                    with_payload: !no_payload,
                    with_vector,
                    allow_partial,
                })
                .await
                .map_err(status)?
                .into_inner();
            let mut out = json!({
                "result": resp.result.into_iter().map(scored_json).collect::<Vec<_>>(),
                "time_ms": started.elapsed().as_secs_f64() * 1000.0,
            });
            if !resp.unavailable_shards.is_empty() {
                out["partial"] = json!(true);
                out["unavailable_shards"] = json!(resp.unavailable_shards);
            }
            print_json(&out);
        }
        Command::Get { ids, with_vector } => {
            let resp = client
                .get(pb::GetRequest {
                    collection,
                    ids: ids.iter().map(|i| id_from_arg(i)).collect(),
                    with_vector,
                    with_payload: Some(true),
                })
                .await
                .map_err(status)?
                .into_inner();
            let points: Vec<Value> = resp
                .points
                .into_iter()
                .map(|p| {
                    scored_json(pb::ScoredPoint {
                        id: p.id,
                        score: 0.0,
                        payload_json: p.payload_json,
                        vector: p.vector,
                        version: p.version,
                    })
                })
                .map(|mut v| {
                    v.as_object_mut().map(|o| o.remove("score"));
                    v
                })
                .collect();
            print_json(&json!({ "result": points }));
        }
        Command::Delete { ids, filter } => {
            let resp = client
                .delete(pb::DeleteRequest {
                    collection,
                    ids: ids.iter().map(|i| id_from_arg(i)).collect(),
                    filter_json: filter.unwrap_or_default(),
                    version: 0,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_json(&json!({"result": {"deleted": resp.affected, "version": resp.version}}));
        }
        Command::Count { filter } => {
            let resp = client
                .count(pb::CountRequest {
                    collection,
                    filter_json: filter.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_json(&json!({"result": {"count": resp.count}}));
        }
        Command::Info => {
            let i = client
                .info(pb::InfoRequest { collection })
                .await
                .map_err(status)?
                .into_inner();
            print_json(&json!({"result": {
                "name": i.name, "dimension": i.dimension, "metric": i.metric,
                "points": i.points, "indexed_points": i.indexed_points,
                "pending_points": i.pending_points, "status": i.status,
                "quantization": i.quantization,
                "hnsw": {"m": i.hnsw_m, "ef_construction": i.hnsw_ef_construction, "ef_search": i.hnsw_ef_search},
                "indexed_fields": i.indexed_fields.iter().map(|f| json!({"name": f.name, "kind": f.kind})).collect::<Vec<_>>(),
                "wal_sequence": i.wal_sequence, "index_memory_bytes": i.index_memory_bytes,
            }}));
        }
        Command::Rebalance { .. } | Command::Snapshot(_) => {
            unreachable!("handled before connecting")
        }
        Command::Status => {
            let c = client
                .cluster(pb::ClusterRequest {})
                .await
                .map_err(status)?
                .into_inner();
            print_status(&c);
        }
    }
    Ok(())
}

fn scored_json(p: pb::ScoredPoint) -> Value {
    let id = match p.id.and_then(|i| i.kind) {
        Some(pb::point_id::Kind::Num(n)) => json!(n),
        Some(pb::point_id::Kind::Str(s)) => json!(s),
        None => Value::Null,
    };
    let mut out = json!({"id": id, "score": p.score});
    if !p.payload_json.is_empty() {
        out["payload"] = serde_json::from_str(&p.payload_json).unwrap_or(Value::Null);
    }
    if !p.vector.is_empty() {
        out["vector"] = json!(p.vector);
    }
    out
}

fn print_json(v: &Value) {
    out!("{}", serde_json::to_string_pretty(v).expect("serializable"));
}

/// A table for people; `diverged` lists partitions on which replicas disagree.
fn print_status(c: &pb::ClusterStatus) {
    out!(
        "collection {}  shard map version {}  partitions {}",
        c.collection,
        c.map_version,
        c.partitions
    );
    for m in &c.moves {
        out!(
            "moving partitions {:?} from {} to {} ({})",
            m.partitions,
            m.from,
            m.to,
            m.phase
        );
    }
    for shard in &c.shards {
        let diverged = if shard.diverged_partitions.is_empty() {
            "replicas agree".to_string()
        } else {
            format!("diverged partitions {:?}", shard.diverged_partitions)
        };
        out!("shard {}: {diverged}", shard.name);
        for r in &shard.replicas {
            if r.reachable {
                out!(
                    "  {:<28} {:<8} points {:<10} wal {:<10} checksum {:016x}  map v{}",
                    r.address,
                    r.status,
                    r.points,
                    r.wal_sequence,
                    r.checksum,
                    r.map_version
                );
            } else {
                out!("  {:<28} UNREACHABLE  {}", r.address, r.error);
            }
        }
    }
}
