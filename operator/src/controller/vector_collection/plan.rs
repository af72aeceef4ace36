//! Every child of an accepted collection, built from the `ValidatedCollection` and what was
//! observed, as one value for `reconcile` to apply in order. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

use kube::ResourceExt;

use super::build;
use super::observe::Observed;
use super::rebalance;
use super::validated::ValidatedCollection;
use crate::controller::apply::Desired;
use crate::crd::ShardSet;
use crate::error::Result;
use crate::names;

/// Ordinals looked at for ShardSets still in use (the CRD's limit on `spec.shards`).
const MAX_ORDINALS: u32 = 1024;

/// The children, in the order they are applied: the ShardSets before the shard map that names
/// their replicas, the map before the router that reads it.
#[derive(Clone, Debug)]
pub struct Children {
    /// One per shard, by ordinal (those of spec.shards and any still holding partitions).
    pub shard_sets: Vec<ShardSet>,
    /// ShardSets of shards that left the collection (rebalanced to fewer shards): deleted,
    /// their volumes kept or deleted per `storage.whenDeleted`.
    pub retired_shard_sets: Vec<String>,
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
    pub shard_network_policy: Desired<NetworkPolicy>,
    pub router_network_policy: Desired<NetworkPolicy>,
}

pub fn plan(vc: &ValidatedCollection, observed: &Observed) -> Result<Children> {
    let progress = rebalance::recorded(&observed.collection);
    let map = observed.shard_map.as_ref();
    // Shards beyond spec.shards stay while partitions move away from them (scale-in).
    let in_use = rebalance::shards_in_use(progress.as_ref(), map);
    let paused = rebalance::paused_autoscaling(progress.as_ref(), map);
    let count = (0..MAX_ORDINALS)
        .rev()
        .find(|o| in_use.contains(&names::shard_set_name(&vc.name, *o)))
        .map_or(vc.shards, |last| (last + 1).max(vc.shards));
    let shard_sets = (0..count)
        .map(|ordinal| {
            let name = names::shard_set_name(&vc.name, ordinal);
            let live = observed.shard_set(ordinal);
            let autoscaled = !paused.contains(&name);
            // A paused autoscaler leaves the pod count where the HPA had it.
            let replicas = match (autoscaled, live) {
                (false, Some(ss)) => ss.spec.replicas,
                _ => build::shard_replicas(vc, live),
            };
            let partitions = match (map, live) {
                (Some(map), _) => build::partitions_in_map(map, &name),
                (None, Some(ss)) => ss.spec.partitions.clone(),
                (None, None) => match vc.restore.as_ref().and_then(|r| r.partitions(ordinal)) {
                    // A restored collection starts with the snapshot's assignment.
                    Some(restored) => restored,
                    None => vec![build::partition_range(vc.partitions, vc.shards, ordinal)],
                },
            };
            build::build_shard_set_owning(vc, ordinal, replicas, partitions, autoscaled)
        })
        .collect::<Result<Vec<_>>>()?;
    let retired = observed
        .shard_sets
        .iter()
        .filter(|ss| ss.spec.shard >= count)
        .map(|ss| ss.name_any())
        .collect();
    // Built from the ShardSets as they are about to be applied: every field the map reads
    // from their spec (name, partitions, replicas) is one the operator sets and forces, so the
    // API server holds exactly these values once they are applied. Which replicas are ready
    // (serving rather than joining) comes from the live status.
    let with_status: Vec<ShardSet> = shard_sets
        .iter()
        .map(|ss| {
            let mut ss = ss.clone();
            ss.status = observed
                .shard_set(ss.spec.shard)
                .and_then(|live| live.status.clone());
            ss
        })
        .collect();
    let map = build::build_shard_map(vc, &with_status, map, observed.published_map_version());
    let (router_account, router_role, router_binding) = build::build_router_rbac(vc)?;
    let (shard_network_policy, router_network_policy) =
        super::security::build_network_policies(vc)?;
    Ok(Children {
        retired_shard_sets: retired,
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
        shard_network_policy,
        router_network_policy,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::controller::vector_collection::validate::validate;
    use crate::crd::{VectorCollection, VectorCollectionStatus};
    use vecshard_proto::shard_map::ShardMap;

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
            snapshots: Vec::new(),
            restore: None,
            secrets: Default::default(),
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

    /// The stored map of a 2-shard collection (16 partitions) and its ShardSets.
    fn two_shards(vc: &VectorCollection) -> (Observed, ShardMap) {
        let mut two = vc.clone();
        two.spec.shards = 2;
        let valid = validate(&two, &[]).unwrap();
        let sets: Vec<ShardSet> = (0..2)
            .map(|i| build::build_shard_set(&valid, i, 2).unwrap())
            .collect();
        let map = build::build_shard_map(&valid, &sets, None, 0);
        let mut obs = observed(vc, sets);
        obs.shard_map = Some(map.clone());
        (obs, map)
    }

    #[test]
    fn the_map_lists_replicas_whose_pods_are_not_ready_as_joining() {
        let mut vc = collection("  partitions: 16\n");
        vc.spec.shards = 2;
        let (mut obs, map) = two_shards(&vc);
        // docs-1-1 restarts: its ShardSet reports only ordinal 0 ready.
        obs.shard_sets[1].status = Some(crate::crd::ShardSetStatus {
            ready_ordinals: vec![0],
            ..Default::default()
        });
        let valid = validate(&vc, &obs.shard_sets).unwrap();
        let children = plan(&valid, &obs).unwrap();
        let planned = build::read_shard_map(&children.shard_map).unwrap();
        assert_eq!(planned.version, map.version + 1);
        assert_eq!(planned.shards[1].replicas.len(), 1);
        assert_eq!(
            planned.shards[1].joining,
            ["http://docs-1-1.docs-1.search.svc:6334"]
        );
        assert!(
            planned.shards[0].joining.is_empty(),
            "no status: every replica serves"
        );
        assert!(
            children.shard_sets.iter().all(|ss| ss.status.is_none()),
            "the applied ShardSets carry no status"
        );
    }

    #[test]
    fn a_new_shard_is_created_owning_nothing_and_the_map_waits_for_the_move() {
        let mut vc = collection("  partitions: 16\n");
        vc.spec.shards = 3;
        let (obs, map) = two_shards(&vc);
        let valid = validate(&vc, &obs.shard_sets).unwrap();
        let children = plan(&valid, &obs).unwrap();
        assert_eq!(children.shard_sets.len(), 3);
        assert!(children.shard_sets[2].spec.partitions.is_empty());
        assert_eq!(children.shard_sets[0].spec.partitions.len(), 1);
        assert_eq!(
            children.shard_map_version, map.version,
            "ownership is the rebalancer's"
        );
        assert!(children.retired_shard_sets.is_empty());
    }

    #[test]
    fn a_shard_the_map_no_longer_names_is_retired_and_partitions_follow_the_map() {
        let mut vc = collection("  partitions: 16\n");
        vc.spec.shards = 2;
        let (mut obs, mut map) = two_shards(&vc);
        // As after a 3 → 2 change: docs-0 took partition 8 from the retired docs-2.
        map.shards[0].partitions = ShardMap::ranges(&[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        map.shards[1].partitions = ShardMap::ranges(&[9, 10, 11, 12, 13, 14, 15]);
        obs.shard_map = Some(map);
        let mut third = obs.shard_sets[1].clone();
        third.spec.shard = 2;
        third.metadata.name = Some("docs-2".into());
        obs.shard_sets.push(third);
        let valid = validate(&vc, &obs.shard_sets).unwrap();
        let children = plan(&valid, &obs).unwrap();
        assert_eq!(children.shard_sets.len(), 2);
        assert_eq!(children.retired_shard_sets, vec!["docs-2".to_string()]);
        assert_eq!(children.shard_sets[0].spec.partitions[0].end, 8);
    }
}
