//! Metadata shared by every child object: name, namespace, labels and the controller owner
//! reference that lets the garbage collector delete children with their parent. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::error::{Error, Result};

/// The parent side of a child's metadata, taken from the parent once: its namespace and its
/// controller owner reference. A value, so a validated view can carry it without holding on
/// to the object it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    namespace: Option<String>,
    /// `None` for an object never read from the API (it has no uid yet).
    reference: Option<OwnerReference>,
}

impl Owner {
    pub fn of<K>(owner: &K) -> Owner
    where
        K: Resource<DynamicType = ()>,
    {
        Owner {
            namespace: owner.namespace(),
            reference: owner.controller_owner_ref(&()),
        }
    }

    /// The owner's `metadata.namespace`, where its children go.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Metadata of a child in the owner's namespace. Refused without the owner's uid: a child
    /// owned by nothing would outlive its parent.
    pub fn child_meta(&self, name: String, labels: BTreeMap<String, String>) -> Result<ObjectMeta> {
        let reference = self
            .reference
            .clone()
            .ok_or(Error::MissingField("metadata.uid"))?;
        Ok(ObjectMeta {
            name: Some(name),
            namespace: self.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![reference]),
            ..ObjectMeta::default()
        })
    }
}

/// Metadata of a child of `owner` in the owner's namespace.
pub fn child_meta<K>(
    owner: &K,
    name: String,
    labels: BTreeMap<String, String>,
) -> Result<ObjectMeta>
where
    K: Resource<DynamicType = ()>,
{
    Owner::of(owner).child_meta(name, labels)
}
