//! Every read of the VectorCollection reconcile, done first and kept in `Observed`: the
//! collection, the ShardSets it controls, the stored shard map and the router Deployment.
//! What follows decides from this value with pure functions and only writes, so a test can
//! state a scenario as the objects the API holds.
//!
//! It also lists the collection's `VectorSnapshot`s (status and schedule) and, for a new
//! collection with `spec.restoreFrom`, resolves the snapshot (its Secret and the bucket).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use vecshard_proto::shard_map::ShardMap;

use super::build::read_shard_map;
use super::security::ObservedSecrets;
use crate::controller::apply::get_opt;
use crate::crd::{ShardSet, VectorCollection};
use crate::error::{Error, Result};
use crate::names;

/// What the API server held when the reconcile started.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The collection as the watch delivered it (spec, status and metadata).
    pub collection: Arc<VectorCollection>,
    /// Its namespace, where every child lives.
    pub namespace: String,
    /// The ShardSets it controls: labelled with its name and owned by its uid (a ShardSet
    /// left by a deleted collection of the same name is not one of them).
    pub shard_sets: Vec<ShardSet>,
    /// The shard map stored in `<name>-shard-map`; `None` when absent or unreadable.
    pub shard_map: Option<ShardMap>,
    /// The router Deployment; `None` before its first apply.
    pub router: Option<Deployment>,
    /// The VectorSnapshots of this collection (on demand and scheduled).
    pub snapshots: Vec<crate::crd::VectorSnapshot>,
    /// `spec.restoreFrom` resolved (`None` without one; `Err`: why it cannot be used).
    pub restore: Option<std::result::Result<super::restore::Restore, String>>,
    /// The Secrets of its TLS and API keys.
    pub secrets: ObservedSecrets,
}

impl Observed {
    /// The shard-map version last published in the status (0 before the first).
    pub fn published_map_version(&self) -> u64 {
        self.collection
            .status
            .as_ref()
            .and_then(|s| s.shard_map_version)
            .unwrap_or(0)
    }

    /// The live ShardSet of shard `ordinal`, if there is one.
    pub fn shard_set(&self, ordinal: u32) -> Option<&ShardSet> {
        self.shard_sets.iter().find(|ss| ss.spec.shard == ordinal)
    }
}

/// Reads what the reconcile of `collection` decides from.
pub async fn observe(client: &kube::Client, collection: Arc<VectorCollection>) -> Result<Observed> {
    let namespace = collection
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = collection.name_any();
    let labelled = list_shard_sets(client, &namespace, &name).await?;
    let shard_sets = owned_by(labelled, collection.uid().as_deref());
    let shard_map = get_opt::<ConfigMap>(client, &namespace, &names::shard_map_name(&name))
        .await?
        .as_ref()
        .and_then(read_shard_map);
    let router = get_opt::<Deployment>(client, &namespace, &names::router_name(&name)).await?;
    let snapshots = super::snapshots::of_collection(
        Api::<crate::crd::VectorSnapshot>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .map(|list| list.items)
            .map_err(|source| Error::Get {
                kind: "VectorSnapshot".into(),
                name: format!("{namespace}/*"),
                source,
            })?,
        &name,
    );
    let restore = super::restore::resolve(client, &collection, &shard_sets).await;
    let secrets = observe_secrets(client, &collection).await?;
    Ok(Observed {
        collection,
        namespace,
        shard_sets,
        shard_map,
        router,
        snapshots,
        restore,
        secrets,
    })
}

/// The Secrets a collection's security uses: its CA (operator-issued TLS), the TLS Secret its
/// pods mount and its API-key Secret.
pub async fn observe_secrets(
    client: &kube::Client,
    vc: &VectorCollection,
) -> Result<ObservedSecrets> {
    let ns = vc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = vc.name_any();
    let tls = vc.spec.tls.as_ref();
    let ca = match tls.filter(|t| t.secret_name.is_none()) {
        Some(_) => get_opt::<Secret>(client, &ns, &names::ca_secret_name(&name)).await?,
        None => None,
    };
    let tls_name = tls.map(|t| {
        t.secret_name
            .clone()
            .unwrap_or_else(|| names::tls_secret_name(&name))
    });
    let keys_name = vc.spec.auth.as_ref().map(|a| a.api_key_secret.clone());
    let (tls, api_keys) =
        secrets_named(client, &ns, tls_name.as_deref(), keys_name.as_deref()).await?;
    Ok(ObservedSecrets { ca, tls, api_keys })
}

/// The TLS and API-key Secrets of these names (`None`: not used, or not found).
pub async fn secrets_named(
    client: &kube::Client,
    ns: &str,
    tls: Option<&str>,
    keys: Option<&str>,
) -> Result<(Option<Secret>, Option<Secret>)> {
    let get = |name: Option<&str>| {
        let name = name.map(str::to_string);
        async move {
            match name {
                Some(name) => get_opt::<Secret>(client, ns, &name).await,
                None => Ok(None),
            }
        }
    };
    Ok((get(tls).await?, get(keys).await?))
}

/// The ShardSets labelled with the collection's name.
async fn list_shard_sets(client: &kube::Client, ns: &str, name: &str) -> Result<Vec<ShardSet>> {
    let selector = format!("{}={name}", names::LABEL_COLLECTION);
    Api::<ShardSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|list| list.items)
        .map_err(|source| Error::Get {
            kind: "ShardSet".into(),
            name: format!("{ns}/{name}-*"),
            source,
        })
}

/// The ones among `shard_sets` that the object with `uid` owns (by owner uid, not only by
/// name). Without a uid (an object never read from the API) none is.
fn owned_by(shard_sets: Vec<ShardSet>, uid: Option<&str>) -> Vec<ShardSet> {
    shard_sets
        .into_iter()
        .filter(|ss| {
            ss.owner_references()
                .iter()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect()
}
