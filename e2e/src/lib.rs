//! Helpers of vecshard's cluster test suite. The suite runs against whatever `KUBECONFIG`
//! points to: `e2e/run.sh controlplane` starts etcd, kube-apiserver, kube-controller-manager
//! and kube-scheduler on loopback, installs the Helm chart, and sets:
//! - `VECSHARD_OPERATOR_BIN`: the `vecshard-operator` binary to run;
//! - `VECSHARD_E2E_OPERATOR_KUBECONFIG`: a kubeconfig holding a token of the chart's
//!   ServiceAccount, so the operator runs with the chart's RBAC, not as admin;
//! - `VECSHARD_E2E_OPERATOR_NAMESPACE`: where the chart is installed (the leader Leases go
//!   there).
//!
//! Each test works in a namespace of its own and runs its own operator process scoped to it,
//! so tests run in parallel without seeing each other.

use std::future::Future;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use vecshard_operator::crd::VectorCollection;

pub fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set: run the suite through e2e/run.sh"))
}

pub async fn client() -> Result<Client> {
    Client::try_default()
        .await
        .context("connecting to the cluster in KUBECONFIG")
}

/// A fresh namespace `<prefix>-<unique>`.
pub async fn namespace(client: &Client, prefix: &str) -> Result<String> {
    let name = format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros()
            % 1_000_000_000
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"vecshard.io/e2e": "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

/// Names of the objects of kind `K` in `ns` that `lp` selects.
pub async fn names<K>(client: &Client, ns: &str, lp: &ListParams) -> Result<Vec<String>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let list = Api::<K>::namespaced(client.clone(), ns).list(lp).await?;
    Ok(list.items.iter().map(|o| o.name_any()).collect())
}

/// Polls `check` every 250 ms until it returns `Some`, or fails after `timeout` with the last
/// observation, so a failing test says what it saw.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last = String::from("nothing observed yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(seen) => last = seen,
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs kubectl (from PATH, as e2e/run.sh sets it) against the suite's cluster.
pub fn kubectl(args: &[&str]) -> Result<Output> {
    Command::new("kubectl")
        .args(args)
        .output()
        .context("running kubectl")
}

/// kubectl's stdout, failing with its stderr when it fails.
pub fn kubectl_ok(args: &[&str]) -> Result<String> {
    let out = kubectl(args)?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `vecshard-operator` process with the chart's ServiceAccount, scoped to one namespace.
/// Killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    pub identity: String,
    pub metrics_port: u16,
}

