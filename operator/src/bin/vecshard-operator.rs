//! `vecshard-operator`: runs the controllers for one namespace, several, or all, behind a
//! leader Lease, and serves `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::Parser;
use vecshard_operator::controller::{self, Context, Scope};
use vecshard_operator::leader::LeaderElector;
use vecshard_operator::metrics::Metrics;

#[derive(Parser, Debug)]
#[command(
    name = "vecshard-operator",
    version,
    about = "Reconciles VectorCollections and ShardSets"
)]
struct Args {
    /// Namespaces to watch (repeat or comma-separate); empty watches all namespaces.
    #[arg(
        long = "namespace",
        env = "VECSHARD_OPERATOR_NAMESPACES",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "VECSHARD_OPERATOR_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    metrics_listen: SocketAddr,
    /// Elect a leader through a Lease (needed when more than one replica runs).
    #[arg(long, env = "VECSHARD_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (normally the operator's own).
    #[arg(
        long,
        env = "VECSHARD_OPERATOR_LEASE_NAMESPACE",
        default_value = "default"
    )]
    lease_namespace: String,
    #[arg(
        long,
        env = "VECSHARD_OPERATOR_LEASE_NAME",
        default_value = "vecshard-operator"
    )]
    lease_name: String,
    /// Seconds without renewal after which another replica takes the Lease over.
    #[arg(long, env = "VECSHARD_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease (the pod name in Kubernetes).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let leading = Arc::new(AtomicBool::new(false));
    serve_metrics(args.metrics_listen, metrics.clone(), leading.clone()).await?;

    // The chart passes an empty string for "all namespaces".
    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let scope = if namespaces.is_empty() {
        Scope::All
    } else {
        Scope::Namespaces(namespaces)
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        Some(identity.clone()),
    ));

    if !args.leader_election {
        leading.store(true, Ordering::SeqCst);
        metrics.leader.set(1);
        if let Err(e) = controller::run(ctx, scope).await {
            tracing::error!(error = %e, "exiting so that Kubernetes restarts the operator");
            return Err(e.into());
        }
        return Ok(());
    }
    let elector = Arc::new(LeaderElector::new(
        client,
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(args.lease_seconds),
    ));
    tracing::info!(%identity, "waiting for the leader lease");
    loop {
        tokio::select! {
            led = elector.try_lead() => match led {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.renew_interval()) => {}
            _ = shutdown_signal() => return Ok(()),
        }
    }
    leading.store(true, Ordering::SeqCst);
    metrics.leader.set(1);
    let renew = tokio::spawn(keep_leading(elector.clone(), args.lease_seconds));
    let stopped = tokio::select! {
        stopped = controller::run(ctx, scope) => stopped,
        lost = renew => {
            // Another replica may already reconcile: stop at once rather than race it.
            tracing::error!(?lost, "lost the leader lease; exiting");
            std::process::exit(1);
        }
    };
    // On a panic too: a standby takes over at once instead of after the lease expires.
    elector.release().await;
    if let Err(e) = &stopped {
        tracing::error!(error = %e, "exiting so that Kubernetes restarts the operator");
    }
    Ok(stopped?)
}

/// Renews the Lease until a renewal has failed for longer than the lease lasts.
async fn keep_leading(elector: Arc<LeaderElector>, lease_seconds: u64) {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(elector.renew_interval()).await;
        match elector.try_lead().await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "renewing the leader lease"),
        }
        if last_ok.elapsed() > Duration::from_secs(lease_seconds) {
            return;
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "vecshard-operator".into())
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Every replica is ready: a standby is healthy, it just waits for the Lease.
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/leader",
            get(move || {
                let leading = leading.load(Ordering::SeqCst);
                async move {
                    if leading {
                        "leader"
                    } else {
                        "standby"
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}
