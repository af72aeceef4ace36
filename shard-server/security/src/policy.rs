//! Who may call what. A request falls in one `Access` class (by its gRPC method or HTTP route,
//! classified by the server that knows its routes); `Policy::decide` combines the class, the
//! connection's client certificate and the request's API key into an answer. Pure, so every
//! case is unit-tested; `AuthLayer` applies it to a tonic server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::keys::{presented, ApiKeys, Presented, Role};
use crate::server::PeerInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Liveness, readiness, gRPC health: open, or kubelet could not probe.
    Open,
    /// `/metrics`: open unless the policy says otherwise (scrapers rarely hold keys).
    Metrics,
    /// Reads: search, get, count, scroll, info.
    Read,
    /// Anything that changes data or asks to (refused methods included: fail closed).
    Write,
    /// Replica-to-replica and operator-to-shard RPCs.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No usable credentials (gRPC UNAUTHENTICATED, HTTP 401).
    Unauthenticated(String),
    /// Credentials that do not allow this (gRPC PERMISSION_DENIED, HTTP 403).
    PermissionDenied(String),
}

impl Denial {
    pub fn message(&self) -> &str {
        match self {
            Denial::Unauthenticated(m) | Denial::PermissionDenied(m) => m,
        }
    }

    /// The gRPC code's name (also in HTTP error bodies, as for other errors).
    pub fn code(&self) -> &'static str {
        match self {
            Denial::Unauthenticated(_) => "UNAUTHENTICATED",
            Denial::PermissionDenied(_) => "PERMISSION_DENIED",
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        match self {
            Denial::Unauthenticated(m) => tonic::Status::unauthenticated(m.clone()),
            Denial::PermissionDenied(m) => tonic::Status::permission_denied(m.clone()),
        }
    }

    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Denial::Unauthenticated(_) => http::StatusCode::UNAUTHORIZED,
            Denial::PermissionDenied(_) => http::StatusCode::FORBIDDEN,
        }
    }
}

/// A server's access rules.
#[derive(Clone, Default)]
pub struct Policy {
    /// API keys; `None`: requests need no key.
    pub keys: Option<ApiKeys>,
    /// Client certificates of the collection's CA are checked on this port (mutual TLS): then
    /// only their holders may call internal RPCs, keys or not.
    pub verifies_client_certs: bool,
    /// Everything but `Open` (and `Metrics` unless `metrics_need_key`) needs a client
    /// certificate: shard servers, which serve only the collection's own components.
    pub require_client_cert: bool,
    /// `/metrics` needs a read key (or a client certificate) like any read.
    pub metrics_need_key: bool,
}

/// Outcome of an allowed request: who it was allowed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    Open,
    Component,
    Key(Role),
}

impl Policy {
    /// No checks at all (a server started without keys and TLS).
    pub fn open() -> Policy {
        Policy::default()
    }

    pub fn decide(
        &self,
        access: Access,
        peer: Option<&PeerInfo>,
        headers: &http::HeaderMap,
    ) -> Result<Allowed, Denial> {
        let access = match access {
            Access::Open => return Ok(Allowed::Open),
            Access::Metrics if !self.metrics_need_key => return Ok(Allowed::Open),
            Access::Metrics => Access::Read,
            other => other,
        };
        if peer.is_some_and(|p| p.client_cert) {
            return Ok(Allowed::Component);
        }
        if self.require_client_cert {
            return Err(Denial::Unauthenticated(
                "this server answers the collection's own components only: it needs a client certificate signed by the collection's CA; applications call the router".into(),
            ));
        }
        if access == Access::Internal && self.verifies_client_certs {
            return Err(Denial::PermissionDenied(
                "internal replication RPCs need a client certificate signed by the collection's CA"
                    .into(),
            ));
        }
        let Some(keys) = &self.keys else {
            return Ok(Allowed::Open);
        };
        let keys = keys.get();
        if keys.is_empty() {
            return Ok(Allowed::Open);
        }
        let role = match presented(headers) {
            Presented::Missing => {
                return Err(Denial::Unauthenticated(
                    "an API key is required: send it in the `api-key` header or as `authorization: Bearer <key>`".into(),
                ))
            }
            Presented::Malformed(why) => return Err(Denial::Unauthenticated(why.into())),
            Presented::Key(key) => keys
                .role_of(key)
                .ok_or_else(|| Denial::Unauthenticated("invalid API key".into()))?,
        };
        match (access, role) {
            (Access::Read, _) | (_, Role::ReadWrite) => Ok(Allowed::Key(role)),
            (Access::Internal, Role::ReadOnly) => Err(Denial::PermissionDenied(
                "internal replication RPCs need a read-write key".into(),
            )),
            _ => Err(Denial::PermissionDenied(
                "this API key is read-only: it can search, get, count, scroll and read collection info, not write".into(),
            )),
        }
    }
}

