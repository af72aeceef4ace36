//! How many live vectors a shard holds, as its replicas report them (gRPC `Info`), kept in
//! `status.vectors` by a loop of its own. I/O at the edges: `count_vectors` asks the replicas,
//! `refresh_once` lists ShardSets and writes the counts; `shard_vectors` and `count_patch`
//! decide.
//!
//! Why a loop apart from the reconcile: writes change no Kubernetes object, so nothing would
//! wake the reconcile to recount, and requeueing every ready ShardSet each minute re-applied
//! its StatefulSet, Service, PDB and HPA each minute. The loop only reads replicas and patches
//! counts that changed.

use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::InfoRequest;

use crate::crd::ShardSet;
use crate::names;

/// How often ready shards are counted.
pub const REFRESH: Duration = Duration::from_secs(60);

/// The field manager that owns `status.vectors`. The reconcile applies the rest of the status
/// under the operator's own manager and leaves this field out, so it neither removes nor
/// rewinds a count written here.
pub const COUNT_MANAGER: &str = "vecshard-operator-counter";

/// Shards counted at once by one refresh.
const PARALLEL_COUNTS: usize = 16;

/// How long a replica may take to answer (name lookup and connecting included); replicas are
/// asked at once, so a reconcile waits at most this long.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shard's count from its replicas' answers: the highest one. A replica that is behind
/// (catching up after a restart) reports fewer points than the shard acknowledged; none
/// reports more. `None` when no replica answered.
pub fn shard_vectors(answers: &[Option<u64>]) -> Option<u64> {
    answers.iter().flatten().copied().max()
}

/// Asks every replica address for its point count, all at once. Each replica has
/// `COUNT_TIMEOUT`, so one that hangs does not discard the answers of the others.
pub async fn count_vectors(addresses: &[String]) -> Option<u64> {
    let caller = vecshard_security::current_client();
    let ask = |addr: String| {
        let caller = caller.clone();
        async move {
            let channel = caller
                .channel(&addr, COUNT_TIMEOUT, Some(COUNT_TIMEOUT))
                .ok()?;
            let count = async {
                let mut client = PointsClient::new(channel);
                let info = client.info(InfoRequest::default()).await.ok()?;
                Some(info.into_inner().points)
            };
            tokio::time::timeout(COUNT_TIMEOUT, count)
                .await
                .ok()
                .flatten()
        }
    };
    shard_vectors(&join_all(addresses.iter().cloned().map(ask)).await)
}

/// The server-side-apply body that sets a ShardSet's count (and nothing else).
pub fn count_patch(count: u64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": ShardSet::api_version(&()),
        "kind": ShardSet::kind(&()),
        "status": {"vectors": count},
    })
}

/// Counts every ShardSet (in `namespace`, or all) with a ready replica and writes the counts
/// that changed. A shard whose replicas do not answer keeps its last count.
pub async fn refresh_once(client: &Client, namespace: Option<&str>) -> kube::Result<usize> {
    let ready = crate::controller::api_in::<ShardSet>(client, namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|ss| ss.status.as_ref().is_some_and(|s| s.ready_replicas > 0));
    let changed: Vec<(String, String, u64)> = futures::stream::iter(ready)
        .map(|ss| async move {
            let ns = ss.namespace()?;
            let name = ss.name_any();
            let addresses = names::replica_addresses(&name, &ns, ss.spec.replicas);
            // With the collection's certificate and key, as its components call each other.
            let security = ss.spec.security.as_ref();
            let (tls, keys) = crate::controller::vector_collection::observe::secrets_named(
                client,
                &ns,
                security.and_then(|s| s.tls_secret.as_deref()),
                security.and_then(|s| s.api_key_secret.as_deref()),
            )
            .await
            .ok()?;
            let secrets = crate::controller::vector_collection::security::ObservedSecrets {
                ca: None,
                tls,
                api_keys: keys,
            };
            let caller =
                crate::controller::vector_collection::security::operator_client(&secrets).ok()?;
            let count = vecshard_security::scoped(caller, count_vectors(&addresses)).await?;
            let known = ss.status.as_ref().and_then(|s| s.vectors);
            (known != Some(count)).then_some((ns, name, count))
        })
        .buffer_unordered(PARALLEL_COUNTS)
        .filter_map(futures::future::ready)
        .collect()
        .await;
    let params = PatchParams::apply(COUNT_MANAGER).force();
    for (ns, name, count) in &changed {
        let api: Api<ShardSet> = Api::namespaced(client.clone(), ns);
        match api
            .patch_status(name, &params, &Patch::Apply(count_patch(*count)))
            .await
        {
            // Deleted since the list: nothing to count.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => {
                other?;
            }
        }
    }
    Ok(changed.len())
}

/// `refresh_once` every `REFRESH`, until the task is dropped.
pub async fn refresh_loop(client: Client, namespace: Option<String>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = refresh_once(&client, namespace.as_deref()).await {
            tracing::warn!(?namespace, %error, "counting shard vectors failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_count_is_the_highest_answer_and_unknown_without_any() {
        assert_eq!(shard_vectors(&[Some(10), None, Some(12)]), Some(12));
        assert_eq!(shard_vectors(&[Some(0)]), Some(0));
        assert_eq!(shard_vectors(&[None, None]), None);
        assert_eq!(shard_vectors(&[]), None);
    }

    #[test]
    fn the_count_patch_sets_only_the_count() {
        assert_eq!(
            count_patch(20000),
            serde_json::json!({"apiVersion": "vecshard.io/v1alpha1", "kind": "ShardSet",
                "status": {"vectors": 20000}})
        );
    }

    #[tokio::test]
    async fn a_refresh_counts_only_ready_shards_and_writes_nothing_without_an_answer() {
        use std::collections::BTreeMap;
        let shard = |name: &str, ready: i32| {
            let mut ss = crate::controller::fake_api::shard_set(name);
            ss["status"] = serde_json::json!({"readyReplicas": ready, "vectors": 7});
            ss
        };
        let path =
            |name: &str| format!("/apis/vecshard.io/v1alpha1/namespaces/search/shardsets/{name}");
        let stored = BTreeMap::from([
            (path("docs-0"), shard("docs-0", 1)),
            (path("docs-1"), shard("docs-1", 0)),
        ]);
        let (client, calls) = crate::controller::fake_api::start(stored);
        // docs-0 is ready but its replica's name does not resolve here: no answer, no write.
        assert_eq!(refresh_once(&client, Some("search")).await.unwrap(), 0);
        drop(client);
        let calls = calls.await.unwrap();
        let shorts: Vec<String> = calls.iter().map(|c| c.short()).collect();
        assert_eq!(shorts, ["GET search/shardsets"]);
    }

    #[tokio::test]
    async fn replicas_that_do_not_answer_leave_the_count_unknown_within_the_timeout() {
        // A port nothing listens on: refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let started = std::time::Instant::now();
        assert_eq!(count_vectors(&[addr]).await, None);
        assert!(started.elapsed() <= COUNT_TIMEOUT + Duration::from_millis(500));
    }
}
