//! Metadata shared by every child object: name, namespace, labels and the controller owner
//! reference that lets the garbage collector delete children with their parent. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::error::{Error, Result};

/// Metadata of a child of `owner` in the owner's namespace.
pub fn child_meta<K>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta>
where
    K: Resource<DynamicType = ()>,
{
    Ok(ObjectMeta {
        name: Some(name),
        namespace: owner.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(owner)?]),
        ..ObjectMeta::default()
    })
}

/// A controller owner reference to `owner` (needs its uid: only for objects read from the API).
pub fn owner_reference<K>(owner: &K) -> Result<OwnerReference>
where
    K: Resource<DynamicType = ()>,
{
    owner
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))
}
