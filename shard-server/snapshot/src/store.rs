//! Where snapshots are kept: an S3-compatible bucket (`s3://bucket/prefix`) or a local
//! directory (`file:///dir` or a plain path), opened as one `ObjectStore` with the prefix as the
//! root of every path this crate writes.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use vecshard_core::error::{Error, Result};
use vecshard_proto::v1 as pb;

/// Where a snapshot repository is, and how to reach it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    /// `s3://bucket[/prefix]`, `file:///dir` or a path.
    pub url: String,
    /// S3 endpoint of a non-AWS store (`http://host:port`); empty: AWS.
    pub endpoint: String,
    pub region: String,
    /// Empty: taken from the environment (`AWS_ACCESS_KEY_ID`, ...), as the AWS SDKs do.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Accept an `http://` endpoint.
    pub allow_http: bool,
    /// PEM bundle of CAs to trust for the endpoint, besides the system's.
    pub ca_pem: String,
}

// Credentials never reach logs.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &redacted(&self.access_key_id))
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

/// A repository location, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Local { dir: std::path::PathBuf },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!(
                    "snapshot location {url:?} names no bucket: expected s3://bucket[/prefix]"
                )));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() || url.contains("://") && !url.starts_with("file://") {
            return Err(Error::invalid(format!(
                "snapshot location {url:?}: expected s3://bucket[/prefix], file:///dir or a path"
            )));
        }
        Ok(Location::Local {
            dir: std::path::PathBuf::from(path),
        })
    }
}

/// An opened repository: the store and the prefix every snapshot path starts with.
#[derive(Clone, Debug)]
pub struct Repository {
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    /// The location as given, for messages.
    pub url: String,
}

impl Repository {
    pub fn open(config: &StoreConfig) -> Result<Repository> {
        let failed = |e: object_store::Error| {
            Error::invalid(format!("snapshot location {}: {e}", config.url))
        };
        let (store, root): (Arc<dyn ObjectStore>, Path) = match Location::parse(&config.url)? {
            Location::S3 { bucket, prefix } => {
                let plain_http = config.endpoint.starts_with("http://");
                let mut options = ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_connect_timeout(Duration::from_secs(10))
                    .with_timeout(Duration::from_secs(120))
                    // A plain-HTTP endpoint needs no trust store: do not require the system's
                    // CA certificates (minimal images have none, and the client then fails
                    // to build).
                    .with_no_system_certificates(plain_http);
                if !config.ca_pem.is_empty() {
                    for cert in object_store::Certificate::from_pem_bundle(config.ca_pem.as_bytes())
                        .map_err(failed)?
                    {
                        options = options.with_root_certificate(cert);
                    }
                }
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_client_options(options)
                    // A store that is down fails the snapshot within about a minute, not
                    // after the default's retries over several minutes.
                    .with_retry(RetryConfig {
                        max_retries: 3,
                        retry_timeout: Duration::from_secs(60),
                        ..RetryConfig::default()
                    });
                if !config.endpoint.is_empty() {
                    builder = builder.with_endpoint(&config.endpoint);
                }
                builder = builder.with_region(if config.region.is_empty() {
                    "us-east-1"
                } else {
                    &config.region
                });
                if !config.access_key_id.is_empty() {
                    builder = builder
                        .with_access_key_id(&config.access_key_id)
                        .with_secret_access_key(&config.secret_access_key);
                    if !config.session_token.is_empty() {
                        builder = builder.with_token(&config.session_token);
                    }
                }
                let store = builder.build().map_err(|e| {
                    let text = e.to_string();
                    if text.contains("builder error") {
                        Error::invalid(format!(
                            "snapshot location {}: cannot build the HTTPS client ({text}): no \
                             system CA certificates were found; install them (ca-certificates) \
                             or give the endpoint's CA",
                            config.url
                        ))
                    } else {
                        failed(e)
                    }
                })?;
                (Arc::new(store), Path::from(prefix))
            }
            Location::Local { dir } => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::invalid(format!(
                        "snapshot location {}: cannot create {}: {e}",
                        config.url,
                        dir.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(failed)?;
                (Arc::new(fs), Path::default())
            }
        };
        Ok(Repository {
            store,
            root,
            url: config.url.clone(),
        })
    }

    /// `root/parts...`
    pub fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(*part))
    }
}

impl From<&pb::ObjectStoreConfig> for StoreConfig {
    fn from(c: &pb::ObjectStoreConfig) -> Self {
        StoreConfig {
            url: c.url.clone(),
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            allow_http: c.allow_http,
            ca_pem: c.ca_pem.clone(),
        }
    }
}

impl From<&StoreConfig> for pb::ObjectStoreConfig {
    fn from(c: &StoreConfig) -> Self {
        pb::ObjectStoreConfig {
            url: c.url.clone(),
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            allow_http: c.allow_http,
            ca_pem: c.ca_pem.clone(),
        }
    }
}

/// The object store's error as the caller sees it: which object, what the store said (on one
/// line, and cut short: it travels in a gRPC status header).
pub fn store_error(what: &str, path: &Path, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => {
            Error::not_found(format!("{what}: object {path} does not exist"))
        }
        e => Error::unavailable(format!(
            "{what}: object {path}: {}",
            one_line(&e.to_string())
        )),
    }
}

/// `text` on one line, at most 600 characters.
pub fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(600) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_by_scheme_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            Location::parse("s3://backups/vecshard/prod").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: "vecshard/prod".into()
            }
        );
        assert_eq!(
            Location::parse("s3://backups").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            Location::parse("file:///var/backups").unwrap(),
            Location::Local {
                dir: "/var/backups".into()
            }
        );
        assert_eq!(
            Location::parse("./snaps").unwrap(),
            Location::Local {
                dir: "./snaps".into()
            }
        );
        for bad in ["s3://", "s3:///prefix", "gs://bucket", ""] {
            let err = Location::parse(bad).unwrap_err().to_string();
            assert!(err.contains("s3://bucket"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_never_appear_in_debug_output() {
        let c = StoreConfig {
            url: "s3://b".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            ..StoreConfig::default()
        };
        let text = format!("{c:?}");
        assert!(
            !text.contains("AKIAEXAMPLE") && !text.contains("very-secret"),
            "{text}"
        );
    }
}
