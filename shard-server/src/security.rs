//! TLS and API keys of a `vecshard-server` process: the flags (`SecurityArgs`), the server
//! side (`ServerSecurity`: the listeners' TLS and the access policy, with the classification
//! of every gRPC method and HTTP route vecshard serves), the client side this process uses
//! to call other replicas (`client`), and the HTTP pieces axum needs (a listener over
//! `SecureListener` and the policy as middleware). The mechanisms live in `vecshard-security`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use http::Method;
use vecshard_security::{
    Access, ApiKeys, ClientAuth, ClientSecurity, ClientTls, Conn, PeerInfo, Policy, SecureListener,
    ServerTls,
};

#[derive(Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Certificate (PEM, chain allowed) served on both ports; with --tls-key turns TLS on.
    /// Also the client certificate this process shows when it calls other replicas. Reloaded
    /// when the file changes.
    #[arg(long, env = "VECSHARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "VECSHARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The collection's CA (PEM): a client showing a certificate it signed is one of the
    /// collection's own components (router, replica, operator), and the servers this process
    /// calls must have a certificate it signed.
    #[arg(long, env = "VECSHARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the collection's components only: every request but health probes and /metrics
    /// needs a client certificate signed by --tls-ca (shard servers behind routers).
    #[arg(long, env = "VECSHARD_COMPONENTS_ONLY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub components_only: bool,
    /// Directory with the API keys: files `read-write` and `read-only`, one key per line
    /// (a mounted Secret). Reloaded when they change; rotate by listing the old and the new
    /// key for a while.
    #[arg(long, env = "VECSHARD_API_KEYS_DIR")]
    pub api_keys_dir: Option<PathBuf>,
    /// /metrics needs a key (or a client certificate) like any read; open by default.
    #[arg(long, env = "VECSHARD_METRICS_NEED_KEY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_need_key: bool,
}

/// A server's TLS settings (none: plaintext) and access policy.
#[derive(Clone, Default)]
pub struct ServerSecurity {
    pub tls: Option<ServerTls>,
    pub policy: Arc<Policy>,
}

impl ServerSecurity {
    /// Plaintext, no keys.
    pub fn plaintext() -> ServerSecurity {
        ServerSecurity::default()
    }
}

impl SecurityArgs {
    fn keys(&self) -> Result<Option<ApiKeys>, String> {
        self.api_keys_dir
            .as_deref()
            .map(ApiKeys::from_dir)
            .transpose()
            .map_err(|e| format!("--api-keys-dir: {e}"))
    }

    /// The listeners' TLS and the policy. Call inside the runtime (files are watched).
    pub fn server(&self) -> Result<ServerSecurity, String> {
        if self.components_only && self.tls_ca.is_none() {
            return Err(
                "--components-only needs --tls-ca (the CA of the components' client certificates)"
                    .into(),
            );
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                ServerTls::load(
                    cert.clone(),
                    key.clone(),
                    self.tls_ca.clone(),
                    if self.tls_ca.is_some() {
                        ClientAuth::Optional
                    } else {
                        ClientAuth::None
                    },
                )
                .map_err(|e| format!("TLS: {e}"))?,
            ),
            (None, None) if self.tls_ca.is_some() && self.components_only => {
                return Err("--components-only needs TLS: give --tls-cert and --tls-key".into())
            }
            _ => None,
        };
        let policy = Policy {
            keys: self.keys()?,
            verifies_client_certs: tls.as_ref().is_some_and(|t| t.verifies_clients()),
            require_client_cert: self.components_only,
            metrics_need_key: self.metrics_need_key,
        };
        Ok(ServerSecurity {
            tls,
            policy: Arc::new(policy),
        })
    }

    /// How this process calls other replicas: TLS with its own certificate when --tls-ca is
    /// given (any certificate of the CA is accepted, whatever name the replica was reached
    /// by: `ClientTls::load_internal`), and the first read-write key (for servers that are
    /// told apart by keys only).
    pub fn client(&self) -> Result<ClientSecurity, String> {
        let tls = self
            .tls_ca
            .as_ref()
            .map(|ca| {
                let identity = self.tls_cert.clone().zip(self.tls_key.clone());
                ClientTls::load_internal(ca.clone(), identity)
                    .map_err(|e| format!("TLS client: {e}"))
            })
            .transpose()?;
        Ok(ClientSecurity::none()
            .with_tls(tls)
            .with_keys_of(self.keys()?))
    }
}

/// gRPC methods that only read.
const READ_METHODS: &[&str] = &[
    // vecshard.v1.Points
    "/vecshard.v1.Points/Get",
    "/vecshard.v1.Points/Search",
    "/vecshard.v1.Points/SearchBatch",
    "/vecshard.v1.Points/Count",
    "/vecshard.v1.Points/Scroll",
    "/vecshard.v1.Points/Info",
    "/vecshard.v1.Points/Cluster",
    // qdrant.Points
    "/qdrant.Points/Get",
    "/qdrant.Points/Search",
    "/qdrant.Points/SearchBatch",
    "/qdrant.Points/Scroll",
    "/qdrant.Points/Count",
    "/qdrant.Points/Query",
    "/qdrant.Points/QueryBatch",
    // qdrant.Collections
    "/qdrant.Collections/Get",
    "/qdrant.Collections/List",
    "/qdrant.Collections/CollectionExists",
];

