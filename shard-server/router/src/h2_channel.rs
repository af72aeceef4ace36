//! A gRPC channel to one server (the router's to each replica, the benchmark client's to the
//! server it measures), on the `h2` crate directly.
//!
//! Why not tonic's `Channel`: it sends a unary call as three HTTP/2 writes (HEADERS, then DATA,
//! then an empty DATA frame that ends the stream). hyper streams the request body from a task
//! of its own, which may send only once the connection task has opened the stream, and each
//! step is flushed on its own. On loopback each write is a segment that wakes the replica, and
//! on the benchmark VM a wake-up across vCPUs costs 35–70 µs (pipe ping-pong between two
//! threads: 70–143 µs per round trip on two vCPUs, 10 µs on one). The call also passes through
//! tonic's request buffer task and hyper's dispatch task. Here the calling task hands the
//! whole request to the connection at once (HEADERS, and DATA that ends the stream), which
//! h2 writes in one go, and nothing sits between the caller and the connection task.
//!
//! Only unary requests: the request body is gathered before it is sent (responses may stream).
//! Connecting is lazy; a connection that closed, failed or stopped answering is replaced on the
//! next call, so a replica that was down (or came back at a new address behind its name) is
//! used again once it is back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http_body::Frame;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tonic::body::Body;
use tonic::Status;
use vecshard_security::keys::API_KEY_HEADER;
use vecshard_security::ClientSecurity;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 connection to the replica, numbered so that a failed one is discarded only if
/// it was not replaced meanwhile.
#[derive(Clone)]
struct Connection {
    number: u64,
    sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection task ends (peer closed, GOAWAY, I/O error).
    closed: Arc<AtomicBool>,
}

/// A cheap handle (clone per call) to the server at one address.
#[derive(Clone)]
pub struct H2Channel {
    inner: Arc<Inner>,
}

struct Inner {
    authority: Authority,
    /// TLS and the API key of the calls (`vecshard-security`).
    security: ClientSecurity,
    scheme: Scheme,
    connect_timeout: Duration,
    /// Longest wait for an answer's headers; a shorter `grpc-timeout` of the call wins.
    request_timeout: Duration,
    connection: Mutex<Option<Connection>>,
    connections_made: AtomicU64,
    /// Held while connecting, so that concurrent calls wait for one attempt instead of each
    /// opening a connection of its own.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Channel {
    /// A channel to `addr` (`http://host:port`, or `https://` with TLS settings in
    /// `security`); nothing is connected until the first call. With TLS settings every
    /// connection is TLS, whatever the scheme says: a collection's components all speak TLS or
    /// none does.
    pub fn new(
        addr: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
        security: ClientSecurity,
    ) -> Result<H2Channel, String> {
        let uri: Uri = addr.parse().map_err(|e| format!("{e}"))?;
        let scheme = match (uri.scheme_str(), security.tls().is_some()) {
            (Some("http"), false) => Scheme::HTTP,
            (Some("http" | "https"), true) => Scheme::HTTPS,
            (Some("https"), false) => {
                return Err(
                    "https:// needs a CA to check the server's certificate (--tls-ca)".into(),
                )
            }
            _ => return Err("it must start with http:// or https://".into()),
        };
        let authority = uri
            .authority()
            .filter(|a| a.port_u16().is_some())
            .cloned()
            .ok_or("it must name a host and a port")?;
        Ok(H2Channel {
            inner: Arc::new(Inner {
                authority,
                security,
                scheme,
                connect_timeout,
                request_timeout,
                connection: Mutex::new(None),
                connections_made: AtomicU64::new(0),
                connecting: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn open_connection(&self) -> Option<Connection> {
        self.inner
            .connection
            .lock()
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn connection(&self) -> Result<Connection, Status> {
        if let Some(c) = self.open_connection() {
            return Ok(c);
        }
        let _connecting = self.inner.connecting.lock().await;
        // Another call may have connected while this one waited.
        if let Some(c) = self.open_connection() {
            return Ok(c);
        }
        let c = self.connect().await?;
        *self.inner.connection.lock() = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<Connection, Status> {
        let addr = self.inner.authority.as_str();
        let timeout = self.inner.connect_timeout;
        let handshake = async {
            let authority = &self.inner.authority;
            let port = authority.port_u16().expect("checked in new");
            let stream = self
                .inner
                .security
                .connect(authority.host(), port)
                .await
                .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
            h2::client::Builder::new()
                // As tonic's: room for large search batches and write batches in flight.
                .initial_window_size(1 << 20)
                .initial_connection_window_size(1 << 20)
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| Status::unavailable(format!("HTTP/2 handshake with {addr}: {e}")))
        };
        let (sender, connection) =
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| {
                    Status::unavailable(format!("connecting to {addr} took over {timeout:?}"))
                })??;
        let closed = Arc::new(AtomicBool::new(false));
        let (done, addr) = (closed.clone(), addr.to_string());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "connection to replica ended");
            }
            done.store(true, Ordering::Release);
        });
        Ok(Connection {
            number: self.inner.connections_made.fetch_add(1, Ordering::Relaxed),
            sender,
            closed,
        })
    }

    /// Forgets `failed` if it is still the current connection, so that the next call opens a
    /// new one. Calls still running on it finish undisturbed.
    fn discard(&self, failed: &Connection) {
        let mut connection = self.inner.connection.lock();
        if connection
            .as_ref()
            .is_some_and(|c| c.number == failed.number)
        {
            *connection = None;
        }
    }

    async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        let timeout = grpc_timeout(request.headers()).map_or(self.inner.request_timeout, |t| {
            t.min(self.inner.request_timeout)
        });
        let (mut head, body) = request.into_parts();
        // tonic gives the path only; an HTTP/2 request also carries scheme and authority.
        let mut uri = std::mem::take(&mut head.uri).into_parts();
        uri.scheme = Some(self.inner.scheme.clone());
        uri.authority = Some(self.inner.authority.clone());
        head.uri =
            Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;
        if let Some(key) = self.inner.security.key_header() {
            head.headers.insert(API_KEY_HEADER, key);
        }
        // A unary request's body is one encoded message, ready at once.
        let data = body.collect().await?.to_bytes();
        let connection = self.connection().await?;
        let addr = &self.inner.authority;
        let call = async {
            let mut sender = connection.sender.clone().ready().await?;
            let (response, mut stream) =
                sender.send_request(http::Request::from_parts(head, ()), false)?;
            // h2 buffers the data until the connection task opens the stream, and then writes
            // HEADERS and DATA together.
            stream.send_data(data, true)?;
            response.await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.map(|recv| Body::new(ResponseBody::new(recv)))),
            Ok(Err(e)) => {
                if e.is_go_away() || e.is_io() || connection.closed.load(Ordering::Acquire) {
                    self.discard(&connection);
                }
                Err(status_of(addr, &e))
            }
            Err(_) => {
                // A connection whose peer vanished without closing it never fails on its own.
                self.discard(&connection);
                Err(Status::deadline_exceeded(format!(
                    "{addr} did not answer within {timeout:?}"
                )))
            }
        }
    }
}

