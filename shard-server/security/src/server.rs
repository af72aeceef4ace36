//! The server side: a listener that accepts TCP connections, runs TLS handshakes off the
//! accept loop (a slow or silent client cannot hold up the others), and yields connections
//! that know their `PeerInfo`. Certificates come from files and are reloaded when they change:
//! each handshake uses the config current at that moment, open connections are untouched.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::io::MaybeTls;
use crate::reload::Reloading;
use crate::tls_files;

/// Whether clients must, may or cannot show a certificate of the configured CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates are asked for.
    None,
    /// A client may show one (the system's components do) or not (applications, probes);
    /// `Policy` decides what each may call.
    Optional,
    /// The handshake fails without one.
    Required,
}

/// What a handler knows about the client of a connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The client showed a certificate signed by the configured client CA (a certificate of
    /// another CA fails the handshake, so shown means verified).
    pub client_cert: bool,
}

/// The TLS settings of a listener, reloaded from their files.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
    verifies_clients: bool,
}

impl ServerTls {
    pub fn load(
        cert: PathBuf,
        key: PathBuf,
        client_ca: Option<PathBuf>,
        client_auth: ClientAuth,
    ) -> Result<ServerTls, String> {
        if client_auth != ClientAuth::None && client_ca.is_none() {
            return Err("client certificates need a CA to check them against (--tls-ca)".into());
        }
        let client_ca = client_ca.filter(|_| client_auth != ClientAuth::None);
        let verifies_clients = client_ca.is_some();
        let mut paths = vec![cert.clone(), key.clone()];
        paths.extend(client_ca.clone());
        let config = Reloading::start("TLS server certificate", paths, false, move |files| {
            let certs = tls_files::certificates(&cert, &files[0])?;
            let private_key = tls_files::private_key(&key, &files[1])?;
            let builder = ServerConfig::builder_with_provider(crate::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let builder = match &client_ca {
                Some(ca) => {
                    let roots = tls_files::roots(ca, &files[2])?;
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(roots, crate::provider());
                    let verifier = match client_auth {
                        ClientAuth::Optional => verifier.allow_unauthenticated(),
                        ClientAuth::Required | ClientAuth::None => verifier,
                    };
                    builder.with_client_cert_verifier(
                        verifier
                            .build()
                            .map_err(|e| format!("{}: {e}", ca.display()))?,
                    )
                }
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(certs, private_key).map_err(|e| {
                format!(
                    "{} and {} do not make a usable certificate: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok(config)
        })?;
        Ok(ServerTls {
            config,
            verifies_clients,
        })
    }

    pub fn verifies_clients(&self) -> bool {
        self.verifies_clients
    }

    /// Certificate reloads since the start.
    pub fn reloads(&self) -> u64 {
        self.config.reloads()
    }
}

/// An accepted connection: TCP, or TLS over TCP, and who is at the other end.
pub struct Conn {
    io: MaybeTls<TlsStream<TcpStream>>,
    pub peer: PeerInfo,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

/// Accepted connections, ready to serve (handshakes done).
pub struct SecureListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<Conn>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl SecureListener {
    /// Starts accepting on `tcp`: TLS handshakes when `tls` is set, plain TCP otherwise.
    pub fn new(tcp: TcpListener, tls: Option<ServerTls>) -> io::Result<SecureListener> {
        let local_addr = tcp.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, tls, ready_tx));
        Ok(SecureListener {
            local_addr,
            ready,
            accepting,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection; pending forever once the accept loop has ended.
    pub async fn accept(&mut self) -> Conn {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    /// The connections as a stream (tonic's `serve_with_incoming`).
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Conn>> + Send {
        futures::stream::unfold(self, |mut this| async move {
            let conn = this.accept().await;
            Some((Ok(conn), this))
        })
    }
}

async fn accept_loop(tcp: TcpListener, tls: Option<ServerTls>, ready: mpsc::Sender<Conn>) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &tls else {
            let peer = PeerInfo {
                remote,
                tls: false,
                client_cert: false,
            };
            let conn = Conn {
                io: MaybeTls::Plain(stream),
                peer,
            };
            if ready.send(conn).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (config, ready) = (tls.config.get(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, config)).await {
                Ok(Ok(tls)) => {
                    let client_cert = tls.get_ref().1.peer_certificates().is_some();
                    let peer = PeerInfo {
                        remote,
                        tls: true,
                        client_cert,
                    };
                    let _ = ready
                        .send(Conn {
                            io: MaybeTls::Tls(Box::new(tls)),
                            peer,
                        })
                        .await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake refused"),
                Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
            }
        });
    }
}

/// What a client that speaks plain HTTP/1 to a TLS port reads back.
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 61\r\n\r\nthis port serves TLS only: connect with https:// or gRPC+TLS\n";

async fn handshake(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    // A TLS client opens with a handshake record (0x16). Anything else is plaintext: answer
    // an HTTP/1 client in words it can show instead of closing on it silently.
    let mut first = [0u8; 1];
    stream.peek(&mut first).await?;
    if first[0] != 0x16 {
        if first[0].is_ascii_uppercase() {
            let _ = stream.write_all(PLAINTEXT_ANSWER).await;
            let _ = stream.shutdown().await;
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plaintext on a TLS port",
        ));
    }
    TlsAcceptor::from(config).accept(stream).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plaintext_answer_declares_its_length() {
        let text = std::str::from_utf8(super::PLAINTEXT_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
