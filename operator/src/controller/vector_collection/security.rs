//! A collection's security objects: its CA and component certificate (issued and renewed by
//! the operator unless the user names a Secret), the checks of the Secrets the pods mount, the
//! NetworkPolicies around its pods, and the client identity the operator uses to call its
//! shards. Pure apart from key generation: every decision takes the Secrets `observe` read and
//! the time.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use vecshard_security::pki::Authority;
use vecshard_security::ClientSecurity;

use super::validated::ValidatedCollection;
use crate::controller::apply::Desired;
use crate::controller::pod::typed;
use crate::crd::{RouterFrom, TlsSpec};
use crate::error::Result;
use crate::names::{self, GRPC_PORT, HTTP_PORT};

/// The annotation on the operator's certificate Secret that says when it expires.
pub const NOT_AFTER: &str = "vecshard.io/not-after";
/// A collection CA lives this long (renewing a CA means new trust for every client: not
/// automated; docs/operations.md "Security").
const CA_DAYS: i64 = 3650;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The Secrets that `observe` read for the collection's security.
#[derive(Clone, Debug, Default)]
pub struct ObservedSecrets {
    /// `<name>-ca` (operator-issued TLS only).
    pub ca: Option<Secret>,
    /// The Secret the pods mount for TLS: `<name>-tls`, or the user's `tls.secretName`.
    pub tls: Option<Secret>,
    /// `auth.apiKeySecret`.
    pub api_keys: Option<Secret>,
}

fn data<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| b.0.as_slice())
        .filter(|b| !b.is_empty())
}

/// Why the Secrets the user named cannot be mounted (the collection is then Degraded and
/// nothing is changed), naming the field and what is missing.
pub fn check_user_secrets(
    vc: &ValidatedCollection,
    secrets: &ObservedSecrets,
) -> std::result::Result<(), String> {
    if let Some(name) = vc
        .pod_security
        .as_ref()
        .and_then(|p| p.api_key_secret.as_ref())
    {
        let secret = secrets
            .api_keys
            .as_ref()
            .ok_or_else(|| format!("spec.auth.apiKeySecret: Secret {name} not found"))?;
        let keys = data(secret, vecshard_security::keys::READ_WRITE_FILE).ok_or_else(|| {
            format!("spec.auth.apiKeySecret: Secret {name} has no key read-write")
        })?;
        vecshard_security::KeySet::from_files(
            keys,
            data(secret, vecshard_security::keys::READ_ONLY_FILE).unwrap_or_default(),
            "read-write",
            "read-only",
        )
        .map_err(|e| format!("spec.auth.apiKeySecret: Secret {name}: {e}"))?;
    }
    if let Some(name) = vc.tls.as_ref().and_then(|t| t.secret_name.as_ref()) {
        let secret = secrets
            .tls
            .as_ref()
            .ok_or_else(|| format!("spec.tls.secretName: Secret {name} not found"))?;
        for key in ["tls.crt", "tls.key", "ca.crt"] {
            if data(secret, key).is_none() {
                return Err(format!(
                    "spec.tls.secretName: Secret {name} has no key {key}"
                ));
            }
        }
    }
    Ok(())
}

/// What the operator writes for its own certificates this reconcile.
#[derive(Default)]
pub struct CertificatePlan {
    pub ca: Option<Secret>,
    pub tls: Option<Secret>,
    /// The Event to publish: reason and note.
    pub event: Option<(&'static str, String)>,
}

/// Why the component certificate must be (re)issued now, if it must.
pub fn reissue_reason(
    tls: &TlsSpec,
    ca_pem: &[u8],
    current: Option<&Secret>,
    now: Timestamp,
) -> Option<&'static str> {
    let Some(current) = current else {
        return Some("CertificateIssued");
    };
    if data(current, "ca.crt") != Some(ca_pem) || data(current, "tls.key").is_none() {
        return Some("CertificateIssued");
    }
    let not_after = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOT_AFTER))
        .and_then(|t| t.parse::<Timestamp>().ok());
    let renew_at =
        not_after.map(|t| t - SignedDuration::from_hours(24 * i64::from(tls.renew_before_days)));
    match renew_at {
        Some(at) if now < at => None,
        _ => Some("CertificateRenewed"),
    }
}

