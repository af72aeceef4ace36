//! What the CRD schema and its CEL rules cannot check, checked before anything is built: a spec
//! that fails here is reported as `Degraded` and the running workloads are left as they are.
//! Pure.

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::build::partition_range;
use crate::crd::{IndexKind, ShardSet, VectorCollectionSpec};

/// Why a spec cannot be built, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `existing`: the collection's ShardSets now (empty when new).
pub fn validate(spec: &VectorCollectionSpec, existing: &[ShardSet]) -> Result<(), Invalid> {
    if let Some(built_for) = shard_count_of(spec, existing) {
        return Err(invalid(
            "spec.shards",
            format!(
                "changing the shard count from {built_for} to {} needs partition rebalancing, \
                 which this operator version does not do yet; set it back to {built_for}",
                spec.shards
            ),
        ));
    }
    if spec.index.kind == IndexKind::Flat {
        return Err(invalid(
            "spec.index.type",
            "flat is not served by vecshard-server 0.1; use hnsw (requests can still ask for \
             exact search with \"exact\": true)",
        ));
    }
    if spec.image.trim().is_empty() || spec.image.contains(char::is_whitespace) {
        return Err(invalid(
            "spec.image",
            format!("{:?} is not an image reference", spec.image),
        ));
    }
    check_quantity("spec.storage.size", &spec.storage.size)?;
    // StatefulSets refuse changes to their volumeClaimTemplates: applying one would fail on
    // every retry, so say so once, naming the field.
    if let Some(live) = existing.first() {
        let (now, want) = (&live.spec.storage, &spec.storage);
        if now.size != want.size || now.storage_class_name != want.storage_class_name {
            return Err(invalid(
                "spec.storage",
                format!(
                    "size and storageClassName cannot change after creation (StatefulSet volume \
                     templates are immutable): the volumes are {} of class {}; expand PVCs \
                     directly if the class allows it",
                    now.size,
                    now.storage_class_name.as_deref().unwrap_or("(default)")
                ),
            ));
        }
    }
    if let Some(r) = &spec.resources {
        check_resources("spec.resources", r)?;
    }
    if let Some(r) = &spec.router.resources {
        check_resources("spec.router.resources", r)?;
    }
    if let Some(a) = spec
        .autoscaling
        .as_ref()
        .filter(|a| spec.replicas < a.min_replicas)
    {
        // Not an error the HPA would catch: it would silently scale up at once.
        return Err(invalid(
            "spec.replicas",
            format!(
                "{} is below autoscaling.minReplicas {}",
                spec.replicas, a.min_replicas
            ),
        ));
    }
    Ok(())
}

/// The shard count the live ShardSets were built for, when it differs from the spec's. Their
/// partition ranges tell (a missing ShardSet is not a count change: it is re-created).
fn shard_count_of(spec: &VectorCollectionSpec, existing: &[ShardSet]) -> Option<u32> {
    let built_for = |n: u32| {
        existing.iter().all(|ss| {
            ss.spec.shard < n
                && ss.spec.partitions == [partition_range(spec.partitions, n, ss.spec.shard)]
        })
    };
    if existing.is_empty() || built_for(spec.shards) {
        return None;
    }
    Some(
        (1..=spec.partitions.min(MAX_SHARDS))
            .find(|&n| built_for(n))
            .unwrap_or(existing.len() as u32),
    )
}

/// The CRD's limit on `spec.shards`.
const MAX_SHARDS: u32 = 1024;

fn check_resources(field: &str, r: &ResourceRequirements) -> Result<(), Invalid> {
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(invalid(
            format!("{field}.claims"),
            "dynamic resource claims are not supported; use requests and limits",
        ));
    }
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map.iter().flatten() {
            check_quantity(&format!("{field}.{kind}.{name}"), &q.0)?;
        }
    }
    Ok(())
}

fn check_quantity(field: &str, value: &str) -> Result<(), Invalid> {
    if is_quantity(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not a Kubernetes quantity (e.g. 10Gi, 500m, 2, 1.5G, 1e3)"),
        ))
    }
}

