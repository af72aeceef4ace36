//! The I/O edge of every controller: server-side apply with the operator's one field manager,
//! reads, deletes and Events. Nothing here decides anything.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::crd::FIELD_MANAGER;
use crate::error::{Error, Result};

/// A namespaced Kubernetes object the operator can read back (all its children and its CRs);
/// one name for the bounds every call here needs.
pub trait Namespaced:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
{
}

impl<K> Namespaced for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
{
}

/// Applies `object` in its namespace. `force`: the operator's fields win over other managers'
/// (kubectl edits of operator-owned fields are reverted, as users of operators expect).
pub async fn apply<K>(client: &kube::Client, object: &K) -> Result<K>
where
    K: Namespaced + Serialize,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: kind_of::<K>(),
        name,
        source,
    })
}

/// Reads an object, `None` when it does not exist.
pub async fn get_opt<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: Namespaced,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::Get {
            kind: kind_of::<K>(),
            name: name.to_string(),
            source,
        })
}

/// Writes the status subresource with server-side apply.
pub async fn apply_status<K>(
    client: &kube::Client,
    object: &K,
    status: serde_json::Value,
) -> Result<()>
where
    K: Namespaced,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .or_else(|e| match e {
        // Deleted while we reconciled: nothing left to describe.
        kube::Error::Api(ref status) if status.code == 404 => Ok(()),
        e => Err(e),
    })
    .map_err(|source| Error::Status {
        kind: kind_of::<K>(),
        name,
        source,
    })
}

/// Deletes an object the spec no longer asks for; absent is fine.
pub async fn delete_if_present<K>(client: &kube::Client, ns: &str, name: &str) -> Result<()>
where
    K: Namespaced,
{
    match Api::<K>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Apply {
            kind: kind_of::<K>(),
            name: name.to_string(),
            source,
        }),
    }
}

/// A child that a spec may or may not ask for (the HPAs): `Present` is applied, `Absent` is
/// deleted in case an earlier spec left one behind.
#[derive(Clone, Debug, PartialEq)]
pub enum Desired<K> {
    Present(K),
    Absent { name: String },
}

/// Applies a `Present` child, deletes an `Absent` one (absent already is fine).
pub async fn apply_or_delete<K>(client: &kube::Client, ns: &str, child: &Desired<K>) -> Result<()>
where
    K: Namespaced + Serialize,
{
    match child {
        Desired::Present(object) => apply(client, object).await.map(drop),
        Desired::Absent { name } => delete_if_present::<K>(client, ns, name).await,
    }
}

/// Publishes an Event on `obj`; a failure to publish is logged, never fails the reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &super::Context,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_string()
}
