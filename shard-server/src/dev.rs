//! `vecshard-server dev`: a whole cluster on one machine. Every shard replica runs as a child
//! process (this same binary, `shard` subcommand) with its own data dir and ports; the router
//! runs in this process in front of them. Ctrl-C / SIGTERM stops the router, then the
//! children (SIGTERM, then SIGKILL after a grace period); children also stop by themselves if
//! this process disappears (`--parent-pid`), so nothing is left behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use vecshard_proto::shard_map::{ShardAssignment, ShardMap};

use crate::config::DevArgs;
use crate::server;
use vecshard_router::{HedgePolicy, MapSource, Router, RouterOptions};

struct ReplicaProcess {
    name: String,
    child: Child,
}

/// Runs until `stop` resolves (a signal), then tears everything down.
pub async fn run(
    args: DevArgs,
    exe: PathBuf,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let restore = match &args.restore_from {
        Some(url) => Some(RestorePlan::resolve(&args, url).await?),
        None => None,
    };
    let mut args = args;
    if let Some(plan) = &restore {
        args.shards = plan.map.shards.len();
        println!(
            "starting from snapshot {} of {} ({} points, {} shards)",
            plan.id, plan.collection, plan.points, args.shards
        );
    }
    let args = args;
    let security = DevSecurity::prepare(&args)?;
    let mut processes = Vec::new();
    let mut layout: Vec<Vec<String>> = Vec::new();
    let per_shard = args.replicas.max(1);
    let grpc_port_of =
        |shard: usize, replica: usize| args.base_port + 2 * (shard * per_shard + replica) as u16;
    let shards = args.shards.max(1);
    if args.shards as u32 > args.partitions {
        anyhow::bail!(
            "--shards is {}, above --partitions {}: every shard must own a partition",
            args.shards,
            args.partitions
        );
    }
    for shard in 0..args.max_shards.unwrap_or(shards).max(shards) {
        let mut replicas = Vec::new();
        for replica in 0..per_shard {
            let grpc_port = grpc_port_of(shard, replica);
            let http_port = grpc_port + 1;
            let peers: Vec<String> = (0..per_shard)
                .filter(|r| *r != replica)
                .map(|r| {
                    format!(
                        "{}://127.0.0.1:{}",
                        security.scheme(),
                        grpc_port_of(shard, r)
                    )
                })
                .collect();
            let dir = args
                .data_dir
                .join(format!("shard-{shard}-replica-{replica}"));
            let name = format!("{}-{shard} replica {replica}", args.collection);
            let restore_shard = restore
                .as_ref()
                .and_then(|plan| Some((plan, plan.map.shards.get(shard)?.name.as_str())));
            let child = spawn_replica(
                &exe,
                &args,
                &dir,
                shard,
                (grpc_port, http_port),
                restore_shard,
                &replica_args(&peers, &security),
            )?;
            println!(
                "{name}: gRPC 127.0.0.1:{grpc_port}  HTTP 127.0.0.1:{http_port}  data {}",
                dir.display()
            );
            processes.push(ReplicaProcess { name, child });
            replicas.push(format!("{}://127.0.0.1:{grpc_port}", security.scheme()));
        }
        layout.push(replicas);
    }
    let map_path = args.data_dir.join("shard-map.json");
    write_layout(&args.data_dir.join(LAYOUT_FILE), &args.collection, &layout)?;
    let first = match &restore {
        // The snapshot's partition assignment, on this cluster's processes.
        Some(plan) => ShardMap {
            version: 1,
            collection: args.collection.clone(),
            partitions: plan.map.partitions,
            shards: plan
                .map
                .shards
                .iter()
                .zip(&layout)
                .enumerate()
                .map(|(i, (s, replicas))| ShardAssignment {
                    name: format!("{}-{i}", args.collection),
                    partitions: s.partitions.clone(),
                    replicas: replicas.clone(),
                    joining: Vec::new(),
                })
                .collect(),
            moves: Vec::new(),
        },
        None => ShardMap::even(&args.collection, args.partitions, layout[..shards].to_vec()),
    };
    write_shard_map(&map_path, first, &layout)?;

    let result = serve_router(&args, &map_path, &security, stop).await;
    stop_all(&mut processes).await;
    result
}

/// The snapshot a dev cluster starts from.
struct RestorePlan {
    url: String,
    id: String,
    collection: String,
    points: u64,
    map: ShardMap,
}

impl RestorePlan {
    async fn resolve(args: &DevArgs, url: &str) -> anyhow::Result<RestorePlan> {
        let store = args.store.store(url)?;
        let repo = vecshard_snapshot::Repository::open(&store)?;
        let collection = args
            .restore_collection
            .clone()
            .unwrap_or_else(|| args.collection.clone());
        let id =
            vecshard_snapshot::catalog::resolve(&repo, &collection, &args.restore_snapshot).await?;
        let m = vecshard_snapshot::catalog::read_manifest(&repo, &collection, &id).await?;
        if m.collection.partitions != args.partitions {
            anyhow::bail!(
                "snapshot {id} has {} partitions; start with --partitions {}",
                m.collection.partitions,
                m.collection.partitions
            );
        }
        let map: ShardMap = serde_json::from_value(m.shard_map.clone())
            .with_context(|| format!("the shard map in snapshot {id}"))?;
        Ok(RestorePlan {
            url: url.to_string(),
            id,
            collection,
            points: m.points,
            map,
        })
    }
}

