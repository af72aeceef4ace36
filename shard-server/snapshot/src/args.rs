//! Command-line options for reaching a repository, shared by `vecshard-server` (restore) and
//! `vecshardctl` (snapshots). Credentials come from the environment as with the AWS tools
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from flags, so
//! that they stay out of process listings and shell history. `vecshardctl` sends them to the
//! shard replicas that write the snapshot, inside the (internal) request.

use std::path::PathBuf;

use vecshard_core::error::{Error, Result};

use crate::store::StoreConfig;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// S3 endpoint of a non-AWS store, e.g. `http://127.0.0.1:7070`.
    #[arg(long, env = "VECSHARD_S3_ENDPOINT", default_value = "")]
    pub s3_endpoint: String,
    #[arg(long, env = "VECSHARD_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Accept plain http to the S3 endpoint (implied by an `http://` --s3-endpoint).
    #[arg(long, env = "VECSHARD_S3_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_allow_http: bool,
    /// PEM file of CAs to trust for the S3 endpoint, besides the system's.
    #[arg(long, env = "VECSHARD_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
}

impl StoreArgs {
    pub fn store(&self, url: &str) -> Result<StoreConfig> {
        let ca_pem = match &self.s3_ca_file {
            None => String::new(),
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::invalid(format!("--s3-ca-file {}: {e}", path.display())))?,
        };
        // This process's credentials, also when another process does the transfer (a shard
        // server writing its snapshot is sent them with the request).
        let env = |name: &str| std::env::var(name).unwrap_or_default();
        Ok(StoreConfig {
            url: url.to_string(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            allow_http: self.s3_allow_http || self.s3_endpoint.starts_with("http://"),
            ca_pem,
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
        })
    }
}
