//! Runs a backend (a shard or a router) behind its gRPC and HTTP listeners, and stops it
//! gracefully: listeners stop accepting, in-flight requests finish, the committer drains queued
//! writes, the store fsyncs.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vecshard_proto::v1::points_internal_server::PointsInternalServer;
use vecshard_proto::v1::points_server::PointsServer;

use crate::api::grpc_qdrant::{
    QdrantGrpc, Refusing, SnapshotsRefused, COLLECTIONS_METHODS, POINTS_METHODS, QDRANT_METHODS,
};
use crate::api::{grpc::GrpcApi, http, Backend};
use crate::security::{grpc_access, http_auth, HttpListener, HttpPeer, ServerSecurity};
use vecshard_proto::qdrant::{
    collections_server::CollectionsServer, points_server::PointsServer as QdrantPointsServer,
    qdrant_server::QdrantServer,
};
use vecshard_security::{AuthLayer, SecureListener};

pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub backend: Arc<dyn Backend>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds both listeners (port 0 picks a free port) and starts serving, in plaintext without
/// keys.
pub async fn start(
    shard: Arc<dyn Backend>,
    grpc_listen: SocketAddr,
    http_listen: SocketAddr,
) -> anyhow::Result<RunningServer> {
    start_secure(shard, grpc_listen, http_listen, ServerSecurity::plaintext()).await
}

/// As `start`, with TLS on both listeners when `security` has it, and its access policy in
/// front of every gRPC service and HTTP route.
pub async fn start_secure(
    shard: Arc<dyn Backend>,
    grpc_listen: SocketAddr,
    http_listen: SocketAddr,
    security: ServerSecurity,
) -> anyhow::Result<RunningServer> {
    let grpc_listener = TcpListener::bind(grpc_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {grpc_listen} (gRPC): {e}"))?;
    let http_listener = TcpListener::bind(http_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {http_listen} (HTTP): {e}"))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);

    let limit = shard.max_request_bytes() + 1024 * 1024;
    let points = PointsServer::new(GrpcApi::new(shard.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Qdrant's API beside vecshard's, on the same port (qdrant-client's gRPC mode).
    let qdrant = QdrantGrpc::new(shard.clone());
    let qdrant_points = Refusing::new(
        QdrantPointsServer::new(qdrant.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        POINTS_METHODS,
    );
    let qdrant_collections =
        Refusing::new(CollectionsServer::new(qdrant.clone()), COLLECTIONS_METHODS);
    let qdrant_root = Refusing::new(QdrantServer::new(qdrant), QDRANT_METHODS);
    // Replica-to-replica calls: served by shards, not by routers (`Backend::internal`).
    let internal = shard.internal().map(|api| {
        PointsInternalServer::new(api)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    // NOT_SERVING until the graph holds every stored point, like /readyz.
    health.set_not_serving::<PointsServer<GrpcApi>>().await;
    let readiness = {
        let (shard, stopped) = (shard.clone(), stopped.clone());
        tokio::spawn(async move {
            let ready = async {
                while !shard.is_ready() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                () = ready => health.set_serving::<PointsServer<GrpcApi>>().await,
                () = wait_for(stopped) => {}
            }
        })
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vecshard_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming = SecureListener::new(grpc_listener, security.tls.clone())?.into_stream();
    let grpc = tonic::transport::Server::builder()
        .layer(AuthLayer::new(security.policy.clone(), grpc_access))
        // Routers hedge reads and cancel the losing call, so a busy shard sees many streams
        // reset before it accepted them. h2's guard against rapid-reset floods (default 20
        // such streams) then answers GOAWAY ENHANCE_YOUR_CALM, failing every call on that
        // connection; allow as many as a router can have in flight.
        .http2_max_pending_accept_reset_streams(Some(1024))
        .add_service(points)
        .add_optional_service(internal)
        .add_service(qdrant_points)
        .add_service(qdrant_collections)
        .add_service(qdrant_root)
        .add_service(SnapshotsRefused)
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, wait_for(stopped.clone()));
    let http_listener = HttpListener(SecureListener::new(http_listener, security.tls.clone())?);
    let app = http::router(shard.clone()).layer(axum::middleware::from_fn_with_state(
        security.policy.clone(),
        http_auth,
    ));
    let http = axum::serve(
        http_listener,
        app.into_make_service_with_connect_info::<HttpPeer>(),
    )
    .with_graceful_shutdown(wait_for(stopped));

    let tasks = vec![
        readiness,
        tokio::spawn(async move {
            if let Err(e) = grpc.await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = http.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }),
    ];
    let tls = security.tls.is_some();
    tracing::info!(%grpc_addr, %http_addr, tls, collection = %shard.collection(), "serving");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        backend: shard,
        stop,
        tasks,
    })
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

impl RunningServer {
    /// Graceful stop: drain in-flight requests (for at most `DRAIN_TIMEOUT`, so a client that
    /// holds a stream open cannot block shutdown), then close the shard cleanly.
    pub async fn shutdown(self) {
        const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
        let _ = self.stop.send(true);
        let drain = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing anyway");
        }
        let backend = self.backend;
        let _ = tokio::task::spawn_blocking(move || backend.close()).await;
    }
}
