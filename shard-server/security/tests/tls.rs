//! TLS listeners and connectors over loopback: mutual TLS, refusals (another CA, an expired
//! certificate, plaintext to a TLS port) and certificate reload with connections open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vecshard_security::pki::{write_private, Authority};
use vecshard_security::{ClientAuth, ClientSecurity, ClientTls, SecureListener, ServerTls};

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn write(dir: &Path, name: &str, ca: &Authority, not_before: time::OffsetDateTime) -> Files {
    let issued = ca
        .issue_at(
            name,
            &["localhost".into(), "127.0.0.1".into()],
            not_before,
            DAY,
        )
        .unwrap();
    let files = Files {
        ca: dir.join(format!("{name}-ca.crt")),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.ca, &ca.cert_pem).unwrap();
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    write_private(&files.key, &issued.key_pem).unwrap();
    files
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - Duration::from_secs(60)
}

/// A server that answers each connection with whether the client showed a certificate.
async fn serve(tls: ServerTls) -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mut listener = SecureListener::new(tcp, Some(tls)).unwrap();
    tokio::spawn(async move {
        loop {
            let mut conn = listener.accept().await;
            tokio::spawn(async move {
                let answer = if conn.peer.client_cert {
                    "component"
                } else {
                    "anonymous"
                };
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    port
}

async fn ask(client: &ClientSecurity, port: u16) -> std::io::Result<String> {
    let mut conn = client.connect("127.0.0.1", port).await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn mutual_tls_tells_components_from_anonymous_clients_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("collection CA", DAY).unwrap();
    let other = Authority::new("another CA", DAY).unwrap();
    let server = write(dir.path(), "server", &ca, now());
    let component = write(dir.path(), "component", &ca, now());
    let stranger = write(dir.path(), "stranger", &other, now());
    let expired = write(dir.path(), "expired", &ca, now() - 2 * DAY);

    let tls = ServerTls::load(
        server.cert.clone(),
        server.key.clone(),
        Some(server.ca.clone()),
        ClientAuth::Optional,
    )
    .unwrap();
    let port = serve(tls).await;
    let client = |identity: Option<&Files>| {
        let tls = ClientTls::load(
            server.ca.clone(),
            identity.map(|f| (f.cert.clone(), f.key.clone())),
        )
        .unwrap();
        ClientSecurity::none().with_tls(Some(tls))
    };
    assert_eq!(
        ask(&client(Some(&component)), port).await.unwrap(),
        "component"
    );
    assert_eq!(ask(&client(None), port).await.unwrap(), "anonymous");
    // A certificate of another CA, or an expired one, fails the handshake.
    for refused in [&stranger, &expired] {
        let answer = ask(&client(Some(refused)), port).await;
        assert!(answer.as_deref().map_or(true, str::is_empty), "{answer:?}");
    }
    // A client that trusts another CA refuses the server.
    let wrong_trust =
        ClientSecurity::none().with_tls(Some(ClientTls::load(stranger.ca.clone(), None).unwrap()));
    let err = ask(&wrong_trust, port).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Plaintext HTTP to the TLS port: an answer that says so.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("TLS only"),
        "{answer}"
    );
    // And the server still serves afterwards.
    assert_eq!(
        ask(&client(Some(&component)), port).await.unwrap(),
        "component"
    );
}

#[tokio::test]
async fn required_client_certificates_fail_the_handshake_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("collection CA", DAY).unwrap();
    let server = write(dir.path(), "server", &ca, now());
    let tls = ServerTls::load(
        server.cert.clone(),
        server.key.clone(),
        Some(server.ca.clone()),
        ClientAuth::Required,
    )
    .unwrap();
    let port = serve(tls).await;
    let anonymous =
        ClientSecurity::none().with_tls(Some(ClientTls::load(server.ca.clone(), None).unwrap()));
    let answer = ask(&anonymous, port).await;
    assert!(answer.as_deref().map_or(true, str::is_empty), "{answer:?}");
    let err = ServerTls::load(
        server.cert.clone(),
        server.key.clone(),
        None,
        ClientAuth::Required,
    )
    .err()
    .unwrap();
    assert!(err.contains("--tls-ca"), "{err}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Authority::new("old CA", DAY).unwrap();
    let new_ca = Authority::new("new CA", DAY).unwrap();
    let server = write(dir.path(), "server", &old_ca, now());
    let tls = ServerTls::load(
        server.cert.clone(),
        server.key.clone(),
        None,
        ClientAuth::None,
    )
    .unwrap();
    let port = serve(tls.clone()).await;
    let trusting = |ca: &Authority, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, &ca.cert_pem).unwrap();
        ClientSecurity::none().with_tls(Some(ClientTls::load(path, None).unwrap()))
    };
    let old_client = trusting(&old_ca, "trust-old.crt");
    let new_client = trusting(&new_ca, "trust-new.crt");
    // A connection opened before the renewal.
    let mut open = old_client.connect("127.0.0.1", port).await.unwrap();
    assert!(ask(&new_client, port).await.is_err());

    // Renew: a certificate of the new CA replaces the files (as a Secret update does).
    let renewed = write(dir.path(), "renewed", &new_ca, now());
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tls.reloads() == 0 {
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ask(&new_client, port).await.unwrap(), "anonymous");
    // The connection from before still works.
    let mut answer = String::new();
    open.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "anonymous");
    // A broken renewal (a key that does not match) keeps the certificate in force.
    std::fs::copy(&server.key, dir.path().join("kept.key")).unwrap();
    std::fs::copy(&write(dir.path(), "other", &new_ca, now()).key, &server.key).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(tls.reloads(), 1);
    assert_eq!(ask(&new_client, port).await.unwrap(), "anonymous");
}

#[tokio::test]
async fn components_accept_any_certificate_of_the_collection_ca_whatever_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("collection CA", DAY).unwrap();
    let other = Authority::new("another CA", DAY).unwrap();
    // A certificate for a name the client does not connect by.
    let issued = ca
        .issue("replica", &["docs-0-1.docs-0.ns.svc".into()], DAY)
        .unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("r.crt"),
        dir.path().join("r.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    write_private(&key, &issued.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let port = serve(ServerTls::load(cert, key, None, ClientAuth::None).unwrap()).await;

    let strict =
        ClientSecurity::none().with_tls(Some(ClientTls::load(ca_file.clone(), None).unwrap()));
    let err = ask(&strict, port).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let internal =
        ClientSecurity::none().with_tls(Some(ClientTls::load_internal(ca_file, None).unwrap()));
    assert_eq!(ask(&internal, port).await.unwrap(), "anonymous");
    // The chain is still checked.
    let other_file = dir.path().join("other.crt");
    std::fs::write(&other_file, &other.cert_pem).unwrap();
    let foreign =
        ClientSecurity::none().with_tls(Some(ClientTls::load_internal(other_file, None).unwrap()));
    assert!(ask(&foreign, port).await.is_err());
}
