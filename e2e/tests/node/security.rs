//! TLS, API keys and NetworkPolicies from the operator, on the real node. A collection with
//! `tls: {}` (a CA per collection, the certificate issued by the operator) and
//! `auth: {apiKeySecret}`:
//! - the operator creates `docs-ca` and `docs-tls` (with its expiry annotation) and the two
//!   NetworkPolicies; pods turn Ready through HTTPS probes;
//! - through the router Service (TLS, the certificate checked for the Service's DNS name): no
//!   key → UNAUTHENTICATED; the read-only key searches and gets PERMISSION_DENIED on upsert; the
//!   read-write key writes;
//! - a shard pod, called directly by a client that trusts the CA but has no certificate of it,
//!   refuses even the read-write key (shards serve the collection's components only);
//! - a certificate renewal (made due by moving its expiry annotation) while searches run: the
//!   operator issues a new certificate from the same CA, every pod serves it without a restart,
//!   and no search fails;
//! - a key rotation through the Secret: the new key works, then the old one is refused;
//! - the operator's own calls to the shards (its vector count) work with the collection's
//!   certificate.
//!
//! NetworkPolicy is enforced only by a CNI that implements it; the node's bridge plugin does
//! not, so the policies are checked as the API server holds them, not by sending traffic.

use super::*;
use std::sync::atomic::AtomicU64;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use vecshard_security::{ClientSecurity, ClientTls, SecureChannel};

type SecurePoints = PointsClient<SecureChannel>;

