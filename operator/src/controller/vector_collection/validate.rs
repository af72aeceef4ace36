//! What the CRD schema and its CEL rules cannot check, checked before anything is built: a spec
//! that fails here is reported as `Degraded` and the running workloads are left as they are.
//! A spec that passes comes back as the `ValidatedCollection` the builders take. Pure.

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::validated::{Index, ValidatedCollection};
use crate::crd::{ShardSet, VectorCollection};

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

impl Invalid {
    /// A message that starts with the field it is about (`spec.auth.apiKeySecret: ...`).
    pub fn named(why: String) -> Invalid {
        match why.split_once(": ") {
            Some((field, message)) if field.starts_with("spec.") => invalid(field, message),
            _ => invalid("spec", why),
        }
    }

    /// `spec.restoreFrom` cannot be used: `why` as `restore::resolve` says it (it starts with
    /// the field when it names one).
    pub fn restore(why: String) -> Invalid {
        match why.split_once(": ") {
            Some((field, message)) if field.starts_with("spec.restoreFrom") => {
                invalid(field, message)
            }
            _ => invalid("spec.restoreFrom", why),
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The longest stabilization window a HorizontalPodAutoscaler accepts, in seconds.
pub const MAX_STABILIZATION_SECONDS: u32 = 3600;

/// `existing`: the collection's ShardSets now (empty when new). The checks run in the order
/// docs/crd-reference.md lists them; the first failure is the one reported.
pub fn validate(
    vc: &VectorCollection,
    existing: &[ShardSet],
) -> Result<ValidatedCollection, Invalid> {
    let spec = &vc.spec;
    // The CRD's CEL rule says the same; checked again because a cluster may still have an older
    // CRD, and the partition split (`build::partition_range`) needs it.
    if spec.shards == 0 || spec.shards > spec.partitions {
        return Err(invalid(
            "spec.shards",
            format!(
                "{} must be between 1 and spec.partitions ({}): every shard owns at least one \
                 partition",
                spec.shards, spec.partitions
            ),
        ));
    }
    if let Some(p) = super::rebalance::recorded(vc) {
        if spec.shards != p.to_shards && spec.shards != p.from_shards {
            return Err(invalid(
                "spec.shards",
                format!(
                    "{} while the change from {} to {} shards is in progress; set it to {} to \
                     let it finish or back to {} to undo it, then change it again",
                    spec.shards, p.from_shards, p.to_shards, p.to_shards, p.from_shards
                ),
            ));
        }
    }
    let index = Index {
        kind: spec.index.kind,
        m: spec.index.m,
        ef_construction: spec.index.ef_construction,
        ef_search: spec.index.ef_search,
    };
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
    if let Some(a) = &spec.autoscaling {
        // The HPA refuses a stabilization window above an hour: every apply would fail.
        for (field, seconds) in [
            (
                "scaleUpStabilizationSeconds",
                a.scale_up_stabilization_seconds,
            ),
            (
                "scaleDownStabilizationSeconds",
                a.scale_down_stabilization_seconds,
            ),
        ] {
            if let Some(s) = seconds.filter(|&s| s > MAX_STABILIZATION_SECONDS) {
                return Err(invalid(
                    format!("spec.autoscaling.{field}"),
                    format!(
                        "{s} is above {MAX_STABILIZATION_SECONDS} (the HorizontalPodAutoscaler's \
                         limit)"
                    ),
                ));
            }
        }
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
    Ok(ValidatedCollection::accepted(vc, index))
}

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
    use crate::controller::vector_collection::build::build_shard_set;
    use crate::crd::IndexKind;

    fn collection(yaml: &str) -> VectorCollection {
        serde_yaml::from_str::<VectorCollection>(yaml).unwrap()
    }

    /// Whether `validate` accepts the collection (these tests look at the verdict only).
    fn check(vc: &VectorCollection, existing: &[ShardSet]) -> Result<(), Invalid> {
        validate(vc, existing).map(drop)
    }

    /// `n` ShardSets as the operator would have built them from MINIMAL.
    fn live(n: u32) -> Vec<ShardSet> {
        let mut vc: VectorCollection = serde_yaml::from_str(MINIMAL).unwrap();
        vc.metadata.uid = Some("u".into());
        vc.metadata.namespace = Some("ns".into());
        let valid = validate(&vc, &[]).unwrap();
        (0..n)
            .map(|i| build_shard_set(&valid, i, 2).unwrap())
            .collect()
    }

    #[test]
    fn volume_templates_cannot_change_after_creation() {
        let mut s = collection(MINIMAL);
        s.spec.storage.size = "20Gi".into();
        let err = check(&s, &live(2)).unwrap_err();
        assert_eq!(err.field, "spec.storage");
        assert!(err.message.contains("10Gi"), "{err}");
        assert_eq!(
            check(&s, &[]),
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
        assert_eq!(check(&collection(MINIMAL), &[]), Ok(()));
        assert_eq!(check(&collection(MINIMAL), &live(2)), Ok(()));
    }

    #[test]
    fn the_shard_count_changes_freely_but_only_back_or_on_while_a_change_runs() {
        let mut grown = collection(MINIMAL);
        grown.spec.shards = 3;
        assert_eq!(
            check(&grown, &live(2)),
            Ok(()),
            "a change starts a rebalance"
        );
        // A change 2 → 3 in progress: 3 (finish) and 2 (undo) are accepted, 4 is not.
        let map = vecshard_proto::shard_map::ShardMap::even(
            "docs",
            16,
            vec![vec!["a".into()], vec!["b".into()]],
        );
        let target = (0..3)
            .map(|i| vecshard_proto::shard_map::ShardAssignment {
                name: format!("docs-{i}"),
                partitions: vec![],
                replicas: vec![format!("r{i}")],
                joining: Vec::new(),
            })
            .collect();
        let progress = vecshard_rebalance::Progress::start(&map, target, 8, 0);
        let record = crate::controller::vector_collection::rebalance::status_of(
            &progress,
            None,
            false,
            String::new(),
            "now",
        );
        grown.status = Some(crate::crd::VectorCollectionStatus {
            rebalance: Some(record),
            ..Default::default()
        });
        assert_eq!(check(&grown, &live(3)), Ok(()));
        grown.spec.shards = 2;
        assert_eq!(check(&grown, &live(3)), Ok(()));
        grown.spec.shards = 4;
        let err = check(&grown, &live(3)).unwrap_err();
        assert_eq!(err.field, "spec.shards");
        assert!(
            err.message.contains("from 2 to 3 shards is in progress"),
            "{err}"
        );
    }

    #[test]
    fn an_accepted_spec_comes_back_as_what_the_builders_take() {
        let mut vc = collection(MINIMAL);
        vc.metadata.namespace = Some("ns".into());
        let valid = validate(&vc, &[]).unwrap();
        assert_eq!(
            (valid.name.as_str(), valid.namespace.as_str()),
            ("docs", "ns")
        );
        assert_eq!(valid.shards, 2);
        assert_eq!(
            valid.index,
            Index {
                kind: IndexKind::Hnsw,
                m: 16,
                ef_construction: 128,
                ef_search: 64
            }
        );
        assert_eq!(valid.index.spec(), vc.spec.index);
    }

    #[test]
    fn a_flat_index_is_accepted_and_keeps_its_hnsw_parameters_for_a_switch_back() {
        let mut vc = collection(MINIMAL);
        vc.spec.index.kind = IndexKind::Flat;
        let valid = validate(&vc, &[]).unwrap();
        assert_eq!(valid.index.kind, IndexKind::Flat);
        assert_eq!(valid.index.spec(), vc.spec.index);
    }

    #[test]
    fn a_missing_shard_set_is_re_created_not_taken_for_a_count_change() {
        let mut sets = live(2);
        sets.remove(0);
        assert_eq!(check(&collection(MINIMAL), &sets), Ok(()));
    }

    #[test]
    fn a_storage_size_that_is_no_quantity_names_the_field() {
        let mut s = collection(MINIMAL);
        s.spec.storage.size = "ten gigs".into();
        let err = check(&s, &[]).unwrap_err();
        assert_eq!(err.field, "spec.storage.size");
        assert!(err.message.contains("\"ten gigs\""), "{err}");
    }

    #[test]
    fn bad_resource_quantities_name_the_resource() {
        let s = collection(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {name: docs}
spec:
  dimension: 384
  router: {resources: {limits: {memory: lots}}}
",
        );
        let err = check(&s, &[]).unwrap_err();
        assert_eq!(err.field, "spec.router.resources.limits.memory");
    }

    #[test]
    fn replicas_below_the_autoscaler_minimum_are_refused() {
        let s = collection(
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
        assert_eq!(check(&s, &[]).unwrap_err().field, "spec.replicas");
    }

    #[test]
    fn more_shards_than_partitions_is_refused_even_without_the_crd_rule() {
        let mut s = collection(MINIMAL);
        s.spec.partitions = 4;
        s.spec.shards = 4;
        assert_eq!(check(&s, &[]), Ok(()));
        s.spec.shards = 5;
        let err = check(&s, &[]).unwrap_err();
        assert_eq!(err.field, "spec.shards");
        assert!(err.message.contains("spec.partitions (4)"), "{err}");
        s.spec.shards = 0;
        assert_eq!(check(&s, &[]).unwrap_err().field, "spec.shards");
    }

    #[test]
    fn stabilization_windows_above_the_hpa_limit_name_the_field() {
        let with = |up: &str, down: &str| {
            collection(&format!(
                "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {{name: docs}}
spec:
  dimension: 384
  replicas: 2
  autoscaling: {{minReplicas: 2, maxReplicas: 4, targetP95LatencyMs: 20,
                scaleUpStabilizationSeconds: {up}, scaleDownStabilizationSeconds: {down}}}
"
            ))
        };
        assert_eq!(check(&with("3600", "3600"), &[]), Ok(()));
        let err = check(&with("3601", "60"), &[]).unwrap_err();
        assert_eq!(err.field, "spec.autoscaling.scaleUpStabilizationSeconds");
        assert!(err.message.contains("3601 is above 3600"), "{err}");
        // Would have overflowed the HPA's int32 when built.
        let err = check(&with("0", "4294967295"), &[]).unwrap_err();
        assert_eq!(err.field, "spec.autoscaling.scaleDownStabilizationSeconds");
    }
}
