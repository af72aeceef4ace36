//! Every child of an accepted collection, built from the `ValidatedCollection` and what was
//! observed, as one value for `reconcile` to apply in order. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

use super::build;
use super::observe::Observed;
use super::validated::ValidatedCollection;
use crate::controller::apply::Desired;
use crate::crd::ShardSet;
use crate::error::Result;
use crate::names;

/// The children, in the order they are applied: the ShardSets before the shard map that names
/// their replicas, the map before the router that reads it.
#[derive(Clone, Debug)]
pub struct Children {
    /// One per shard, by ordinal.
    pub shard_sets: Vec<ShardSet>,
    /// The shard map ConfigMap, and the map's version (the status publishes it).
    pub shard_map: ConfigMap,
    pub shard_map_version: u64,
    pub router_account: ServiceAccount,
    pub router_role: Role,
    pub router_binding: RoleBinding,
    pub router: Deployment,
    pub router_service: Service,
    pub router_pdb: PodDisruptionBudget,
    pub router_hpa: Desired<HorizontalPodAutoscaler>,
}

pub fn plan(vc: &ValidatedCollection, observed: &Observed) -> Result<Children> {
    let shard_sets = (0..vc.shards)
        .map(|ordinal| {
            let replicas = build::shard_replicas(vc, observed.shard_set(ordinal));
            build::build_shard_set(vc, ordinal, replicas)
        })
        .collect::<Result<Vec<_>>>()?;
    // Built from the ShardSets as they are about to be applied: every field the map reads
    // (name, partitions, replicas) is one the operator sets and forces, so the API server
    // holds exactly these values once they are applied.
    let map = build::build_shard_map(
        vc,
        &shard_sets,
        observed.shard_map.as_ref(),
        observed.published_map_version(),
    );
    let (router_account, router_role, router_binding) = build::build_router_rbac(vc)?;
    Ok(Children {
        shard_map: build::build_shard_map_config_map(vc, &map)?,
        shard_map_version: map.version,
        shard_sets,
        router_account,
        router_role,
        router_binding,
        router: build::build_router_deployment(vc)?,
        router_service: build::build_router_service(vc)?,
        router_pdb: build::build_router_pdb(vc)?,
        router_hpa: match build::build_router_hpa(vc)? {
            Some(hpa) => Desired::Present(hpa),
            None => Desired::Absent {
                name: names::router_name(&vc.name),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controller::vector_collection::validate::validate;
    use crate::crd::{VectorCollection, VectorCollectionStatus};

    fn collection(extra: &str) -> VectorCollection {
        serde_yaml::from_str(&format!(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {{name: docs, namespace: search, uid: vc-uid, generation: 1}}
spec:
  dimension: 384
  shards: 2
  replicas: 2
{extra}"
        ))
        .unwrap()
    }

    fn observed(vc: &VectorCollection, shard_sets: Vec<ShardSet>) -> Observed {
        Observed {
            collection: Arc::new(vc.clone()),
            namespace: "search".into(),
            shard_sets,
            shard_map: None,
            router: None,
        }
    }

    #[test]
    fn every_shard_is_planned_and_an_autoscaled_one_keeps_its_replicas() {
        let vc =
            collection("  autoscaling: {minReplicas: 2, maxReplicas: 5, targetP95LatencyMs: 20}\n");
        let valid = validate(&vc, &[]).unwrap();
        let live = build::build_shard_set(&valid, 1, 4).unwrap();
        let children = plan(&valid, &observed(&vc, vec![live])).unwrap();
        let replicas: Vec<i32> = children
            .shard_sets
            .iter()
            .map(|s| s.spec.replicas)
            .collect();
        assert_eq!(replicas, [2, 4], "a new shard starts at spec.replicas");
        assert!(matches!(children.router_hpa, Desired::Present(_)));
        assert_eq!(children.shard_map_version, 1);
    }

    #[test]
    fn without_autoscaling_a_left_over_router_hpa_is_removed() {
        let vc = collection("");
        let valid = validate(&vc, &[]).unwrap();
        let children = plan(&valid, &observed(&vc, vec![])).unwrap();
        assert_eq!(
            children.router_hpa,
            Desired::Absent {
                name: "docs-router".into()
            }
        );
    }

    #[test]
    fn a_lost_map_is_planned_above_the_published_version() {
        let mut vc = collection("");
        vc.status = Some(VectorCollectionStatus {
            shard_map_version: Some(7),
            ..VectorCollectionStatus::default()
        });
        let valid = validate(&vc, &[]).unwrap();
        let children = plan(&valid, &observed(&vc, vec![])).unwrap();
        assert_eq!(children.shard_map_version, 8);
    }
}
