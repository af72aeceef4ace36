//! A mocked API server for reconcile tests (tower-test, as kube-rs tests its controllers): it
//! answers every request the way the real one would for a namespace holding `objects`, and
//! records what the reconcile asked for, so each test states its scenario as the calls made.

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};

/// One request the reconcile made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path without the query, e.g. `/apis/apps/v1/namespaces/ns/statefulsets/docs-0`.
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Call {
    /// `PATCH statefulsets/docs-0` style, for readable assertions.
    pub fn short(&self) -> String {
        let mut parts: Vec<&str> = self.path.rsplit('/').take(3).collect();
        parts.reverse();
        let tail = match parts.as_slice() {
            [kind, name, "status"] => format!("{kind}/{name}/status"),
            [_, kind, name] => format!("{kind}/{name}"),
            _ => self.path.clone(),
        };
        format!("{} {tail}", self.method)
    }
}

/// Starts the fake; returns a client for it and a handle that yields the calls once every
/// clone of the client has been dropped.
pub fn start(
    mut objects: BTreeMap<String, Value>,
) -> (kube::Client, tokio::task::JoinHandle<Vec<Call>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let task = tokio::spawn(async move {
        let mut calls = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Option<Value> = serde_json::from_slice(&bytes).ok();
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body,
            };
            let (status, reply) = answer(&mut objects, &call);
            calls.push(call);
            respond.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        calls
    });
    (client, task)
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "code": 404, "message": format!("{path} not found")}),
    )
}

fn answer(objects: &mut BTreeMap<String, Value>, call: &Call) -> (StatusCode, Value) {
    match call.method {
        Method::GET => match objects.get(&call.path) {
            Some(object) => (StatusCode::OK, object.clone()),
            None => {
                // A list: every stored object under this collection path.
                let prefix = format!("{}/", call.path);
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .collect();
                if is_collection(&call.path) {
                    (
                        StatusCode::OK,
                        json!({"kind": "List", "apiVersion": "v1",
                               "metadata": {"resourceVersion": "1"}, "items": items}),
                    )
                } else {
                    not_found(&call.path)
                }
            }
        },
        // Server-side apply: the stored object with the applied fields, as the server returns
        // it (a status apply changes only the status).
        Method::PATCH => {
            let applied = call.body.clone().unwrap_or(json!({}));
            let (object_path, status_only) = match call.path.strip_suffix("/status") {
                Some(p) => (p.to_string(), true),
                None => (call.path.clone(), false),
            };
            let mut object = objects
                .get(&object_path)
                .cloned()
                .unwrap_or_else(|| applied.clone());
            if status_only {
                object["status"] = applied["status"].clone();
            } else {
                for (k, v) in applied.as_object().into_iter().flatten() {
                    if k != "metadata" {
                        object[k] = v.clone();
                    }
                }
            }
            let name = object_path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            object["metadata"]["name"] = json!(name);
            if object["metadata"]["uid"].is_null() {
                object["metadata"]["uid"] = json!(format!("uid-{name}"));
            }
            object["metadata"]["resourceVersion"] = json!("2");
            objects.insert(object_path, object.clone());
            (StatusCode::OK, object)
        }
        Method::POST => (StatusCode::CREATED, call.body.clone().unwrap_or(json!({}))),
        Method::DELETE => not_found(&call.path),
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

/// Whether a path names a collection (`…/namespaces/ns/shardsets`) rather than an object.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.iter().position(|s| *s == "namespaces") {
        Some(i) => segments.len() == i + 3,
        None => false,
    }
}

/// A ShardSet `name` of collection `docs` in namespace `search` (2 replicas, 384-d, f16), as
/// the VectorCollection controller would build it; tests add a status where they need one.
pub fn shard_set(name: &str) -> Value {
    json!({
        "apiVersion": "vecshard.io/v1alpha1",
        "kind": "ShardSet",
        "metadata": {"name": name, "namespace": "search", "uid": "ss-uid", "generation": 1},
        "spec": {
            "collection": "docs", "shard": 0, "replicas": 2,
            "partitions": [{"start": 0, "end": 255}], "partitionCount": 256,
            "dimension": 384, "metric": "cosine", "quantization": "f16",
            "index": {"type": "hnsw", "m": 16, "efConstruction": 128, "efSearch": 64},
            "device": "cpu", "image": "vecshard/vecshard-server:0.1.0",
            "storage": {"size": "1Gi"},
        },
    })
}
