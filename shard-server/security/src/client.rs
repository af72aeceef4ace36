//! The client side: TLS connections that check the server against the collection's CA and
//! present the component's own certificate (mutual TLS), and gRPC channels that also send an
//! API key. Every vecshard client (router, replicas, operator, vecshardctl, vecshard-bench)
//! connects through `ClientSecurity`.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::io::MaybeTls;
use crate::keys::ApiKeys;
use crate::reload::Reloading;
use crate::tls_files;

/// A client connection, encrypted or not.
pub type ClientConn = MaybeTls<TlsStream<TcpStream>>;

/// Client TLS settings, reloaded from their files (a renewed client certificate is used by
/// the next connection; open ones keep theirs).
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<Reloading<ClientConfig>>,
}

impl ClientTls {
    /// Trusts servers whose certificate `ca` signed for the host name connected to; presents
    /// `identity` (certificate, key) when given.
    pub fn load(ca: PathBuf, identity: Option<(PathBuf, PathBuf)>) -> Result<ClientTls, String> {
        ClientTls::load_checking(ca, identity, Names::Checked)
    }

    /// For a collection's components calling each other: trusts any certificate that `ca`
    /// signed (chain and validity checked), whatever name it was reached by. Replicas are
    /// reached by pod IP and per-pod DNS names that change with the shard count, and the CA
    /// is the collection's own, so a certificate it signed is a component of the collection.
    pub fn load_internal(
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Result<ClientTls, String> {
        ClientTls::load_checking(ca, identity, Names::Ignored)
    }

    /// As `load_internal`, from PEM held in memory (the operator's copy of a collection's
    /// Secret) instead of files; `identity` is (certificate, key).
    pub fn internal_from_pem(
        ca: Vec<u8>,
        identity: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<ClientTls, String> {
        let mut files = vec![ca];
        if let Some((cert, key)) = identity {
            files.extend([cert, key]);
        }
        let has_identity = files.len() == 3;
        let build = client_config(
            PathBuf::from("ca.crt"),
            has_identity.then(|| (PathBuf::from("tls.crt"), PathBuf::from("tls.key"))),
            Names::Ignored,
        );
        let config = Reloading::start("TLS client certificate", Vec::new(), false, move |_| {
            build(&files)
        })?;
        Ok(ClientTls { config })
    }

    fn load_checking(
        ca: PathBuf,
        identity: Option<(PathBuf, PathBuf)>,
        names: Names,
    ) -> Result<ClientTls, String> {
        let mut paths = vec![ca.clone()];
        if let Some((cert, key)) = &identity {
            paths.extend([cert.clone(), key.clone()]);
        }
        let build = client_config(ca, identity, names);
        let config = Reloading::start("TLS client certificate", paths, false, build)?;
        Ok(ClientTls { config })
    }

    /// Runs the TLS handshake over `tcp`, checking the server's certificate for `host`.
    pub async fn handshake(&self, host: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?
            .to_owned();
        TlsConnector::from(self.config.get())
            .connect(name, tcp)
            .await
    }

    pub fn reloads(&self) -> u64 {
        self.config.reloads()
    }

    /// The rustls config in force (for clients built on other stacks, e.g. an HTTP client).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.get()
    }
}

/// Builds a client config from the PEM contents of (`ca`, then `identity`'s certificate and
/// key); the paths name the files in errors.
fn client_config(
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
    names: Names,
) -> impl Fn(&[Vec<u8>]) -> Result<ClientConfig, String> + Send + Sync + 'static {
    move |files: &[Vec<u8>]| {
        let roots = tls_files::roots(&ca, &files[0])?;
        let builder = ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match names {
            Names::Checked => builder.with_root_certificates(roots),
            Names::Ignored => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, crate::provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyNameOfTheCa(webpki)))
            }
        };
        let mut config = match &identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    tls_files::certificates(cert, &files[1])?,
                    tls_files::private_key(key, &files[2])?,
                )
                .map_err(|e| {
                    format!(
                        "{} and {} do not make a usable certificate: {e}",
                        cert.display(),
                        key.display()
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

#[derive(Clone, Copy)]
enum Names {
    Checked,
    Ignored,
}

/// webpki's verification, except that a certificate valid for another name is accepted.
#[derive(Debug)]
struct AnyNameOfTheCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameOfTheCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Where a client's API key comes from.
#[derive(Clone)]
enum KeySource {
    Fixed(HeaderValue),
    /// The first read-write key of a (reloading) key set: the key a component sends to the
    /// other components of its collection when they are not told apart by certificates.
    ReadWriteOf(ApiKeys),
}

/// How a client connects: TLS or not, API key or not.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    tls: Option<ClientTls>,
    api_key: Option<KeySource>,
    /// The name the server's certificate is checked for, when it is not the host connected to
    /// (a Service reached by its cluster IP, like curl's `--resolve`).
    server_name: Option<String>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Whether there is a key, never the key.
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field("api_key", &self.api_key.is_some())
            .finish()
    }
}

impl ClientSecurity {
    /// Plain TCP, no key.
    pub fn none() -> ClientSecurity {
        ClientSecurity::default()
    }

    pub fn with_tls(mut self, tls: Option<ClientTls>) -> ClientSecurity {
        self.tls = tls;
        self
    }

    /// Sends `key` with every call.
    pub fn with_api_key(mut self, key: Option<&str>) -> Result<ClientSecurity, String> {
        self.api_key = match key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(key)
                    .map_err(|_| "the API key must be visible ASCII characters".to_string())?;
                value.set_sensitive(true);
                Some(KeySource::Fixed(value))
            }
        };
        Ok(self)
    }

    /// Sends the first read-write key of `keys` with every call.
    pub fn with_keys_of(mut self, keys: Option<ApiKeys>) -> ClientSecurity {
        self.api_key = keys.map(KeySource::ReadWriteOf);
        self
    }

    /// Checks the server's certificate for `name` instead of the host connected to.
    pub fn with_server_name(mut self, name: Option<&str>) -> ClientSecurity {
        self.server_name = name.map(String::from);
        self
    }

    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// The `api-key` header value to send, if any.
    pub fn key_header(&self) -> Option<HeaderValue> {
        match self.api_key.as_ref()? {
            KeySource::Fixed(value) => Some(value.clone()),
            KeySource::ReadWriteOf(keys) => {
                let mut value = HeaderValue::from_str(keys.get().first_read_write()?).ok()?;
                value.set_sensitive(true);
                Some(value)
            }
        }
    }

    /// Opens a connection to `host:port`: TLS when configured.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<ClientConn> {
        let tcp =
            TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.tls {
            Some(tls) => {
                let name = self.server_name.as_deref().unwrap_or(host);
                MaybeTls::Tls(Box::new(tls.handshake(name, tcp).await?))
            }
            None => MaybeTls::Plain(tcp),
        })
    }

    /// A lazily connecting gRPC channel to `addr` (`http://` or `https://`, host and port).
    /// TLS is used when this client has TLS settings; an `https://` address without them is
    /// refused rather than silently sent in plaintext.
    pub fn channel(
        &self,
        addr: &str,
        connect_timeout: Duration,
        timeout: Option<Duration>,
    ) -> Result<SecureChannel, String> {
        let uri: Uri = addr
            .parse()
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        if uri.scheme_str() == Some("https") && self.tls.is_none() {
            return Err(format!(
                "{addr} is https:// but no CA was given to check its certificate (--tls-ca)"
            ));
        }
        let authority = uri
            .authority()
            .filter(|a| a.port_u16().is_some())
            .ok_or_else(|| format!("bad address {addr:?}: it must name a host and a port"))?;
        // tonic sees plain HTTP/2: the connector below does the TLS.
        let mut endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(connect_timeout);
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = endpoint.connect_with_connector_lazy(Connector(self.clone()));
        Ok(SecureChannel {
            inner: channel,
            key: self.key_header(),
        })
    }
}