/// Kubernetes' quantity grammar: a signed decimal number and an optional binary (Ki…Ei),
/// decimal (n, u, m, k, M…E) or exponent (e3, E-2) suffix.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| {
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
        })
        .unwrap_or(false);
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::VectorCollection;

    fn spec(yaml: &str) -> VectorCollectionSpec {
        serde_yaml::from_str::<VectorCollection>(yaml).unwrap().spec
    }

    /// `n` ShardSets as the operator would have built them from MINIMAL.
    fn live(n: u32) -> Vec<ShardSet> {
        let mut vc: VectorCollection = serde_yaml::from_str(MINIMAL).unwrap();
        vc.metadata.uid = Some("u".into());
        vc.metadata.namespace = Some("ns".into());
        (0..n)
            .map(|i| {
                crate::controller::vector_collection::build::build_shard_set(&vc, i, 2).unwrap()
            })
            .collect()
    }

    #[test]
    fn volume_templates_cannot_change_after_creation() {
        let mut s = spec(MINIMAL);
        s.storage.size = "20Gi".into();
        let err = validate(&s, &live(2)).unwrap_err();
        assert_eq!(err.field, "spec.storage");
        assert!(err.message.contains("10Gi"), "{err}");
        assert_eq!(
            validate(&s, &[]),
            Ok(()),
            "any size is fine for a new collection"
        );
    }

    const MINIMAL: &str = "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs}
spec: {dimension: 384, shards: 2}
";

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in [
            "10Gi", "500m", "2", "1.5G", "1e3", "0.5", "+1Ki", "12E-2", ".5",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "ten", "10 Gi", "10GB", "1..5", "Gi", "1e", "10gi", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn a_valid_spec_passes_on_creation_and_on_update() {
        assert_eq!(validate(&spec(MINIMAL), &[]), Ok(()));
        assert_eq!(validate(&spec(MINIMAL), &live(2)), Ok(()));
    }

    #[test]
    fn changing_the_shard_count_is_refused_until_rebalancing_exists() {
        let mut grown = spec(MINIMAL);
        grown.shards = 3;
        let err = validate(&grown, &live(2)).unwrap_err();
        assert_eq!(err.field, "spec.shards");
        assert!(err.message.contains("from 2 to 3"), "{err}");
        let mut shrunk = spec(MINIMAL);
        shrunk.shards = 1;
        let err = validate(&shrunk, &live(2)).unwrap_err();
        assert!(err.message.contains("from 2 to 1"), "{err}");
    }

    #[test]
    fn a_missing_shard_set_is_re_created_not_taken_for_a_count_change() {
        let mut sets = live(2);
        sets.remove(0);
        assert_eq!(validate(&spec(MINIMAL), &sets), Ok(()));
    }

    #[test]
    fn a_storage_size_that_is_no_quantity_names_the_field() {
        let mut s = spec(MINIMAL);
        s.storage.size = "ten gigs".into();
        let err = validate(&s, &[]).unwrap_err();
        assert_eq!(err.field, "spec.storage.size");
        assert!(err.message.contains("\"ten gigs\""), "{err}");
    }

    #[test]
    fn bad_resource_quantities_name_the_resource() {
        let s = spec(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs}
spec:
  dimension: 384
  router: {resources: {limits: {memory: lots}}}
",
        );
        let err = validate(&s, &[]).unwrap_err();
        assert_eq!(err.field, "spec.router.resources.limits.memory");
    }

    #[test]
    fn flat_indexes_and_replicas_below_the_autoscaler_minimum_are_refused() {
        let mut s = spec(MINIMAL);
        s.index.kind = IndexKind::Flat;
        assert_eq!(validate(&s, &[]).unwrap_err().field, "spec.index.type");
        let s = spec(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs}
spec:
  dimension: 384
  replicas: 1
  autoscaling: {minReplicas: 2, maxReplicas: 4, targetP95LatencyMs: 20}
",
        );
        assert_eq!(validate(&s, &[]).unwrap_err().field, "spec.replicas");
    }
}
