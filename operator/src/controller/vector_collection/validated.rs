//! `ValidatedCollection`: a VectorCollection whose spec `validate` accepted, as the values the
//! builders need. Only `validate` makes one, and the builders read nothing else, so nothing is
//! built from a spec that was not checked, and a check cannot be skipped by a builder reading
//! the raw spec. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::controller::meta::Owner;
use crate::crd::{
    AutoscalingSpec, Device, IndexKind, IndexSpec, IndexedField, Metric, NetworkPolicySpec,
    PodSecurity, Quantization, RouterSpec, StorageSpec, TlsSpec, VectorCollection,
    WriteConsistency,
};
use crate::error::Result;

/// The index: `hnsw` with its parameters, or `flat` (the shards keep no graph; the HNSW
/// parameters are then passed on unused, so that a switch back to `hnsw` finds them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Index {
    pub kind: IndexKind,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
}

impl Index {
    /// As the ShardSet spec carries it.
    pub fn spec(self) -> IndexSpec {
        IndexSpec {
            kind: self.kind,
            m: self.m,
            ef_construction: self.ef_construction,
            ef_search: self.ef_search,
        }
    }
}

/// The collection as `validate` accepted it. Field docs say what was checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCollection {
    /// `metadata.name`: the prefix of every child's name.
    pub name: String,
    /// `metadata.namespace` (empty when unset, as in the shard map's replica addresses).
    pub namespace: String,
    /// Who owns the children (private: only `accepted` sets it).
    owner: Owner,
    /// Equal to the live ShardSets' count (no rebalancing yet).
    pub shards: u32,
    pub partitions: u32,
    /// Not below `autoscaling.minReplicas`.
    pub replicas: u32,
    pub write_consistency: WriteConsistency,
    pub dimension: u32,
    pub metric: Metric,
    pub quantization: Quantization,
    pub index: Index,
    pub indexed_fields: Vec<IndexedField>,
    pub device: Device,
    /// Not empty, no whitespace.
    pub image: String,
    /// Every quantity parses; no dynamic resource claims.
    pub resources: Option<ResourceRequirements>,
    /// `size` is a quantity, and `size` and class match the live volumes.
    pub storage: StorageSpec,
    /// `resources` as for the shards.
    pub router: RouterSpec,
    pub autoscaling: Option<AutoscalingSpec>,
    /// `spec.restoreFrom`, resolved and checked against the spec (`restore.rs`); set by
    /// `with_restore`.
    pub restore: Option<super::restore::Restore>,
    /// Certificates: none (plaintext), the operator's, or the user's Secret.
    pub tls: Option<TlsSpec>,
    /// The Secrets every pod mounts (from `tls` and `auth`).
    pub pod_security: Option<PodSecurity>,
    pub network_policy: NetworkPolicySpec,
}

/// The Secrets a collection's pods mount: its TLS Secret (the user's, or the operator's
/// `<name>-tls`) and its API-key Secret.
fn pod_security(vc: &VectorCollection) -> Option<PodSecurity> {
    let s = &vc.spec;
    if s.tls.is_none() && s.auth.is_none() {
        return None;
    }
    Some(PodSecurity {
        tls_secret: s.tls.as_ref().map(|tls| match &tls.secret_name {
            Some(name) => name.clone(),
            None => crate::names::tls_secret_name(&vc.name_any()),
        }),
        api_key_secret: s.auth.as_ref().map(|a| a.api_key_secret.clone()),
        metrics_need_key: s.auth.as_ref().is_some_and(|a| a.metrics_need_key),
    })
}

impl ValidatedCollection {
    /// Only `validate` calls this, after its checks passed; `index` is the HNSW index it
    /// checked the spec asks for.
    pub(super) fn accepted(vc: &VectorCollection, index: Index) -> ValidatedCollection {
        let s = &vc.spec;
        ValidatedCollection {
            name: vc.name_any(),
            namespace: vc.namespace().unwrap_or_default(),
            owner: Owner::of(vc),
            shards: s.shards,
            partitions: s.partitions,
            replicas: s.replicas,
            write_consistency: s.write_consistency,
            dimension: s.dimension,
            metric: s.metric,
            quantization: s.quantization,
            index,
            indexed_fields: s.indexed_fields.clone(),
            device: s.device,
            image: s.image.clone(),
            resources: s.resources.clone(),
            storage: s.storage.clone(),
            router: s.router.clone(),
            autoscaling: s.autoscaling.clone(),
            restore: None,
            tls: s.tls.clone(),
            pod_security: pod_security(vc),
            network_policy: s.network_policy.clone().unwrap_or_default(),
        }
    }

    /// The collection restored from `restore` (resolved and checked by `restore::resolve`).
    pub fn with_restore(mut self, restore: Option<super::restore::Restore>) -> Self {
        self.restore = restore;
        self
    }

    /// The collection as the owner of its children.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Metadata of a child owned by the collection, in its namespace.
    pub fn child_meta(&self, name: String, labels: BTreeMap<String, String>) -> Result<ObjectMeta> {
        self.owner.child_meta(name, labels)
    }
}