#[derive(Clone)]
struct Connector(ClientSecurity);

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let security = self.0.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or("localhost").to_string();
            let port = uri.port_u16().unwrap_or(80);
            Ok(TokioIo::new(security.connect(&host, port).await?))
        })
    }
}

/// The client security of this process (a server: its own certificate and keys; a CLI: its
/// flags), set once at startup.
static PROCESS_CLIENT: std::sync::OnceLock<ClientSecurity> = std::sync::OnceLock::new();

tokio::task_local! {
    /// The client security of the task's work, where one process acts for several
    /// collections (the operator: each collection's own certificate).
    static SCOPED_CLIENT: ClientSecurity;
}

pub fn set_process_client(client: ClientSecurity) {
    let _ = PROCESS_CLIENT.set(client);
}

/// Runs `work` with `client` as the `current_client` of its task.
pub async fn scoped<F: Future>(client: ClientSecurity, work: F) -> F::Output {
    SCOPED_CLIENT.scope(client, work).await
}

/// How calls to other vecshard servers connect here: the task's scoped client, else the
/// process's, else plaintext without a key. (Libraries that call replicas — snapshots,
/// rebalancing, replication — take it from here, so that every caller's setting reaches them
/// without threading it through each signature.)
pub fn current_client() -> ClientSecurity {
    SCOPED_CLIENT
        .try_with(ClientSecurity::clone)
        .ok()
        .or_else(|| PROCESS_CLIENT.get().cloned())
        .unwrap_or_default()
}

/// tonic's `Channel` plus the API key on every call; generated clients take it as they take a
/// `Channel`.
#[derive(Clone)]
pub struct SecureChannel {
    inner: Channel,
    key: Option<HeaderValue>,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for SecureChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(key) = &self.key {
            request
                .headers_mut()
                .insert(crate::keys::API_KEY_HEADER, key.clone());
        }
        self.inner.call(request)
    }
}