fn spawn_replica(
    exe: &Path,
    args: &DevArgs,
    dir: &Path,
    shard: usize,
    (grpc_port, http_port): (u16, u16),
    restore: Option<(&RestorePlan, &str)>,
    extra: &[std::ffi::OsString],
) -> anyhow::Result<Child> {
    let fields: Vec<String> = args
        .index_fields
        .iter()
        .map(|f| format!("{}:{}", f.name, f.kind.as_str()))
        .collect();
    let mut cmd = Command::new(exe);
    cmd.arg("shard")
        .args(["--collection", &args.collection])
        .args(["--dimension", &args.dimension.to_string()])
        .args(["--metric", args.metric.as_str()])
        .args(["--quantization", args.quantization.as_str()])
        .args(["--index", args.index.as_str()])
        .arg("--data-dir")
        .arg(dir)
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .args(["--shard-name", &format!("{}-{shard}", args.collection)])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--parent-pid", &std::process::id().to_string()])
        // The dev command's own environment must not leak into the children's options.
        .env_remove("VECSHARD_CONFIG")
        .env_remove("VECSHARD_HTTP_LISTEN")
        .env_remove("VECSHARD_GRPC_LISTEN")
        .env_remove("VECSHARD_DATA_DIR")
        .env_remove("VECSHARD_TLS_CERT")
        .env_remove("VECSHARD_TLS_KEY")
        .env_remove("VECSHARD_TLS_CA")
        .env_remove("VECSHARD_COMPONENTS_ONLY")
        .env_remove("VECSHARD_API_KEYS_DIR")
        .env_remove("VECSHARD_METRICS_NEED_KEY")
        .env_remove("VECSHARD_CACHE_ENTRIES")
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if !fields.is_empty() {
        cmd.args(["--index-field", &fields.join(",")]);
    }
    if let Some((plan, snapshot_shard)) = restore {
        cmd.args(["--restore-from", &plan.url])
            .args(["--restore-snapshot", &plan.id])
            .args(["--restore-collection", &plan.collection])
            .args(["--restore-shard", snapshot_shard])
            .args(["--s3-endpoint", &args.store.s3_endpoint])
            .args(["--s3-region", &args.store.s3_region])
            .args(["--s3-allow-http", &args.store.s3_allow_http.to_string()]);
        if let Some(ca) = &args.store.s3_ca_file {
            cmd.arg("--s3-ca-file").arg(ca);
        }
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

/// A replica's flags beyond its own place: its peers, and the cluster's TLS and keys.
fn replica_args(peers: &[String], security: &DevSecurity) -> Vec<std::ffi::OsString> {
    let mut args = security.shard_args();
    if !peers.is_empty() {
        args.extend(["--peer".into(), peers.join(",").into()]);
    }
    args
}

/// Every shard process of this dev cluster (those in the map and the spare ones), for
/// `vecshardctl rebalance`: a JSON list of {name, partitions: [], replicas}.
pub const LAYOUT_FILE: &str = "shards.json";

fn write_layout(path: &Path, collection: &str, layout: &[Vec<String>]) -> anyhow::Result<()> {
    let shards: Vec<ShardAssignment> = layout
        .iter()
        .enumerate()
        .map(|(i, replicas)| ShardAssignment {
            name: format!("{collection}-{i}"),
            partitions: Vec::new(),
            replicas: replicas.clone(),
            joining: Vec::new(),
        })
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&shards)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the map, unless one is stored for this collection whose shards all run in this
/// cluster: the stored map says where the data lives (a rebalanced cluster keeps its moved
/// partitions across restarts, whatever `--shards` says now).
fn write_shard_map(path: &Path, mut map: ShardMap, started: &[Vec<String>]) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<ShardMap>(&t).ok());
    if let Some(old) = old {
        let runs = |addr: &String| started.iter().flatten().any(|a| a == addr);
        let usable = old.validate().is_ok()
            && old.collection == map.collection
            && old.partitions == map.partitions
            && old.shards.iter().flat_map(|s| &s.replicas).all(runs);
        if usable {
            if old.shards.len() != map.shards.len() {
                println!(
                    "the stored shard map (version {}) has {} shards; --shards {} is ignored \
                     (change the shard count with vecshardctl rebalance)",
                    old.version,
                    old.shards.len(),
                    map.shards.len()
                );
            }
            return Ok(());
        }
        // Routers never go back to a lower version.
        map.version = old.version + 1;
    }
    std::fs::write(path, serde_json::to_string_pretty(&map)?)
        .with_context(|| format!("writing {}", path.display()))
}

