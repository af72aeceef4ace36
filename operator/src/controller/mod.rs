//! The controllers and what they share. Each controller's `reconcile` reads as a pipeline
//! `observe → validate → build → apply → status`: every read happens first, into one
//! `Observed` value; deciding what to write (validating, building children, the next status,
//! the Event) is pure; the writes come last. The API calls live in `apply.rs`, the
//! controllers' `observe` and the `reconcile` functions.

// First: the controllers' modules use the macro.
#[macro_use]
mod api_strings;

pub mod apply;
pub mod conditions;
#[cfg(test)]
pub mod fake_api;
pub mod meta;
pub mod pod;
pub mod shard_set;
pub mod snapshot_store;
pub mod vector_collection;
pub mod vector_snapshot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::runtime::Controller;
use kube::{Api, Client, Resource, ResourceExt};
use parking_lot::Mutex;

use crate::crd::{ShardSet, VectorCollection, VectorSnapshot};
use crate::error::Error;
use crate::metrics::Metrics;

/// Which namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: crate::crd::FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// 1 s, 2 s, 4 s … up to 5 minutes between retries of a failing object.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs((1u64 << (*n - 1).min(9)).min(300))
    }
}

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Wraps a controller's reconcile with its duration metric and the backoff bookkeeping.
async fn timed<K, F>(
    controller: &str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    f: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: std::future::Future<Output = Result<Action, Error>>,
{
    let start = std::time::Instant::now();
    let result = f.await;
    ctx.metrics
        .observe(controller, start.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.succeeded(&key(obj.as_ref())),
        // On the object itself, where `kubectl describe` shows it: a reconcile that fails
        // before the status is written (a rejected apply, a certificate that cannot be
        // issued) would otherwise leave nothing but the operator's log to say why. The
        // error policy's backoff bounds how often this is published.
        Err(e) => {
            apply::publish(
                ctx.as_ref(),
                obj.as_ref(),
                true,
                "ReconcileFailed",
                e.to_string(),
            )
            .await
        }
    }
    result
}

fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        ctx.metrics.error(controller, error.metric_label());
        let delay = ctx.backoff(&key(obj.as_ref()));
        tracing::warn!(controller, object = %key(obj.as_ref()), %error, retry_in = ?delay, "reconcile failed");
        Action::requeue(delay)
    }
}