impl tower_service::Service<http::Request<Body>> for H2Channel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call: connecting happens inside it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move { channel.send(request).await.map_err(BoxError::from) })
    }
}

/// An h2 response stream as an HTTP body: data frames (their flow-control capacity handed
/// back as they arrive, so the replica may send more), then the trailers that carry the
/// gRPC status.
struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl ResponseBody {
    fn new(recv: h2::RecvStream) -> Self {
        ResponseBody {
            recv,
            data_done: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        Poll::Ready(
            ready!(self.recv.poll_trailers(cx))
                .transpose()
                .map(|t| t.map(Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// An HTTP/2 failure as the status the router acts on, as tonic maps them: a replica
/// that answered GOAWAY `ENHANCE_YOUR_CALM` is refusing for overload (the read goes to another
/// replica, this one stays in rotation); anything else means the replica cannot be reached.
fn status_of(addr: &Authority, e: &h2::Error) -> Status {
    let message = format!("{addr}: {e}");
    match e.reason() {
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(message),
        Some(h2::Reason::CANCEL) => Status::cancelled(message),
        _ => Status::unavailable(message),
    }
}

/// The call's own deadline from its `grpc-timeout` header ("250m", "3S", …), if it has one.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> ClientSecurity {
        ClientSecurity::none()
    }

    fn headers(timeout: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", timeout.parse().unwrap());
        h
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(
            grpc_timeout(&headers("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(grpc_timeout(&headers("3S")), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout(&headers("2M")), Some(Duration::from_secs(120)));
        assert_eq!(
            grpc_timeout(&headers("1H")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(grpc_timeout(&headers("7u")), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(&headers("9n")), Some(Duration::from_nanos(9)));
        assert_eq!(grpc_timeout(&headers("10")), None);
        assert_eq!(grpc_timeout(&headers("x")), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[test]
    fn http2_failures_map_to_what_the_router_acts_on() {
        let addr: Authority = "127.0.0.1:7100".parse().unwrap();
        let calm = status_of(&addr, &h2::Error::from(h2::Reason::ENHANCE_YOUR_CALM));
        assert_eq!(calm.code(), tonic::Code::ResourceExhausted);
        assert!(calm.message().starts_with("127.0.0.1:7100: "), "{calm:?}");
        let refused = status_of(&addr, &h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        let cancel = status_of(&addr, &h2::Error::from(h2::Reason::CANCEL));
        assert_eq!(cancel.code(), tonic::Code::Cancelled);
    }

    #[test]
    fn addresses_must_be_plain_http_with_a_port() {
        let t = Duration::from_secs(1);
        assert!(H2Channel::new("http://127.0.0.1:7100", t, t, none()).is_ok());
        assert!(H2Channel::new("https://127.0.0.1:7100", t, t, none()).is_err());
        assert!(H2Channel::new("http://127.0.0.1", t, t, none()).is_err());
        assert!(H2Channel::new("not a uri", t, t, none()).is_err());
    }

    #[tokio::test]
    async fn a_replica_that_is_down_is_unavailable_naming_it() {
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let t = Duration::from_secs(1);
        let mut client = vecshard_proto::v1::points_client::PointsClient::new(
            H2Channel::new(&addr, t, t, none()).unwrap(),
        );
        let status = client
            .info(vecshard_proto::v1::InfoRequest {
                collection: "docs".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains(&port.to_string()), "{status:?}");
    }
}
