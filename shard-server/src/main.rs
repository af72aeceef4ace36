//! `vecshard-server`: `shard` (one shard), `router` (front door of a sharded collection) and
//! `dev` (a local cluster of child processes behind a router).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vecshard_core::metrics::Metrics;
use vecshard_engine::shard::Shard;
use vecshard_router::Router;
use vecshard_server::config::{self, Command, RouterArgs, ShardArgs};
use vecshard_server::server;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // Reads --config before any thread exists: it fills in environment defaults.
    let cli = config::parse().map_err(anyhow::Error::msg)?;
    // jemalloc returns freed pages to the OS only as later allocations pass by, unless its
    // background threads purge them: without them, memory freed in bulk (a slot
    // compaction, the buffers of a finished load) stayed resident while the server idled.
    #[cfg(not(target_env = "msvc"))]
    let purging = tikv_jemalloc_ctl::background_thread::write(true);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = purging {
        tracing::warn!(error = %e, "jemalloc background purging is off");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Shard(args) => run_shard(*args).await,
            Command::Router(args) => run_router(args).await,
            Command::Dev(args) => {
                let exe = std::env::current_exe().context("locating this executable")?;
                vecshard_server::dev::run(args, exe, async {
                    let _ = wait_for_signal().await;
                    tracing::info!("stopping the local cluster");
                })
                .await
            }
        }
    })
}

async fn run_shard(args: ShardArgs) -> anyhow::Result<()> {
    let collection = args.collection_config().map_err(anyhow::Error::msg)?;
    let options = args.shard_options();
    if let Some(restore) = args.restore_request().map_err(anyhow::Error::msg)? {
        vecshard_server::snapshot::restore_if_empty(
            &restore,
            &options.data_dir,
            &collection,
            options.partitions,
            &options.shard_name,
        )
        .await
        .context("restoring from the snapshot")?;
    }
    let shard = tokio::task::spawn_blocking(move || {
        Shard::open(collection, options, Arc::new(Metrics::new()))
    })
    .await?
    .context("opening the shard")?;
    let security = args.security.server().map_err(anyhow::Error::msg)?;
    vecshard_security::set_process_client(args.security.client().map_err(anyhow::Error::msg)?);
    let peers = args.peer_source();
    if !peers.is_empty() {
        // Before the first request is served: a replica with peers must not answer ready (or
        // count toward writes) in the moment before its catch-up task starts.
        shard.mark_catching_up();
    }
    let running = server::start_secure(
        Arc::new(shard.clone()),
        args.grpc_listen,
        args.http_listen,
        security,
    )
    .await?;
    let (stop_catch_up, stopped) = tokio::sync::watch::channel(false);
    let catch_up = (!peers.is_empty()).then(|| {
        tokio::spawn(vecshard_server::replication::catch_up_loop(
            shard, peers, stopped,
        ))
    });
    tokio::select! {
        r = wait_for_signal() => r?,
        () = parent_gone(args.parent_pid) => tracing::warn!("parent process is gone"),
    }
    tracing::info!("shutting down: draining requests");
    let _ = stop_catch_up.send(true);
    if let Some(task) = catch_up {
        let _ = task.await;
    }
    running.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn run_router(args: RouterArgs) -> anyhow::Result<()> {
    let security = args.security.server().map_err(anyhow::Error::msg)?;
    let client = args.security.client().map_err(anyhow::Error::msg)?;
    let router = Router::open(args.router_options(client), Duration::from_secs(60))
        .await
        .context("starting the router")?;
    let running =
        server::start_secure(router, args.grpc_listen, args.http_listen, security).await?;
    wait_for_signal().await?;
    running.shutdown().await;
    Ok(())
}

/// Resolves when the process that started us has exited (we were re-parented); never when no
/// parent was given.
async fn parent_gone(parent: Option<u32>) {
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
