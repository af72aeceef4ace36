//! A collection's snapshot bucket as the snapshot code wants it: the `S3Spec` with the
//! credentials (and CA) read from its Secrets. The credentials travel to the shard replica that
//! writes the snapshot inside the request; they are never logged or put in a status.

use k8s_openapi::api::core::v1::Secret;
use vecshard_snapshot::StoreConfig;

use crate::controller::apply::get_opt;
use crate::crd::S3Spec;

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
}

/// Reads the Secrets `s3` names in `namespace`; the error says which Secret or key is missing.
pub async fn store_config(
    client: &kube::Client,
    namespace: &str,
    s3: &S3Spec,
) -> Result<StoreConfig, String> {
    let read = |name: String| async move {
        get_opt::<Secret>(client, namespace, &name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("Secret {namespace}/{name} does not exist"))
    };
    let creds = read(s3.credentials_secret.clone()).await?;
    let key = |k: &str| {
        secret_value(&creds, k).ok_or_else(|| {
            format!(
                "Secret {namespace}/{} has no key {k}",
                s3.credentials_secret
            )
        })
    };
    let (access_key_id, secret_access_key) =
        (key("AWS_ACCESS_KEY_ID")?, key("AWS_SECRET_ACCESS_KEY")?);
    let ca_pem = match &s3.ca_secret {
        None => String::new(),
        Some(name) => secret_value(&read(name.clone()).await?, "ca.crt")
            .ok_or_else(|| format!("Secret {namespace}/{name} has no key ca.crt"))?,
    };
    let endpoint = s3.endpoint.clone().unwrap_or_default();
    Ok(StoreConfig {
        url: s3.url(),
        allow_http: endpoint.starts_with("http://"),
        endpoint,
        region: s3.region.clone(),
        access_key_id,
        secret_access_key,
        session_token: secret_value(&creds, "AWS_SESSION_TOKEN").unwrap_or_default(),
        ca_pem,
    })
}