async fn serve_router(
    args: &DevArgs,
    map_path: &Path,
    security: &DevSecurity,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let router_security = security.args(false);
    let client = router_security.client().map_err(anyhow::Error::msg)?;
    let server_security = router_security.server().map_err(anyhow::Error::msg)?;
    let options = RouterOptions {
        shard_map: MapSource::File(map_path.to_path_buf()),
        write_consistency: args.write_consistency,
        request_timeout: Duration::from_secs(5),
        max_batch_points: 10_000,
        max_batch_bytes: 64 * 1024 * 1024,
        cache_entries: args.cache_entries,
        cache_ttl: Duration::from_secs(60),
        hedge: HedgePolicy::default(),
        client,
    };
    let router = Router::open(options, Duration::from_secs(120)).await?;
    let running =
        server::start_secure(router, args.grpc_listen, args.http_listen, server_security).await?;
    let scheme = security.scheme();
    println!(
        "router: HTTP {scheme}://{}  gRPC {}  ({} shards × {} replicas, write consistency {:?}); Ctrl-C stops everything",
        running.http_addr, running.grpc_addr, args.shards, args.replicas, args.write_consistency
    );
    security.describe();
    stop.await;
    running.shutdown().await;
    Ok(())
}

/// TLS and keys of a dev cluster: the files the flags turn into (a generated CA and
/// certificate, key files), shared by the router and every replica.
struct DevSecurity {
    pki: Option<vecshard_security::pki::DevPki>,
    keys_dir: Option<PathBuf>,
    read_only_keys: usize,
}

impl DevSecurity {
    fn prepare(args: &DevArgs) -> anyhow::Result<DevSecurity> {
        let pki = args
            .tls
            .then(|| vecshard_security::pki::write_dev_pki(&args.data_dir.join("tls")))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let dir = args.data_dir.join("api-keys");
        // Keys from an earlier run must not outlive the flags that set them.
        let _ = std::fs::remove_dir_all(&dir);
        let keys_dir = if args.api_keys.is_empty() && args.read_only_api_keys.is_empty() {
            None
        } else {
            // Checked here, so a bad key is refused before any process starts.
            vecshard_security::KeySet::new(&args.api_keys, &args.read_only_api_keys)
                .map_err(|e| anyhow::anyhow!("--api-key / --read-only-api-key: {e}"))?;
            std::fs::create_dir_all(&dir)?;
            let write = |file: &str, keys: &[String]| {
                vecshard_security::pki::write_private(&dir.join(file), &(keys.join("\n") + "\n"))
                    .map_err(anyhow::Error::msg)
            };
            write(vecshard_security::keys::READ_WRITE_FILE, &args.api_keys)?;
            write(
                vecshard_security::keys::READ_ONLY_FILE,
                &args.read_only_api_keys,
            )?;
            Some(dir)
        };
        Ok(DevSecurity {
            pki,
            keys_dir,
            read_only_keys: args.read_only_api_keys.len(),
        })
    }

    fn scheme(&self) -> &'static str {
        if self.pki.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The security flags of a process of this cluster: shards serve the cluster's own
    /// certificate holders only.
    fn args(&self, shard: bool) -> crate::security::SecurityArgs {
        crate::security::SecurityArgs {
            tls_cert: self.pki.as_ref().map(|p| p.cert.clone()),
            tls_key: self.pki.as_ref().map(|p| p.key.clone()),
            tls_ca: self.pki.as_ref().map(|p| p.ca.clone()),
            components_only: shard && self.pki.is_some(),
            api_keys_dir: self.keys_dir.clone(),
            metrics_need_key: false,
        }
    }

    fn shard_args(&self) -> Vec<std::ffi::OsString> {
        let a = self.args(true);
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut flag = |name: &str, value: &Option<PathBuf>| {
            if let Some(v) = value {
                out.push(name.into());
                out.push(v.clone().into_os_string());
            }
        };
        flag("--tls-cert", &a.tls_cert);
        flag("--tls-key", &a.tls_key);
        flag("--tls-ca", &a.tls_ca);
        flag("--api-keys-dir", &a.api_keys_dir);
        if a.components_only {
            out.push("--components-only".into());
        }
        out
    }

    fn describe(&self) {
        if let Some(pki) = &self.pki {
            println!(
                "TLS on every port; clients trust {} (e.g. curl --cacert {})",
                pki.ca.display(),
                pki.ca.display()
            );
        }
        if self.keys_dir.is_some() {
            println!(
                "API keys required (header `api-key` or `authorization: Bearer`); {} read-only key(s)",
                self.read_only_keys
            );
        }
    }
}

/// SIGTERM to every replica, then SIGKILL to those still running after the grace period.
async fn stop_all(processes: &mut [ReplicaProcess]) {
    for p in processes.iter() {
        if let Some(pid) = p.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for p in processes.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(20), p.child.wait()).await {
            Ok(Ok(status)) => tracing::info!(replica = %p.name, %status, "stopped"),
            _ => {
                tracing::warn!(replica = %p.name, "did not stop in time; killing");
                let _ = p.child.kill().await;
            }
        }
    }
}