impl Operator {
    /// `lease`: the leader Lease's name; operators sharing it elect one leader.
    pub fn start(watch_namespace: &str, lease: &str, identity: &str) -> Result<Operator> {
        let metrics_port = free_port()?;
        let log_dir = std::env::var("VECSHARD_E2E_LOGS").unwrap_or_else(|_| "/tmp".into());
        let log = std::fs::File::create(format!("{log_dir}/operator-{identity}.log"))?;
        let child = Command::new(env("VECSHARD_OPERATOR_BIN")?)
            .env("KUBECONFIG", env("VECSHARD_E2E_OPERATOR_KUBECONFIG")?)
            .env("RUST_LOG", "info,kube=warn")
            .args([
                "--namespace",
                watch_namespace,
                "--lease-namespace",
                &env("VECSHARD_E2E_OPERATOR_NAMESPACE")?,
                "--lease-name",
                lease,
                "--lease-seconds",
                "6",
                "--identity",
                identity,
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting vecshard-operator")?;
        Ok(Operator {
            child,
            identity: identity.into(),
            metrics_port,
        })
    }

    /// `/metrics` of this operator.
    pub fn metrics(&self) -> Result<String> {
        http_get(self.metrics_port, "/metrics")
    }

    /// Whether this process leads (its `/leader` says so).
    pub fn is_leader(&self) -> bool {
        http_get(self.metrics_port, "/leader").is_ok_and(|b| b.trim() == "leader")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A tiny HTTP/1.0 GET on loopback (no client library needed for two endpoints).
fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// A VectorCollection of 384 dimensions (the benchmark dataset's) with one indexed field.
pub fn collection(name: &str, shards: u32, replicas: u32) -> VectorCollection {
    serde_json::from_value(json!({
        "apiVersion": "vecshard.io/v1alpha1",
        "kind": "VectorCollection",
        "metadata": {"name": name},
        "spec": {
            "dimension": 384,
            "shards": shards,
            "replicas": replicas,
            "indexedFields": [{"name": "pos", "type": "keyword"}],
            "storage": {"size": "1Gi"},
            // kind.sh loads a real image; on the bare control plane pods never run anyway.
            "image": std::env::var("VECSHARD_E2E_SERVER_IMAGE")
                .unwrap_or_else(|_| "vecshard/vecshard-server:0.1.0".into()),
        },
    }))
    .unwrap()
}

pub async fn create(client: &Client, ns: &str, vc: &VectorCollection) -> Result<VectorCollection> {
    Ok(Api::<VectorCollection>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), vc)
        .await?)
}

pub async fn patch_spec(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    Api::<VectorCollection>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await?;
    Ok(())
}

pub async fn get_vc(client: &Client, ns: &str, name: &str) -> Result<VectorCollection, String> {
    Api::<VectorCollection>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| e.to_string())
}

pub fn condition(vc: &VectorCollection, type_: &str) -> Option<(String, String, String)> {
    vc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits for the collection's phase and returns it as last read.
pub async fn phase(
    client: &Client,
    ns: &str,
    name: &str,
    want: &str,
    timeout: Duration,
) -> Result<VectorCollection> {
    let waited = eventually(&format!("{name} to be {want}"), timeout, || async {
        let vc = get_vc(client, ns, name).await?;
        let phase = vc.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some(want) {
            Ok(Some(vc))
        } else {
            Err(format!("phase {phase:?}, status {:?}", vc.status))
        }
    })
    .await;
    match waited {
        Ok(vc) => Ok(vc),
        Err(e) => bail!("{e}\n{}", operator_side(client, ns, name).await),
    }
}

/// What the operator's side looked like when a wait on `name` failed: the object's Events
/// (the operator publishes reconcile failures there) and the operator's pods, if it runs as
/// pods (`VECSHARD_E2E_OPERATOR_NAMESPACE`), with their container states and restarts.
pub async fn operator_side(client: &Client, ns: &str, name: &str) -> String {
    use k8s_openapi::api::core::v1::{Event, Pod};
    let mut out = vec![format!("events of {ns}/{name}:")];
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    match Api::<Event>::namespaced(client.clone(), ns).list(&lp).await {
        Ok(list) if list.items.is_empty() => out.push("  (none)".into()),
        Ok(list) => out.extend(list.items.iter().map(|e| {
            format!(
                "  {} {} x{}: {}",
                e.type_.as_deref().unwrap_or("?"),
                e.reason.as_deref().unwrap_or("?"),
                e.count.unwrap_or(1),
                e.message.as_deref().unwrap_or("")
            )
        })),
        Err(e) => out.push(format!("  (could not list: {e})")),
    }
    if let Ok(operator_ns) = std::env::var("VECSHARD_E2E_OPERATOR_NAMESPACE") {
        out.push(format!("operator pods in {operator_ns}:"));
        match Api::<Pod>::namespaced(client.clone(), &operator_ns)
            .list(&ListParams::default())
            .await
        {
            Ok(list) => out.extend(list.items.iter().map(|p| {
                let status = p.status.clone().unwrap_or_default();
                let containers = status
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .map(|c| {
                        format!(
                            "{} ready={} restarts={} state={:?} last={:?}",
                            c.name, c.ready, c.restart_count, c.state, c.last_state
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                // Why a pod is not scheduled or not ready (a taint, a failing probe).
                let unmet = status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c.status != "True")
                    .map(|c| {
                        let why = c.message.as_deref().or(c.reason.as_deref());
                        format!("{} ({})", c.type_, why.unwrap_or("no reason given"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "  {} phase {:?} on {:?}: {containers}; not met: {unmet}",
                    p.name_any(),
                    status.phase,
                    p.spec.as_ref().and_then(|s| s.node_name.clone())
                )
            })),
            Err(e) => out.push(format!("  (could not list: {e})")),
        }
    }
    out.join("\n")
}