fn vector(i: u64) -> Vec<f32> {
    (0..384u64)
        .map(|d| ((i * 7919 + d * 104_729) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn point(i: u64) -> Point {
    Point {
        id: Some(num(i)),
        vector: vector(i),
        payload_json: String::new(),
    }
}

fn search_request(i: u64) -> SearchRequest {
    SearchRequest {
        collection: NAME.into(),
        vector: vector(i),
        limit: 5,
        ..Default::default()
    }
}

/// The collection's CA as a file (in a directory removed when this is dropped).
struct Tls {
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<Secret> {
    Ok(Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await?)
}

fn secret_data(s: &Secret, key: &str) -> Result<Vec<u8>> {
    Ok(s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {} has no {key}", s.name_any()))?
        .0
        .clone())
}

/// The collection's CA, from its TLS Secret, as a file.
async fn ca_file(client: &Client, ns: &str) -> Result<Tls> {
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        secret_data(&secret(client, ns, "docs-tls").await?, "ca.crt")?,
    )?;
    Ok(Tls { _dir: dir, ca })
}

/// gRPC to the router Service's cluster IP, over TLS checked for the Service's DNS name.
async fn secure_router(
    client: &Client,
    ns: &str,
    ca: &std::path::Path,
    key: Option<&str>,
) -> Result<SecurePoints> {
    let ip = Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{NAME}-router"))
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("router ClusterIP")?;
    let security = ClientSecurity::none()
        .with_tls(Some(
            ClientTls::load(ca.to_path_buf(), None).map_err(anyhow::Error::msg)?,
        ))
        .with_server_name(Some(&format!("{NAME}-router.{ns}.svc")))
        .with_api_key(key)
        .map_err(anyhow::Error::msg)?;
    let channel = security
        .channel(
            &format!("https://{ip}:6334"),
            Duration::from_secs(5),
            Some(Duration::from_secs(30)),
        )
        .map_err(anyhow::Error::msg)?;
    Ok(PointsClient::new(channel))
}

/// The certificate a TLS port presents to a new connection.
async fn served_certificate(ca: &std::path::Path, ip: &str, port: u16) -> Result<Vec<u8>> {
    let client = ClientTls::load_internal(ca.to_path_buf(), None).map_err(anyhow::Error::msg)?;
    let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
    let stream = client.handshake(ip, tcp).await?;
    Ok(stream
        .get_ref()
        .1
        .peer_certificates()
        .context("no certificate")?[0]
        .to_vec())
}

fn pem_der(pem: &[u8]) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    Ok(rustls_pki_types::CertificateDer::from_pem_slice(pem)
        .context("not a PEM certificate")?
        .to_vec())
}

fn num_id(id: &Option<PointId>) -> u64 {
    num_of(id.as_ref()).unwrap_or(u64::MAX)
}

fn code_of<T: std::fmt::Debug>(r: std::result::Result<T, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_keys_and_network_policies_from_the_operator_protect_a_collection() -> Result<()> {
    let t = Instant::now();
    let log = |what: &str| super::log(t, what);
    let client = client().await?;
    let ns = namespace(&client, "security").await?;
    let provisioner = tokio::spawn(provision_local_volumes(client.clone(), ns.clone()));
    storage_class(&client).await?;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let keys: Secret = serde_json::from_value(json!({
        "metadata": {"name": "docs-keys"},
        "stringData": {"read-write": "rw-key-1\n", "read-only": "ro-key-1\n"},
    }))?;
    secrets.create(&PostParams::default(), &keys).await?;

    // ---- 1 shard x 2 replicas with operator-issued TLS and API keys ----
    let mut vc = collection(NAME, 1, 2);
    let spec = &mut vc.spec;
    spec.image = SERVER_IMAGE.into();
    spec.storage.storage_class_name = Some(STORAGE_CLASS.into());
    spec.partitions = 16;
    spec.router.replicas = 1;
    spec.resources = Some(serde_json::from_value(
        json!({"requests": {"cpu": "10m", "memory": "64Mi"}}),
    )?);
    spec.router.resources = spec.resources.clone();
    spec.tls = Some(serde_json::from_value(json!({}))?);
    spec.auth = Some(serde_json::from_value(
        json!({"apiKeySecret": "docs-keys"}),
    )?);
    create(&client, &ns, &vc).await?;
    phase(&client, &ns, NAME, "Ready", POD_WAIT).await?;
    log("collection Ready behind HTTPS probes");

    let issued = secret(&client, &ns, "docs-tls").await?;
    ensure!(issued.type_.as_deref() == Some("kubernetes.io/tls"));
    let not_after = issued
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("vecshard.io/not-after"))
        .context("docs-tls has no vecshard.io/not-after")?
        .clone();
    secret(&client, &ns, "docs-ca").await?;
    log(&format!(
        "docs-ca and docs-tls issued (valid until {not_after})"
    ));
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns);
    let shards_policy = serde_json::to_value(policies.get("docs-shards").await?)?;
    let from = shards_policy["spec"]["ingress"][0]["from"].to_string();
    ensure!(
        from.contains("\"app.kubernetes.io/component\":\"router\"")
            && from.contains("\"kubernetes.io/metadata.name\":\"vecshard-system\""),
        "docs-shards admits {from}"
    );
    policies.get("docs-router").await?;
    log("NetworkPolicies docs-shards and docs-router stored by the API server (not enforced by the bridge CNI)");

    // ---- through the router: keys and TLS ----
    let tls = ca_file(&client, &ns).await?;
    let writer = secure_router(&client, &ns, &tls.ca, Some("rw-key-1")).await?;
    let upsert = |points: Vec<Point>| UpsertRequest {
        collection: NAME.into(),
        points,
        version: 0,
    };
    writer
        .clone()
        .upsert(upsert((0..200).map(point).collect()))
        .await?;
    let anonymous = secure_router(&client, &ns, &tls.ca, None).await?;
    ensure!(
        code_of(anonymous.clone().search(search_request(1)).await) == tonic::Code::Unauthenticated
    );
    let wrong = secure_router(&client, &ns, &tls.ca, Some("rw-key-0")).await?;
    ensure!(code_of(wrong.clone().search(search_request(1)).await) == tonic::Code::Unauthenticated);
    let reader = secure_router(&client, &ns, &tls.ca, Some("ro-key-1")).await?;
    let hits = reader
        .clone()
        .search(search_request(7))
        .await?
        .into_inner()
        .result;
    ensure!(
        num_id(&hits[0].id) == 7,
        "the read-only key searches: {hits:?}"
    );
    ensure!(
        code_of(reader.clone().upsert(upsert(vec![point(500)])).await)
            == tonic::Code::PermissionDenied,
        "the read-only key must not write"
    );
    log("router: no key and a wrong key UNAUTHENTICATED, read-only searches and is refused writes, read-write writes");

    // ---- a shard pod refuses clients without the collection's certificate ----
    let pods = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app.kubernetes.io/component=shard"))
        .await?;
    let shard_ip = pods.items[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("shard pod IP")?;
    let outsider = ClientSecurity::none()
        .with_tls(Some(
            ClientTls::load_internal(tls.ca.clone(), None).map_err(anyhow::Error::msg)?,
        ))
        .with_api_key(Some("rw-key-1"))
        .map_err(anyhow::Error::msg)?
        .channel(
            &format!("https://{shard_ip}:6334"),
            Duration::from_secs(5),
            Some(Duration::from_secs(10)),
        )
        .map_err(anyhow::Error::msg)?;
    ensure!(
        code_of(PointsClient::new(outsider).search(search_request(1)).await)
            == tonic::Code::Unauthenticated,
        "a shard answered a client without the collection's certificate"
    );
    log("shard pod: a client without the collection's certificate is refused, even with the read-write key");

    // ---- certificate renewal under a search loop ----
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loop_task = {
        let (client, ns, stop, done, failed) = (
            client.clone(),
            ns.clone(),
            stop.clone(),
            done.clone(),
            failed.clone(),
        );
        let ca = tls.ca.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut router = secure_router(&client, &ns, &ca, Some("rw-key-1"))
                .await
                .ok();
            while !stop.load(Ordering::Relaxed) {
                // Every 50 searches a new connection: a handshake with the certificate served now.
                if n.is_multiple_of(50) {
                    router = secure_router(&client, &ns, &ca, Some("rw-key-1"))
                        .await
                        .ok();
                }
                let ok = match &router {
                    Some(r) => r
                        .clone()
                        .search(search_request(n % 200))
                        .await
                        .is_ok_and(|r| !r.get_ref().result.is_empty()),
                    None => false,
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Due now: its recorded expiry within renewBeforeDays. Touching the collection makes the
    // operator look at once (it looks at least every 5 minutes anyway).
    secrets
        .patch(
            "docs-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"vecshard.io/not-after": "2026-01-01T00:00:00Z"}}})),
        )
        .await?;
    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e/renew": "now"}}})),
        )
        .await?;
    let renewed = eventually(
        "the operator to renew docs-tls",
        Duration::from_secs(120),
        || async {
            let s = secret(&client, &ns, "docs-tls")
                .await
                .map_err(|e| e.to_string())?;
            let cert = secret_data(&s, "tls.crt").map_err(|e| e.to_string())?;
            if cert != secret_data(&issued, "tls.crt").map_err(|e| e.to_string())? {
                Ok(Some(cert))
            } else {
                Err("still the first certificate".to_string())
            }
        },
    )
    .await?;
    ensure!(
        secret_data(&secret(&client, &ns, "docs-tls").await?, "ca.crt")?
            == secret_data(&issued, "ca.crt")?,
        "renewed by the same CA"
    );
    let renewed_der = pem_der(&renewed)?;
    log("operator renewed docs-tls from the same CA");
    let router_ip = Api::<Service>::namespaced(client.clone(), &ns)
        .get(&format!("{NAME}-router"))
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("router ClusterIP")?;
    let mut serving = vec![(router_ip, 6334u16)];
    for p in &pods.items {
        if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            serving.push((ip, 6333));
        }
    }
    for (ip, port) in &serving {
        eventually(
            &format!("{ip}:{port} to serve the renewed certificate"),
            Duration::from_secs(150),
            || async {
                match served_certificate(&tls.ca, ip, *port).await {
                    Ok(der) if der == renewed_der => Ok(Some(())),
                    Ok(_) => Err("the old certificate".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    loop_task.await?;
    let (ok, bad) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    log(&format!("renewal reached the router and both shard pods without a restart: {ok} searches, {bad} failed"));
    ensure!(
        ok > 50 && bad == 0,
        "{bad} of {} searches failed across the renewal",
        ok + bad
    );
    let restarts: i32 = Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default()
        })
        .map(|c| c.restart_count)
        .sum();
    ensure!(
        restarts == 0,
        "{restarts} container restarts during the renewal"
    );

    // ---- key rotation through the Secret ----
    let set_keys = |rw: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "docs-keys",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"read-write": rw}})),
                )
                .await
        }
    };
    set_keys("rw-key-1\nrw-key-2\n").await?;
    let new_key = secure_router(&client, &ns, &tls.ca, Some("rw-key-2")).await?;
    eventually(
        "rw-key-2 to be accepted",
        Duration::from_secs(120),
        || async {
            match code_of(new_key.clone().search(search_request(3)).await) {
                tonic::Code::Ok => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    ensure!(
        code_of(writer.clone().search(search_request(3)).await) == tonic::Code::Ok,
        "both keys valid during a rotation"
    );
    set_keys("rw-key-2\n").await?;
    eventually(
        "rw-key-1 to be refused",
        Duration::from_secs(120),
        || async {
            match code_of(writer.clone().search(search_request(3)).await) {
                tonic::Code::Unauthenticated => Ok(Some(())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    new_key.clone().upsert(upsert(vec![point(600)])).await?;
    log("key rotation: rw-key-2 added (both valid), rw-key-1 removed (refused), no restart");

    // The operator's own calls to the shards use the collection's certificate: its count of
    // the shards' points (every 60 s) reaches the status.
    let collections = Api::<VectorCollection>::namespaced(client.clone(), &ns);
    let counted = eventually(
        "status.vectors from the operator's mTLS calls to the shards",
        Duration::from_secs(150),
        || async {
            let vc = collections.get(NAME).await.map_err(|e| e.to_string())?;
            match vc.status.and_then(|s| s.vectors) {
                Some(n) if n >= 200 => Ok(Some(n)),
                other => Err(format!("status.vectors {other:?}")),
            }
        },
    )
    .await?;
    log(&format!("the operator counted {counted} points over mTLS"));

    Api::<VectorCollection>::namespaced(client.clone(), &ns)
        .delete(NAME, &DeleteParams::default())
        .await?;
    provisioner.abort();
    Ok(())
}
