//! TLS and API keys, multi-process: `vecshard-server dev --tls --api-key … --read-only-api-key
//! …` (a router in this test's child process, replicas as its children) called over HTTPS and
//! gRPC+TLS. Every refusal of the security design is tried, then keys and certificates are
//! rotated under load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::points_internal_client::PointsInternalClient;
use vecshard_security::pki::{write_private, Authority};
use vecshard_security::{ClientSecurity, ClientTls};

use crate::crash::{free_port, free_ports};
use crate::support::*;

struct Dev {
    child: std::process::Child,
    data: PathBuf,
    http: u16,
    grpc: u16,
    /// gRPC port of the first replica.
    replica: u16,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(dir: &Path) -> Dev {
    let data = dir.join("data");
    let (http, grpc) = (free_port(), free_port());
    let base = free_ports(4);
    let child = Command::new(env!("CARGO_BIN_EXE_vecshard-server"))
        .args([
            "dev",
            "--dimension",
            "8",
            "--shards",
            "2",
            "--replicas",
            "1",
        ])
        .args(["--tls", "--api-key", "rw-1", "--read-only-api-key", "ro-1"])
        .args(["--index-field", "pos:keyword"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--base-port", &base.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Dev {
        child,
        data,
        http,
        grpc,
        replica: base,
    }
}

impl Dev {
    fn ca(&self) -> PathBuf {
        self.data.join("tls/ca.crt")
    }

    /// An HTTPS client that trusts the cluster's CA (HTTP/1.1).
    fn https(&self) -> Https {
        let tls = ClientTls::load(self.ca(), None).unwrap();
        let mut config = (*tls.config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Https {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.http)
    }

    /// gRPC to the router: TLS trusting the CA, `key` on every call.
    fn grpc_client(&self, key: Option<&str>) -> PointsClient<vecshard_security::SecureChannel> {
        let security = ClientSecurity::none()
            .with_tls(Some(ClientTls::load(self.ca(), None).unwrap()))
            .with_api_key(key)
            .unwrap();
        let channel = security
            .channel(
                &format!("https://127.0.0.1:{}", self.grpc),
                Duration::from_secs(2),
                Some(Duration::from_secs(10)),
            )
            .unwrap();
        PointsClient::new(channel)
    }
}

/// A minimal HTTPS/1.1 client (one request per connection): the workspace's reqwest is built
/// without TLS, and its TLS would need a process-wide rustls provider in every test.
#[derive(Clone)]
struct Https {
    connector: tokio_rustls::TlsConnector,
}

impl Https {
    /// `url` is `https://127.0.0.1:PORT/path`; returns the status and the body.
    async fn request(
        &self,
        method: &str,
        url: &str,
        header: Option<(&str, &str)>,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("https://127.0.0.1:").unwrap();
        let (port, path) = rest.split_at(rest.find('/').unwrap());
        let tcp =
            tokio::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = self.connector.connect(name, tcp).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        if let Some((name, value)) = header {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await?;
        tls.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        // A server may close without TLS close_notify after a refusal: keep what was read.
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {answer:?}")))?;
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    }

    async fn status(&self, method: &str, url: &str) -> u16 {
        self.request(method, url, None, None).await.unwrap().0
    }
}

async fn call(
    client: &Https,
    method: &str,
    url: &str,
    key: Option<(&str, &str)>,
    body: Value,
) -> (u16, Value) {
    let (status, body) = client.request(method, url, key, Some(&body)).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn search_body() -> Value {
    json!({"query": vector(1), "limit": 3})
}

fn search_request() -> pb::SearchRequest {
    pb::SearchRequest {
        collection: "docs".into(),
        vector: vector(1),
        limit: 3,
        ..Default::default()
    }
}

fn error_of(v: &Value) -> String {
    v["status"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_api_keys_refuse_what_they_must_and_rotate_without_failed_searches() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let https = loop {
        if dev.ca().exists() {
            let client = dev.https();
            if let Ok((200, _)) = client.request("GET", &dev.url("/readyz"), None, None).await {
                break client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the TLS dev cluster never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let points = dev.url("/collections/docs/points");
    let query = dev.url("/collections/docs/points/query");
    let put = "PUT";
    let post = "POST";
    let write = json!({"points": (0..20).map(json_point).collect::<Vec<_>>()});

    // HTTP: no key, a wrong key, a malformed header → 401; read-only key writing → 403.
    let (status, body) = call(&https, put, &points, None, write.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).contains("api-key"), "{body}");
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
    let (status, body) = call(
        &https,
        put,
        &points,
        Some(("api-key", "rw-2")),
        write.clone(),
    )
    .await;
    assert_eq!((status, error_of(&body).as_str()), (401, "invalid API key"));
    let (status, body) = call(
        &https,
        post,
        &query,
        Some(("authorization", "Basic cnctMQ==")),
        search_body(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("Bearer"), "{body}");
    let (status, body) = call(
        &https,
        put,
        &points,
        Some(("api-key", "ro-1")),
        write.clone(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_of(&body).contains("read-only"), "{body}");
    // An oversized key is refused by name; an oversized header block is refused by the HTTP
    // server; neither takes anything down.
    let long = "k".repeat(600);
    let (status, body) = call(
        &https,
        post,
        &query,
        Some(("api-key", &long)),
        search_body(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(error_of(&body).contains("512"), "{body}");
    let huge = "k".repeat(200_000);
    let refused = https
        .request(
            "POST",
            &query,
            Some(("api-key", &huge)),
            Some(&search_body()),
        )
        .await;
    assert!(refused.map_or(true, |(status, _)| (400..500).contains(&status)));
    // The read-write key writes (as `authorization: Bearer` too); the read-only key reads.
    let (status, body) = call(
        &https,
        put,
        &format!("{points}?wait=true"),
        Some(("authorization", "Bearer rw-1")),
        write.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &https,
        post,
        &query,
        Some(("api-key", "ro-1")),
        search_body(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["points"][0]["id"], 1);
    // Probes stay open; /metrics is open by default.
    assert_eq!(https.status("GET", &dev.url("/healthz")).await, 200);
    assert_eq!(https.status("GET", &dev.url("/metrics")).await, 200);

    // Plaintext HTTP to the TLS port: an answer that says so.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/readyz", dev.http))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("TLS only"));

    // gRPC: the same rules.
    let denied = dev
        .grpc_client(None)
        .search(search_request())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied:?}");
    let mut read_only = dev.grpc_client(Some("ro-1"));
    assert_eq!(
        read_only
            .search(search_request())
            .await
            .unwrap()
            .into_inner()
            .result
            .len(),
        3
    );
    let upsert = pb::UpsertRequest {
        collection: "docs".into(),
        points: vec![pb_point(100)],
        version: 0,
    };
    let denied = read_only.upsert(upsert.clone()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    dev.grpc_client(Some("rw-1")).upsert(upsert).await.unwrap();
    // Plaintext gRPC to the TLS port fails.
    let plaintext = ClientSecurity::none()
        .with_api_key(Some("rw-1"))
        .unwrap()
        .channel(
            &format!("http://127.0.0.1:{}", dev.grpc),
            Duration::from_secs(2),
            Some(Duration::from_secs(5)),
        )
        .unwrap();
    assert!(PointsClient::new(plaintext)
        .search(search_request())
        .await
        .is_err());

    // A replica serves the collection's components only.
    let replica = format!("https://127.0.0.1:{}", dev.replica);
    let stats = pb::PartitionStatsRequest {
        collection: "docs".into(),
        partition_count: 256,
    };
    let anonymous = ClientSecurity::none()
        .with_tls(Some(ClientTls::load(dev.ca(), None).unwrap()))
        .with_api_key(Some("rw-1"))
        .unwrap();
    let channel = anonymous
        .channel(&replica, Duration::from_secs(2), None)
        .unwrap();
    let denied = PointsClient::new(channel.clone())
        .search(search_request())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied:?}");
    let denied = PointsInternalClient::new(channel)
        .partition_stats(stats.clone())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied:?}");
    // A certificate of another CA does not get through the handshake.
    let other = Authority::new("another CA", Duration::from_secs(3600)).unwrap();
    let stranger = other
        .issue("stranger", &["localhost".into()], Duration::from_secs(3600))
        .unwrap();
    let (cert, key) = (
        dir.path().join("stranger.crt"),
        dir.path().join("stranger.key"),
    );
    std::fs::write(&cert, &stranger.cert_pem).unwrap();
    write_private(&key, &stranger.key_pem).unwrap();
    let stranger = ClientSecurity::none()
        .with_tls(Some(ClientTls::load(dev.ca(), Some((cert, key))).unwrap()));
    let channel = stranger
        .channel(&replica, Duration::from_secs(2), None)
        .unwrap();
    let refused = PointsInternalClient::new(channel)
        .partition_stats(stats.clone())
        .await
        .unwrap_err();
    // (TLS 1.3: the client learns of it after its side of the handshake, from the server's
    // alert or from the closed connection, whichever it reads first.)
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
    // The cluster's own certificate may call internal RPCs.
    let tls_dir = dev.data.join("tls");
    let component = ClientSecurity::none().with_tls(Some(
        ClientTls::load(
            dev.ca(),
            Some((tls_dir.join("tls.crt"), tls_dir.join("tls.key"))),
        )
        .unwrap(),
    ));
    let channel = component
        .channel(&replica, Duration::from_secs(2), None)
        .unwrap();
    PointsInternalClient::new(channel)
        .partition_stats(stats)
        .await
        .unwrap();

    // Key rotation: add rw-2 next to rw-1 (both work), then drop rw-1.
    let keys = dev.data.join("api-keys/read-write");
    let works = |key: &'static str| {
        let (https, url) = (https.clone(), query.clone());
        async move {
            call(&https, "POST", &url, Some(("api-key", key)), search_body())
                .await
                .0
        }
    };
    std::fs::write(&keys, "rw-1\nrw-2\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while works("rw-2").await != 200 {
        assert!(Instant::now() < deadline, "rw-2 never accepted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        works("rw-1").await,
        200,
        "both keys valid during a rotation"
    );
    std::fs::write(&keys, "rw-2\n").unwrap();
    while works("rw-1").await != 401 {
        assert!(Instant::now() < deadline, "rw-1 never removed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(works("rw-2").await, 200);
    assert_eq!(works("ro-1").await, 200);

    // Certificate renewal while searches run: a new certificate from the same CA replaces the
    // files every process serves (router and replicas); no search fails, and new connections
    // get the new certificate.
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|i| {
            let (failures, done, stop) = (failures.clone(), done.clone(), stop.clone());
            // One loop keeps its connection, the other opens a new one every 20 searches.
            let mut client = dev.grpc_client(Some("rw-2"));
            let grpc_port = dev.grpc;
            let ca = dev.ca();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if i == 1 && n.is_multiple_of(20) {
                        let security = ClientSecurity::none()
                            .with_tls(Some(ClientTls::load(ca.clone(), None).unwrap()))
                            .with_api_key(Some("rw-2"))
                            .unwrap();
                        let channel = security
                            .channel(
                                &format!("https://127.0.0.1:{grpc_port}"),
                                Duration::from_secs(2),
                                Some(Duration::from_secs(10)),
                            )
                            .unwrap();
                        client = PointsClient::new(channel);
                    }
                    match client.search(search_request()).await {
                        Ok(r) if r.get_ref().result.len() == 3 => {
                            done.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ca = Authority::load(
        &std::fs::read_to_string(dev.ca()).unwrap(),
        &std::fs::read_to_string(tls_dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let renewed = ca
        .issue(
            "vecshard dev renewed",
            &["localhost".into(), "127.0.0.1".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    // Write beside, then rename: readers never see a half-written file.
    for (name, pem) in [
        ("tls.key", &renewed.key_pem),
        ("tls.crt", &renewed.cert_pem),
    ] {
        let tmp = tls_dir.join(format!("{name}.new"));
        write_private(&tmp, pem).unwrap();
        std::fs::rename(&tmp, tls_dir.join(name)).unwrap();
    }
    let renewed_der = rustls_pki_types_der(&renewed.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in [dev.http, dev.replica + 1] {
        while served_certificate(&dev.ca(), port).await != renewed_der {
            assert!(
                Instant::now() < deadline,
                "port {port} never served the renewed certificate"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed) = (
        done.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    assert!(ok > 20, "{ok} searches");
    assert_eq!(
        failed,
        0,
        "{failed} of {} searches failed across the renewal",
        ok + failed
    );
}

fn rustls_pki_types_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The certificate a TLS port presents to a new connection.
async fn served_certificate(ca: &Path, port: u16) -> Vec<u8> {
    let tls = ClientTls::load(ca.to_path_buf(), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let stream = tls.handshake("127.0.0.1", tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