/// The access class of a gRPC call; methods not listed as reads are writes (fail closed).
pub fn grpc_access(_: &Method, path: &str) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") || path == "/qdrant.Qdrant/HealthCheck" {
        Access::Open
    } else if path.starts_with("/vecshard.v1.PointsInternal/") {
        Access::Internal
    } else if READ_METHODS.contains(&path) || path.starts_with("/grpc.reflection.") {
        Access::Read
    } else {
        Access::Write
    }
}

/// The access class of an HTTP request (routes in `api/http.rs`); unlisted ones are writes.
pub fn http_access(method: &Method, path: &str) -> Access {
    const READ_POSTS: &[&str] = &[
        "/points",
        "/points/search",
        "/points/search/batch",
        "/points/query",
        "/points/query/batch",
        "/points/scroll",
        "/points/count",
    ];
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/healthz" | "/livez" | "/readyz") => Access::Open,
        (&Method::GET | &Method::HEAD, "/metrics") => Access::Metrics,
        (&Method::GET | &Method::HEAD, _) => Access::Read,
        (&Method::POST, p)
            if p.starts_with("/collections/")
                && READ_POSTS.iter().any(|tail| {
                    p.strip_suffix(tail)
                        .is_some_and(|head| head.matches('/').count() == 2)
                }) =>
        {
            Access::Read
        }
        _ => Access::Write,
    }
}

/// `axum::serve` over a `SecureListener`: TLS when configured, and each request knows its
/// connection's `PeerInfo` (`ConnectInfo<HttpPeer>`).
pub struct HttpListener(pub SecureListener);

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Conn, SocketAddr) {
        let conn = self.0.accept().await;
        let remote = conn.peer.remote;
        (conn, remote)
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}

#[derive(Clone, Debug)]
pub struct HttpPeer(pub PeerInfo);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> HttpPeer {
        HttpPeer(stream.io().peer.clone())
    }
}

/// The policy as axum middleware; refusals in Qdrant's error shape (401/403).
pub async fn http_auth(
    State(policy): State<Arc<Policy>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<HttpPeer>>()
        .map(|info| &info.0 .0);
    let access = http_access(request.method(), request.uri().path());
    match policy.decide(access, peer, request.headers()) {
        Ok(_) => next.run(request).await,
        Err(denial) => {
            let body = serde_json::json!({
                "status": {"error": denial.message()},
                "time": 0.0,
                "error": {"code": denial.code(), "message": denial.message()},
            });
            (denial.http_status(), axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart_on_both_apis() {
        let get = Method::GET;
        let post = Method::POST;
        let put = Method::PUT;
        assert_eq!(http_access(&get, "/readyz"), Access::Open);
        assert_eq!(http_access(&get, "/metrics"), Access::Metrics);
        assert_eq!(http_access(&get, "/collections/docs"), Access::Read);
        for read in [
            "search",
            "search/batch",
            "query",
            "query/batch",
            "scroll",
            "count",
        ] {
            let path = format!("/collections/docs/points/{read}");
            assert_eq!(http_access(&post, &path), Access::Read, "{path}");
        }
        assert_eq!(http_access(&post, "/collections/docs/points"), Access::Read);
        assert_eq!(http_access(&put, "/collections/docs/points"), Access::Write);
        assert_eq!(
            http_access(&post, "/collections/docs/points/delete"),
            Access::Write
        );
        assert_eq!(
            http_access(&post, "/collections/docs/points/payload"),
            Access::Write
        );
        assert_eq!(http_access(&put, "/collections/docs"), Access::Write);
        // A path that only ends like a read is not one.
        assert_eq!(
            http_access(&post, "/collections/a/b/points/search"),
            Access::Write
        );
        assert_eq!(
            http_access(&Method::DELETE, "/collections/docs"),
            Access::Write
        );

        assert_eq!(
            grpc_access(&post, "/vecshard.v1.Points/Search"),
            Access::Read
        );
        assert_eq!(
            grpc_access(&post, "/vecshard.v1.Points/Upsert"),
            Access::Write
        );
        assert_eq!(
            grpc_access(&post, "/vecshard.v1.PointsInternal/ReadLog"),
            Access::Internal
        );
        assert_eq!(grpc_access(&post, "/qdrant.Points/Query"), Access::Read);
        assert_eq!(
            grpc_access(&post, "/qdrant.Points/SetPayload"),
            Access::Write
        );
        assert_eq!(
            grpc_access(&post, "/qdrant.Points/Recommend"),
            Access::Write
        );
        assert_eq!(
            grpc_access(&post, "/qdrant.Collections/Delete"),
            Access::Write
        );
        assert_eq!(
            grpc_access(&post, "/qdrant.Snapshots/Create"),
            Access::Write
        );
        assert_eq!(
            grpc_access(&post, "/grpc.health.v1.Health/Check"),
            Access::Open
        );
        assert_eq!(
            grpc_access(&post, "/qdrant.Qdrant/HealthCheck"),
            Access::Open
        );
    }

    #[test]
    fn every_read_method_is_a_method_the_protos_define() {
        let defined = |path: &str| {
            let (service, method) = path.trim_start_matches('/').rsplit_once('/').unwrap();
            let proto = if service.starts_with("qdrant.") {
                include_str!("../proto/proto/qdrant/qdrant.proto")
            } else {
                include_str!("../proto/proto/vecshard/v1/points.proto")
            };
            let service = service.rsplit('.').next().unwrap();
            proto.contains(&format!("service {service} {{"))
                && proto.contains(&format!("rpc {method}("))
        };
        for path in READ_METHODS {
            assert!(defined(path), "{path}");
        }
    }
}
