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
    if result.is_ok() {
        ctx.succeeded(&key(obj.as_ref()));
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

/// Runs both controllers over `scope` until a shutdown signal: one pair per watched namespace
/// (or one pair cluster-wide), so RBAC can be granted per namespace.
pub async fn run(ctx: Arc<Context>, scope: Scope) {
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
        tasks.push(tokio::spawn(collections));
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
        tasks.push(tokio::spawn(shards));
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
        tasks.push(tokio::spawn(snapshots));
        counters.push(tokio::spawn(shard_set::vectors::refresh_loop(
            client.clone(),
            ns.map(str::to_string),
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    // The controllers stopped (shutdown signal): so do the counts.
    for counter in counters {
        counter.abort();
    }
}