/// An Api over one namespace, or over all when `namespace` is `None`.
pub(crate) fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        None => Api::all(client.clone()),
        Some(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the controllers over `scope` until a shutdown signal: one set per watched namespace
/// (or one set cluster-wide), so RBAC can be granted per namespace. Returns an error when one
/// of them stopped by panicking: the caller exits, so that Kubernetes restarts the operator.
pub async fn run(ctx: Arc<Context>, scope: Scope) -> Result<(), TaskPanicked> {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;

    let namespaces: Vec<Option<String>> = match scope {
        Scope::All => vec![None],
        Scope::Namespaces(list) => list.into_iter().map(Some).collect(),
    };
    let client = ctx.client.clone();
    // Children are found by the label every one of them carries.
    let managed = format!(
        "{}={}",
        crate::names::LABEL_MANAGED_BY,
        crate::crd::FIELD_MANAGER
    );
    let children = || watcher::Config::default().labels(&managed);
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for ns in namespaces.iter().map(Option::as_deref) {
        let collections = Controller::new(
            api_in::<VectorCollection>(&client, ns),
            watcher::Config::default(),
        )
        .owns(api_in::<ShardSet>(&client, ns), watcher::Config::default())
        .owns(api_in::<Deployment>(&client, ns), children())
        .owns(api_in::<ConfigMap>(&client, ns), children())
        .owns(api_in::<Service>(&client, ns), children())
        // A snapshot that finishes changes the collection's status (lastSnapshots,
        // SnapshotSucceeded) and lets a skipped schedule go on.
        .watches(
            api_in::<VectorSnapshot>(&client, ns),
            watcher::Config::default(),
            |vs: VectorSnapshot| {
                Some(
                    kube::runtime::reflector::ObjectRef::<VectorCollection>::new(
                        &vs.spec.collection,
                    )
                    .within(&vs.namespace().unwrap_or_default()),
                )
            },
        )
        .shutdown_on_signal()
        .run(
            vector_collection::reconcile,
            error_policy::<VectorCollection>(vector_collection::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
        tasks.push(("VectorCollection controller", tokio::spawn(collections)));
        let shards = Controller::new(api_in::<ShardSet>(&client, ns), watcher::Config::default())
            .owns(api_in::<StatefulSet>(&client, ns), children())
            .owns(api_in::<Service>(&client, ns), children())
            .owns(api_in::<PodDisruptionBudget>(&client, ns), children())
            .owns(api_in::<HorizontalPodAutoscaler>(&client, ns), children())
            // A shard pod's readiness (or its deletion starting) changes which replicas the
            // shard map counts as serving: seen here at once, not only when the StatefulSet's
            // ready count changes.
            .watches(
                api_in::<Pod>(&client, ns),
                watcher::Config::default().labels(crate::names::LABEL_SHARD),
                |pod: Pod| {
                    let shard = pod.labels().get(crate::names::LABEL_SHARD)?.clone();
                    Some(
                        kube::runtime::reflector::ObjectRef::<ShardSet>::new(&shard)
                            .within(&pod.namespace().unwrap_or_default()),
                    )
                },
            )
            .shutdown_on_signal()
            .run(
                shard_set::reconcile,
                error_policy::<ShardSet>(shard_set::CONTROLLER),
                ctx.clone(),
            )
            .for_each(|_| futures::future::ready(()));
        tasks.push(("ShardSet controller", tokio::spawn(shards)));
        let snapshots = Controller::new(
            api_in::<VectorSnapshot>(&client, ns),
            watcher::Config::default(),
        )
        .shutdown_on_signal()
        .run(
            vector_snapshot::reconcile,
            error_policy::<VectorSnapshot>(vector_snapshot::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
        tasks.push(("VectorSnapshot controller", tokio::spawn(snapshots)));
        counters.push((
            "vector count refresh",
            tokio::spawn(shard_set::vectors::refresh_loop(
                client.clone(),
                ns.map(str::to_string),
            )),
        ));
    }
    supervise(tasks, counters).await
}

/// A task of the operator's that stopped by panicking.
#[derive(Debug, thiserror::Error)]
#[error("the {task} panicked: {message}")]
pub struct TaskPanicked {
    pub task: &'static str,
    pub message: String,
}

/// Waits for the controllers to stop (they do on a shutdown signal), then stops the
/// background loops. A task that panics must not be left dead inside a live process: the
/// process would look healthy while its resources went unreconciled (objects created after it
/// would never get a status). The first panic aborts everything and is returned.
pub async fn supervise(
    controllers: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    background: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
) -> Result<(), TaskPanicked> {
    use futures::future::FutureExt;
    use futures::stream::FuturesUnordered;
    let aborts: Vec<_> = controllers
        .iter()
        .chain(&background)
        .map(|(_, task)| task.abort_handle())
        .collect();
    let abort_all = || aborts.iter().for_each(|a| a.abort());
    let mut controllers_left = controllers.len();
    let mut running: FuturesUnordered<_> = controllers
        .into_iter()
        .map(|(name, task)| (name, true, task))
        .chain(
            background
                .into_iter()
                .map(|(name, task)| (name, false, task)),
        )
        .map(|(name, is_controller, task)| task.map(move |r| (name, is_controller, r)))
        .collect();
    while controllers_left > 0 {
        let Some((task, is_controller, result)) = running.next().await else {
            break;
        };
        if let Err(e) = result {
            if e.is_panic() {
                abort_all();
                return Err(TaskPanicked {
                    task,
                    message: panic_message(e.into_panic()),
                });
            }
        }
        if is_controller {
            controllers_left -= 1;
        }
    }
    abort_all();
    Ok(())
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".into())
}

#[cfg(test)]
mod supervise_tests {
    use super::supervise;
    use std::time::Duration;

    fn forever() -> tokio::task::JoinHandle<()> {
        tokio::spawn(futures::future::pending())
    }

    #[tokio::test]
    async fn a_panicking_controller_stops_everything_and_is_named() {
        let quiet = forever();
        let quiet_abort = quiet.abort_handle();
        let background = forever();
        let background_abort = background.abort_handle();
        let panicking = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("index out of bounds: the len is 0 but the index is 0");
        });
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            supervise(
                vec![("collections", quiet), ("shards", panicking)],
                vec![("counts", background)],
            ),
        )
        .await
        .expect("supervise returns on the panic")
        .expect_err("a panic is an error");
        assert_eq!(err.task, "shards");
        assert!(err.message.contains("index out of bounds"), "{err}");
        tokio::task::yield_now().await;
        assert!(quiet_abort.is_finished() && background_abort.is_finished());
    }

    #[tokio::test]
    async fn a_panicking_background_loop_is_an_error_too() {
        let background = tokio::spawn(async { panic!("{}", String::from("count overflow")) });
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            supervise(
                vec![("collections", forever())],
                vec![("counts", background)],
            ),
        )
        .await
        .expect("supervise returns on the panic")
        .expect_err("a panic is an error");
        assert_eq!(
            (err.task, err.message.as_str()),
            ("counts", "count overflow")
        );
    }

    #[tokio::test]
    async fn controllers_that_stop_normally_end_the_background_loops() {
        let background = forever();
        let background_abort = background.abort_handle();
        let done = tokio::spawn(async {});
        let later = tokio::spawn(tokio::time::sleep(Duration::from_millis(20)));
        tokio::time::timeout(
            Duration::from_secs(5),
            supervise(
                vec![("a", done), ("b", later)],
                vec![("counts", background)],
            ),
        )
        .await
        .expect("supervise returns once the controllers stopped")
        .expect("no panic");
        tokio::task::yield_now().await;
        assert!(background_abort.is_finished());
    }
}
