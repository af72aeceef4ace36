//! Where the router's shard map comes from: a JSON file (standalone, `vecshard-server dev`),
//! re-read every second, or a Kubernetes ConfigMap written by the operator, watched through
//! the API server so that a new map reaches every router within moments. Either way a map is
//! validated before use and only a higher version replaces the current one (the caller's job).
//! I/O: the file system or the Kubernetes API.

use std::path::PathBuf;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use vecshard_proto::shard_map::{ShardMap, CONFIGMAP_KEY};

use vecshard_core::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapSource {
    File(PathBuf),
    /// The ConfigMap `name` in `namespace`, key `shard-map.json`.
    ConfigMap {
        namespace: String,
        name: String,
    },
}

impl MapSource {
    /// `NAMESPACE/NAME` of a ConfigMap.
    pub fn config_map(text: &str) -> std::result::Result<MapSource, String> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(MapSource::ConfigMap {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!(
                "--shard-map-configmap is {text:?}; it must be NAMESPACE/NAME"
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            MapSource::File(p) => format!("file {}", p.display()),
            MapSource::ConfigMap { namespace, name } => format!("ConfigMap {namespace}/{name}"),
        }
    }

    /// The current map.
    pub async fn read(&self) -> Result<ShardMap> {
        match self {
            MapSource::File(path) => read_file(path),
            MapSource::ConfigMap { namespace, name } => {
                let api = config_maps(namespace).await?;
                let cm = api.get(name).await.map_err(|e| {
                    Error::unavailable(format!("cannot read ConfigMap {namespace}/{name}: {e}"))
                })?;
                map_from_config_map(&cm)
            }
        }
    }

    /// Maps as they change (a file is re-read every second; a ConfigMap is watched). Errors
    /// are reported in the stream and the stream goes on.
    pub async fn changes(&self) -> Result<BoxStream<'static, Result<ShardMap>>> {
        match self.clone() {
            MapSource::File(path) => {
                let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
                    Duration::from_secs(1),
                ));
                Ok(ticks.map(move |_| read_file(&path)).boxed())
            }
            MapSource::ConfigMap { namespace, name } => {
                let api = config_maps(&namespace).await?;
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                Ok(watcher(api, config)
                    .default_backoff()
                    .applied_objects()
                    .map(move |event| match event {
                        Ok(cm) => map_from_config_map(&cm),
                        Err(e) => Err(Error::unavailable(format!(
                            "watching ConfigMap {namespace}/{name}: {e}"
                        ))),
                    })
                    .boxed())
            }
        }
    }
}

async fn config_maps(namespace: &str) -> Result<Api<ConfigMap>> {
    let client = Client::try_default().await.map_err(|e| {
        Error::unavailable(format!(
            "no Kubernetes API access (in-cluster service account or KUBECONFIG): {e}"
        ))
    })?;
    Ok(Api::namespaced(client, namespace))
}

fn read_file(path: &std::path::Path) -> Result<ShardMap> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid(format!("cannot read shard map {}: {e}", path.display())))?;
    parse_map(&text, &format!("shard map {}", path.display()))
}

fn parse_map(text: &str, what: &str) -> Result<ShardMap> {
    let map: ShardMap = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("{what} is not valid: {e}")))?;
    map.validate()
        .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    Ok(map)
}

/// The shard map stored in a ConfigMap under `shard-map.json`.
pub fn map_from_config_map(cm: &ConfigMap) -> Result<ShardMap> {
    let name = format!(
        "ConfigMap {}/{}",
        cm.metadata.namespace.as_deref().unwrap_or(""),
        cm.metadata.name.as_deref().unwrap_or("")
    );
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_KEY))
        .ok_or_else(|| Error::invalid(format!("{name} has no key {CONFIGMAP_KEY:?}")))?;
    parse_map(text, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_map(data: Option<(&str, String)>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some("search".into());
        cm.metadata.name = Some("docs-shard-map".into());
        cm.data = data.map(|(k, v)| [(k.to_string(), v)].into_iter().collect());
        cm
    }

    #[test]
    fn a_config_map_holds_the_map_under_its_key() {
        let map = ShardMap::even(
            "docs",
            16,
            vec![vec!["http://a:6334".into()], vec!["http://b:6334".into()]],
        );
        let cm = config_map(Some((CONFIGMAP_KEY, serde_json::to_string(&map).unwrap())));
        assert_eq!(map_from_config_map(&cm).unwrap(), map);
    }

    #[test]
    fn a_config_map_without_the_key_or_with_a_bad_map_is_refused_by_name() {
        let err = map_from_config_map(&config_map(None))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("search/docs-shard-map") && err.contains(CONFIGMAP_KEY),
            "{err}"
        );
        let bad = config_map(Some((CONFIGMAP_KEY, r#"{"version":1}"#.into())));
        let err = map_from_config_map(&bad).unwrap_err().to_string();
        assert!(err.contains("is not valid"), "{err}");
    }

    #[test]
    fn configmap_references_need_a_namespace_and_a_name() {
        assert_eq!(
            MapSource::config_map("search/docs-shard-map").unwrap(),
            MapSource::ConfigMap {
                namespace: "search".into(),
                name: "docs-shard-map".into()
            }
        );
        for bad in ["docs", "/docs", "search/", "a/b/c"] {
            assert!(MapSource::config_map(bad).is_err(), "{bad}");
        }
    }
}