/// The DNS names of the component certificate: the router Service's (what applications
/// connect to), and localhost for port-forwards. Components check each other by the CA only.
pub fn certificate_names(vc: &ValidatedCollection) -> Vec<String> {
    let router = names::router_name(&vc.name);
    let ns = &vc.namespace;
    vec![
        router.clone(),
        format!("{router}.{ns}"),
        format!("{router}.{ns}.svc"),
        format!("{router}.{ns}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// Issues what is missing or due: a CA when there is none, the component certificate when it
/// is missing, from another CA, or within `renewBeforeDays` of expiring.
pub fn plan_certificates(
    vc: &ValidatedCollection,
    secrets: &ObservedSecrets,
    now: Timestamp,
) -> Result<CertificatePlan, String> {
    let Some(tls) = vc.tls.as_ref().filter(|t| t.secret_name.is_none()) else {
        return Ok(CertificatePlan::default());
    };
    let mut plan = CertificatePlan::default();
    let existing_ca = secrets.ca.as_ref().and_then(|s| {
        let cert = std::str::from_utf8(data(s, "ca.crt")?).ok()?;
        let key = std::str::from_utf8(data(s, "ca.key")?).ok()?;
        Authority::load(cert, key).ok()
    });
    let ca = match existing_ca {
        Some(ca) => ca,
        None => {
            let ca = Authority::new(
                &format!("vecshard {}/{} CA", vc.namespace, vc.name),
                DAY * CA_DAYS as u32,
            )?;
            plan.ca = Some(secret(
                vc,
                names::ca_secret_name(&vc.name),
                "Opaque",
                BTreeMap::from([("ca.crt", ca.cert_pem.clone()), ("ca.key", ca.key_pem())]),
                BTreeMap::new(),
            )?);
            ca
        }
    };
    let Some(reason) = reissue_reason(tls, ca.cert_pem.as_bytes(), secrets.tls.as_ref(), now)
    else {
        return Ok(plan);
    };
    let valid = DAY * tls.certificate_days;
    let issued = ca.issue(
        &format!("{}.{}", vc.name, vc.namespace),
        &certificate_names(vc),
        valid,
    )?;
    // `issue` backdates by five minutes for clock skew.
    let not_after = now + SignedDuration::from_secs(valid.as_secs() as i64 - 300);
    plan.tls = Some(secret(
        vc,
        names::tls_secret_name(&vc.name),
        "kubernetes.io/tls",
        BTreeMap::from([
            ("tls.crt", issued.cert_pem),
            ("tls.key", issued.key_pem),
            ("ca.crt", ca.cert_pem.clone()),
        ]),
        BTreeMap::from([(NOT_AFTER.to_string(), not_after.to_string())]),
    )?);
    plan.event = Some((
        reason,
        format!(
            "certificate {} issued, valid until {not_after}",
            names::tls_secret_name(&vc.name)
        ),
    ));
    Ok(plan)
}

fn secret(
    vc: &ValidatedCollection,
    name: String,
    type_: &str,
    contents: BTreeMap<&str, String>,
    annotations: BTreeMap<String, String>,
) -> std::result::Result<Secret, String> {
    let mut meta = vc
        .child_meta(
            name,
            names::labels(
                BTreeMap::from([(names::LABEL_INSTANCE.to_string(), vc.name.clone())]),
                &vc.name,
            ),
        )
        .map_err(|e| e.to_string())?;
    if !annotations.is_empty() {
        meta.annotations = Some(annotations);
    }
    Ok(Secret {
        metadata: meta,
        type_: Some(type_.into()),
        data: Some(
            contents
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
}

fn pods(collection: &str, component: &str) -> Value {
    json!({"matchLabels": {
        names::LABEL_NAME: "vecshard",
        names::LABEL_INSTANCE: collection,
        names::LABEL_COMPONENT: component,
    }})
}

fn namespace(name: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})
}

fn ports(list: &[i32]) -> Value {
    Value::Array(
        list.iter()
            .map(|p| json!({"protocol": "TCP", "port": p}))
            .collect(),
    )
}

/// The NetworkPolicies of the collection: shard pods reachable from its routers, its shard
/// pods (peers), the operator's namespace, and for metrics from the metrics namespaces;
/// routers from the collection's namespace (or anywhere) and the metrics namespaces. Egress
/// is left open (S3, DNS, the API server).
pub fn build_network_policies(
    vc: &ValidatedCollection,
) -> Result<(Desired<NetworkPolicy>, Desired<NetworkPolicy>)> {
    let shards_name = format!("{}-shards", vc.name);
    let router_name = format!("{}-router", vc.name);
    let spec = &vc.network_policy;
    if !spec.enabled {
        return Ok((
            Desired::Absent { name: shards_name },
            Desired::Absent { name: router_name },
        ));
    }
    let both = ports(&[GRPC_PORT, HTTP_PORT]);
    let metrics: Vec<Value> = spec
        .metrics_namespaces
        .iter()
        .map(|ns| namespace(ns))
        .collect();
    let mut shard_rules = vec![json!({
        "from": [
            {"podSelector": pods(&vc.name, "router")},
            {"podSelector": pods(&vc.name, "shard")},
            namespace(&spec.operator_namespace),
        ],
        "ports": both,
    })];
    let mut router_rules = vec![match spec.router_from {
        RouterFrom::Namespace => json!({"from": [{"podSelector": {}}], "ports": both}),
        RouterFrom::Anywhere => json!({"ports": both}),
    }];
    if !metrics.is_empty() {
        let rule = json!({"from": metrics, "ports": ports(&[HTTP_PORT])});
        shard_rules.push(rule.clone());
        router_rules.push(rule);
    }
    let policy = |name: String, selector: Value, rules: Vec<Value>| -> Result<NetworkPolicy> {
        let mut np: NetworkPolicy = typed(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": rules},
        }));
        np.metadata = vc.child_meta(
            name,
            names::labels(
                BTreeMap::from([(names::LABEL_INSTANCE.to_string(), vc.name.clone())]),
                &vc.name,
            ),
        )?;
        Ok(np)
    };
    Ok((
        Desired::Present(policy(shards_name, pods(&vc.name, "shard"), shard_rules)?),
        Desired::Present(policy(router_name, pods(&vc.name, "router"), router_rules)?),
    ))
}

/// How the operator calls the collection's shards: with the collection's certificate (its
/// TLS Secret) and its first read-write key, as the collection's own components do.
pub fn operator_client(secrets: &ObservedSecrets) -> std::result::Result<ClientSecurity, String> {
    let tls = match &secrets.tls {
        Some(secret) => {
            let pem = |key| {
                data(secret, key)
                    .map(<[u8]>::to_vec)
                    .ok_or(format!("TLS Secret has no {key}"))
            };
            Some(vecshard_security::ClientTls::internal_from_pem(
                pem("ca.crt")?,
                Some((pem("tls.crt")?, pem("tls.key")?)),
            )?)
        }
        None => None,
    };
    let key = secrets.api_keys.as_ref().and_then(|s| {
        let text = data(s, vecshard_security::keys::READ_WRITE_FILE)?;
        let keys = vecshard_security::keys::parse_key_file(text, "read-write").ok()?;
        keys.into_iter().next()
    });
    ClientSecurity::none()
        .with_tls(tls)
        .with_api_key(key.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::shard_set::build::build_statefulset;
    use crate::controller::vector_collection::build::{build_router_deployment, build_shard_set};
    use crate::controller::vector_collection::validate::validate;
    use crate::crd::VectorCollection;

    fn collection(extra: &str) -> ValidatedCollection {
        let vc: VectorCollection = serde_yaml::from_str(&format!(
            "
apiVersion: vecshard.io/v1alpha1
kind: VectorCollection
metadata: {{name: docs, namespace: search, uid: 77aa-uid, generation: 2}}
spec:
  dimension: 384
  shards: 2
  replicas: 2
{extra}"
        ))
        .unwrap();
        validate(&vc, &[]).unwrap()
    }

    fn shard_set(vc: &ValidatedCollection) -> crate::crd::ShardSet {
        let mut ss = build_shard_set(vc, 0, 2).unwrap();
        ss.metadata.uid = Some("ss-uid".into());
        ss
    }

    fn keys_secret(read_write: &str, read_only: Option<&str>) -> Secret {
        let mut data = BTreeMap::from([("read-write".to_string(), ByteString(read_write.into()))]);
        if let Some(ro) = read_only {
            data.insert("read-only".into(), ByteString(ro.into()));
        }
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    fn day(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    #[test]
    fn the_operator_issues_a_ca_and_a_certificate_and_renews_only_when_due() {
        let vc = collection("  tls: {certificateDays: 90, renewBeforeDays: 30}\n");
        let now = Timestamp::now();
        let first = plan_certificates(&vc, &ObservedSecrets::default(), now).unwrap();
        let (ca, tls) = (first.ca.unwrap(), first.tls.unwrap());
        assert_eq!(ca.metadata.name.as_deref(), Some("docs-ca"));
        assert_eq!(tls.metadata.name.as_deref(), Some("docs-tls"));
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(first.event.as_ref().unwrap().0, "CertificateIssued");
        // Owned by the collection: deleted with it.
        assert_eq!(
            tls.metadata.owner_references.as_ref().unwrap()[0].uid,
            "77aa-uid"
        );
        assert_eq!(data(&tls, "ca.crt"), data(&ca, "ca.crt"));

        let observed = ObservedSecrets {
            ca: Some(ca.clone()),
            tls: Some(tls.clone()),
            api_keys: None,
        };
        // Fresh: nothing to write.
        let again = plan_certificates(&vc, &observed, now + day(1)).unwrap();
        assert!(again.ca.is_none() && again.tls.is_none() && again.event.is_none());
        // 61 days on (29 left): renewed by the same CA.
        let due = plan_certificates(&vc, &observed, now + day(61)).unwrap();
        assert!(due.ca.is_none());
        let renewed = due.tls.unwrap();
        assert_eq!(due.event.unwrap().0, "CertificateRenewed");
        assert_eq!(data(&renewed, "ca.crt"), data(&ca, "ca.crt"));
        assert_ne!(data(&renewed, "tls.crt"), data(&tls, "tls.crt"));
        // The renewed certificate chains to the CA, for the components' client.
        let client = operator_client(&ObservedSecrets {
            tls: Some(renewed),
            ..ObservedSecrets::default()
        });
        assert!(client.unwrap().tls().is_some());

        // A user's Secret: the operator issues nothing.
        let own = collection("  tls: {secretName: docs-cert-manager}\n");
        let plan = plan_certificates(&own, &ObservedSecrets::default(), now).unwrap();
        assert!(plan.ca.is_none() && plan.tls.is_none());
    }

    #[test]
    fn secrets_the_pods_would_mount_are_checked_by_field() {
        let vc = collection("  auth: {apiKeySecret: docs-keys}\n  tls: {secretName: docs-own}\n");
        let mut secrets = ObservedSecrets::default();
        let err = check_user_secrets(&vc, &secrets).unwrap_err();
        assert_eq!(err, "spec.auth.apiKeySecret: Secret docs-keys not found");
        secrets.api_keys = Some(Secret::default());
        let err = check_user_secrets(&vc, &secrets).unwrap_err();
        assert!(err.contains("has no key read-write"), "{err}");
        secrets.api_keys = Some(keys_secret("same\n", Some("same\n")));
        let err = check_user_secrets(&vc, &secrets).unwrap_err();
        assert!(err.contains("read-write and as read-only"), "{err}");
        secrets.api_keys = Some(keys_secret("# rotated\nrw-1\nrw-2\n", Some("ro-1\n")));
        let err = check_user_secrets(&vc, &secrets).unwrap_err();
        assert_eq!(err, "spec.tls.secretName: Secret docs-own not found");
        secrets.tls = Some(Secret {
            data: Some(BTreeMap::from([(
                "tls.crt".to_string(),
                ByteString(b"x".to_vec()),
            )])),
            ..Secret::default()
        });
        let err = check_user_secrets(&vc, &secrets).unwrap_err();
        assert!(err.contains("has no key tls.key"), "{err}");
        let invalid = super::super::validate::Invalid::named(err);
        assert_eq!(invalid.field, "spec.tls.secretName");
        // The operator's own client sends the first read-write key.
        let client = operator_client(&ObservedSecrets {
            api_keys: Some(keys_secret("# rotated\nrw-1\nrw-2\n", None)),
            ..ObservedSecrets::default()
        })
        .unwrap();
        assert_eq!(client.key_header().unwrap(), "rw-1");
    }

    #[test]
    fn pods_mount_their_secrets_and_shards_serve_components_only() {
        let vc = collection("  tls: {}\n  auth: {apiKeySecret: docs-keys, metricsNeedKey: true}\n");
        let sts = serde_json::to_value(build_statefulset(&shard_set(&vc)).unwrap()).unwrap();
        let router = serde_json::to_value(build_router_deployment(&vc).unwrap()).unwrap();
        for (pod, components_only) in [(&sts, true), (&router, false)] {
            let spec = &pod["spec"]["template"]["spec"];
            let container = &spec["containers"][0];
            let env: BTreeMap<String, String> = container["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
                .collect();
            assert_eq!(env["VECSHARD_TLS_CERT"], "/etc/vecshard/tls/tls.crt");
            assert_eq!(env["VECSHARD_TLS_CA"], "/etc/vecshard/tls/ca.crt");
            assert_eq!(env["VECSHARD_API_KEYS_DIR"], "/etc/vecshard/api-keys");
            assert_eq!(env["VECSHARD_METRICS_NEED_KEY"], "true");
            assert_eq!(
                env.contains_key("VECSHARD_COMPONENTS_ONLY"),
                components_only
            );
            let volumes = spec["volumes"].to_string();
            assert!(volumes.contains("\"secretName\":\"docs-tls\""), "{volumes}");
            assert!(
                volumes.contains("\"secretName\":\"docs-keys\""),
                "{volumes}"
            );
            assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(
                pod["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scheme"],
                "https"
            );
        }
        // Without tls and auth nothing of it is there.
        let plain = collection("");
        let sts = serde_json::to_value(build_statefulset(&shard_set(&plain)).unwrap()).unwrap();
        assert!(!sts.to_string().contains("VECSHARD_TLS"));
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
            "HTTP"
        );
    }

    #[test]
    fn network_policies_admit_the_collections_components_the_operator_and_scrapers() {
        let vc = collection("");
        let (Desired::Present(shards), Desired::Present(router)) =
            build_network_policies(&vc).unwrap()
        else {
            panic!("on by default");
        };
        let shards = serde_json::to_value(&shards).unwrap();
        assert_eq!(shards["metadata"]["name"], "docs-shards");
        assert_eq!(
            shards["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "shard"
        );
        let from = shards["spec"]["ingress"][0]["from"].to_string();
        assert!(
            from.contains("\"app.kubernetes.io/component\":\"router\""),
            "{from}"
        );
        assert!(
            from.contains("\"app.kubernetes.io/component\":\"shard\""),
            "{from}"
        );
        assert!(
            from.contains("\"kubernetes.io/metadata.name\":\"vecshard-system\""),
            "{from}"
        );
        let metrics = &shards["spec"]["ingress"][1];
        assert_eq!(metrics["ports"][0]["port"], 6333);
        assert!(metrics["from"].to_string().contains("monitoring"));
        let router = serde_json::to_value(&router).unwrap();
        assert_eq!(
            router["spec"]["ingress"][0]["from"][0]["podSelector"],
            json!({})
        );

        let anywhere =
            collection("  networkPolicy: {routerFrom: Anywhere, metricsNamespaces: []}\n");
        let (_, Desired::Present(router)) = build_network_policies(&anywhere).unwrap() else {
            panic!()
        };
        let router = serde_json::to_value(&router).unwrap();
        assert!(router["spec"]["ingress"][0].get("from").is_none());
        assert_eq!(router["spec"]["ingress"].as_array().unwrap().len(), 1);
        let off = collection("  networkPolicy: {enabled: false}\n");
        assert!(matches!(
            build_network_policies(&off).unwrap(),
            (Desired::Absent { .. }, Desired::Absent { .. })
        ));
    }
}