/// How a server classifies its requests (by gRPC path, or HTTP method and path).
pub type Classify = fn(&http::Method, &str) -> Access;

/// A tower layer that applies a `Policy` in front of a tonic server's services; a refused
/// call gets its gRPC status without reaching them.
#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
    classify: Classify,
}

impl AuthLayer {
    pub fn new(policy: Arc<Policy>, classify: Classify) -> AuthLayer {
        AuthLayer { policy, classify }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Auth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let access = (self.layer.classify)(request.method(), request.uri().path());
        let peer = request.extensions().get::<PeerInfo>();
        match self.layer.policy.decide(access, peer, request.headers()) {
            Ok(_) => Box::pin(self.inner.call(request)),
            Err(denial) => {
                let response = denial.to_status().into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeySet;

    fn keys() -> Option<ApiKeys> {
        Some(ApiKeys::fixed(
            KeySet::new(&["rw-1".into(), "rw-2".into()], &["ro-1".into()]).unwrap(),
        ))
    }

    fn peer(client_cert: bool) -> PeerInfo {
        PeerInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            tls: true,
            client_cert,
        }
    }

    fn with_key(key: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("api-key", key.parse().unwrap());
        h
    }

    fn unauthenticated(r: Result<Allowed, Denial>) -> bool {
        matches!(r, Err(Denial::Unauthenticated(_)))
    }

    fn denied(r: Result<Allowed, Denial>) -> bool {
        matches!(r, Err(Denial::PermissionDenied(_)))
    }

    #[test]
    fn keys_decide_reads_and_writes() {
        let p = Policy {
            keys: keys(),
            ..Policy::default()
        };
        let none = http::HeaderMap::new();
        assert!(unauthenticated(p.decide(Access::Read, None, &none)));
        assert!(unauthenticated(p.decide(
            Access::Read,
            None,
            &with_key("nope")
        )));
        assert_eq!(
            p.decide(Access::Read, None, &with_key("ro-1")),
            Ok(Allowed::Key(Role::ReadOnly))
        );
        assert!(denied(p.decide(Access::Write, None, &with_key("ro-1"))));
        assert!(denied(p.decide(Access::Internal, None, &with_key("ro-1"))));
        for key in ["rw-1", "rw-2"] {
            assert!(
                p.decide(Access::Write, None, &with_key(key)).is_ok(),
                "{key}"
            );
            assert!(
                p.decide(Access::Internal, None, &with_key(key)).is_ok(),
                "{key}"
            );
        }
        // Probes and metrics stay open; metrics can be closed.
        assert_eq!(p.decide(Access::Open, None, &none), Ok(Allowed::Open));
        assert_eq!(p.decide(Access::Metrics, None, &none), Ok(Allowed::Open));
        let closed = Policy {
            metrics_need_key: true,
            ..p.clone()
        };
        assert!(unauthenticated(closed.decide(Access::Metrics, None, &none)));
        assert!(closed
            .decide(Access::Metrics, None, &with_key("ro-1"))
            .is_ok());
    }

    #[test]
    fn internal_rpcs_need_the_collections_certificate_when_tls_checks_clients() {
        let p = Policy {
            keys: keys(),
            verifies_client_certs: true,
            ..Policy::default()
        };
        // Even a read-write key cannot replace the certificate.
        assert!(denied(p.decide(
            Access::Internal,
            Some(&peer(false)),
            &with_key("rw-1")
        )));
        assert_eq!(
            p.decide(Access::Internal, Some(&peer(true)), &http::HeaderMap::new()),
            Ok(Allowed::Component)
        );
        // Applications without a certificate still use keys for the public API.
        assert!(p
            .decide(Access::Write, Some(&peer(false)), &with_key("rw-1"))
            .is_ok());
    }

    #[test]
    fn shard_servers_serve_certificate_holders_only_but_stay_probeable() {
        let p = Policy {
            keys: keys(),
            verifies_client_certs: true,
            require_client_cert: true,
            ..Policy::default()
        };
        assert!(unauthenticated(p.decide(
            Access::Read,
            Some(&peer(false)),
            &with_key("rw-1")
        )));
        assert!(p
            .decide(Access::Write, Some(&peer(true)), &http::HeaderMap::new())
            .is_ok());
        assert!(p
            .decide(Access::Open, Some(&peer(false)), &http::HeaderMap::new())
            .is_ok());
        assert!(p
            .decide(Access::Metrics, Some(&peer(false)), &http::HeaderMap::new())
            .is_ok());
    }

    #[test]
    fn without_keys_or_tls_everything_is_open() {
        let p = Policy::open();
        for access in [Access::Read, Access::Write, Access::Internal] {
            assert!(p.decide(access, None, &http::HeaderMap::new()).is_ok());
        }
    }
}
