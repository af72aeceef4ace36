//! `vecshard-server`: the shard server binary (`shard` subcommand).

use std::sync::Arc;

use anyhow::Context;
use vecshard_server::config::{self, Command};
use vecshard_server::metrics::Metrics;
use vecshard_server::server;
use vecshard_server::shard::Shard;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // Reads --config before any thread exists: it fills in environment defaults.
    let cli = config::parse().map_err(anyhow::Error::msg)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Shard(args) => {
                let collection = args.collection_config().map_err(anyhow::Error::msg)?;
                let options = args.shard_options();
                let shard = tokio::task::spawn_blocking(move || {
                    Shard::open(collection, options, Arc::new(Metrics::new()))
                })
                .await?
                .context("opening the shard")?;
                let running =
                    server::start(Arc::new(shard), args.grpc_listen, args.http_listen).await?;
                wait_for_signal().await?;
                tracing::info!("shutting down: draining requests");
                running.shutdown().await;
                tracing::info!("stopped cleanly");
                Ok(())
            }
        }
    })
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
