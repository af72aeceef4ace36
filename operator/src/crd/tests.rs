use serde_json::Value;

use super::*;

fn schema(crd: &CustomResourceDefinition) -> Value {
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema"),
    )
    .unwrap()
}

/// Paths of schema nodes that break the apiserver's structural-schema rules: every node has a
/// type (or is int-or-string / preserves unknown fields), and no anyOf/oneOf/allOf/$ref.
fn non_structural(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    let exempt = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !exempt {
        if !obj.contains_key("type") {
            out.push(format!("{path}: no type"));
        }
        for k in ["anyOf", "oneOf", "allOf", "$ref", "not"] {
            if obj.contains_key(k) {
                out.push(format!("{path}: {k}"));
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            non_structural(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        non_structural(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        non_structural(extra, &format!("{path}{{}}"), out);
    }
}

#[test]
fn every_crd_schema_is_structural() {
    for crd in crds() {
        let mut problems = Vec::new();
        non_structural(&schema(&crd), &crd.spec.names.kind, &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn the_checked_in_crds_match_the_rust_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in CRD_DIRS {
        for crd in crds() {
            let path = root.join(dir).join(crd_file_name(&crd));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == crd_yaml(&crd),
                "{} is out of date: run `cargo run -p vecshard-operator --bin crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn cel_rules_guard_what_the_schema_cannot() {
    let text = serde_json::to_string(&schema(&VectorCollection::crd())).unwrap();
    for rule in [
        "self.shards <= self.partitions",
        "self.minReplicas <= self.maxReplicas",
        "!self.enabled || (has(self.schedule) && has(self.s3))",
        "has(self.from) != has(self.s3)",
    ] {
        assert!(text.contains(rule), "missing rule {rule}");
    }
    for field in ["dimension", "metric", "partitions"] {
        assert!(
            text.contains(&format!("spec.{field} is immutable")),
            "{field} is not immutable"
        );
    }
}

#[test]
fn a_minimal_collection_gets_the_documented_defaults() {
    let vc: VectorCollection = serde_yaml::from_str(
        "apiVersion: vecshard.io/v1alpha1\nkind: VectorCollection\nmetadata:\n  name: docs\nspec:\n  dimension: 384\n",
    )
    .unwrap();
    let s = &vc.spec;
    assert_eq!(
        (s.dimension, s.partitions, s.shards, s.replicas),
        (384, 256, 1, 2)
    );
    assert_eq!(s.metric, Metric::Cosine);
    assert_eq!(s.quantization, Quantization::F16);
    assert_eq!(s.write_consistency, WriteConsistency::Quorum);
    assert_eq!(
        (s.index.m, s.index.ef_construction, s.index.ef_search),
        (16, 128, 64)
    );
    assert_eq!(s.storage.size, "10Gi");
    assert_eq!(s.router.replicas, 2);
}

#[test]
fn shard_sets_scale_through_the_scale_subresource_and_list_under_vc_short_name() {
    let shard_set = ShardSet::crd();
    let scale = shard_set.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    let vc = VectorCollection::crd();
    assert_eq!(vc.spec.names.short_names, Some(vec!["vc".to_string()]));
    assert_eq!(vc.spec.names.categories, Some(vec!["vecshard".to_string()]));
    let columns: Vec<String> = vc.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        columns,
        [
            "Dimension",
            "Shards",
            "Replicas",
            "Ready",
            "Vectors",
            "Phase",
            "Rebalance",
            "Age"
        ]
    );
}

/// Paths of our own schema properties without a description (`kubectl explain` would show
/// nothing). Types borrowed from Kubernetes (conditions, resources) carry upstream docs.
fn undocumented(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if matches!(
                name.as_str(),
                "conditions" | "resources" | "metadata" | "apiVersion" | "kind"
            ) {
                if child.get("description").is_none() && name == "conditions" {
                    out.push(child_path);
                }
                continue;
            }
            if child.get("description").is_none() {
                out.push(child_path.clone());
            }
            undocumented(child, &child_path, out);
        }
    }
    if let Some(items) = obj.get("items") {
        undocumented(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    for crd in crds() {
        let mut missing = Vec::new();
        undocumented(&schema(&crd), &crd.spec.names.kind, &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a doc comment: {missing:#?}"
        );
    }
}

#[test]
fn every_sample_manifest_parses_and_can_be_built() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let vc: VectorCollection =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        crate::controller::vector_collection::validate::validate(&vc, &[])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 3, "expected the CPU, GPU and autoscaled samples");
}
