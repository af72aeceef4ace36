//! docs/api.md's Qdrant compatibility table stays true: every row is sent to a real shard
//! server, over REST and over gRPC. A `works` or `differs` row must be served (no "no such
//! endpoint", no UNIMPLEMENTED, no "not supported"); a `not supported` row must answer 400 /
//! UNIMPLEMENTED with an error naming the feature.

use serde_json::Value;

use crate::support::TestServer;

struct Row {
    method: reqwest::Method,
    path: String,
    /// `qdrant.Service/Method`, where the row names one.
    grpc: Option<String>,
    state: String,
}

/// The table's rows that name a REST endpoint:
/// `| operation | `METHOD /path` | `qdrant.Service/Method` | state | notes |`.
fn rows(doc: &str) -> Vec<Row> {
    let section = doc
        .split("## Qdrant compatibility")
        .nth(1)
        .expect("docs/api.md has a Qdrant compatibility section");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let rest = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            let (method, path) = rest.split_once(' ')?;
            Some(Row {
                method: method.parse().ok()?,
                path: path
                    .replace("{c}", "docs")
                    .replace("{id}", "1")
                    .replace("{field}", "pos")
                    .replace("{name}", "x"),
                grpc: cells
                    .get(3)?
                    .strip_prefix('`')
                    .and_then(|g| g.strip_suffix('`'))
                    .map(str::to_string),
                state: cells.get(4)?.to_string(),
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_qdrant_compatibility_table_matches_what_is_served() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let rows = rows(&doc);
    assert!(rows.len() >= 40, "only {} REST rows parsed", rows.len());
    assert!(
        rows.iter().filter(|r| r.grpc.is_some()).count() >= 40,
        "only some rows name a gRPC method"
    );
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for row in rows {
        if let Some(method) = &row.grpc {
            check_grpc(channel.clone(), method, &row.state).await;
        }
        let resp = client
            .request(row.method.clone(), format!("{}{}", s.http, row.path))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        let what = format!(
            "{} {} ({}): {status} {text}",
            row.method, row.path, row.state
        );
        match row.state.as_str() {
            "works" | "differs" => {
                // A 404 may say the point is missing; never that the endpoint is.
                assert!(
                    status != 405 && !error.contains("no such endpoint"),
                    "{what}"
                );
                assert!(!error.contains("not supported"), "{what}");
            }
            "not supported" => {
                assert_eq!(status, 400, "{what}");
                assert!(error.contains("is not supported"), "{what}");
            }
            other => panic!("unknown state {other:?} in {what}"),
        }
    }
}

/// Calls `method` with an empty message (the answer's fields are not read): served methods may
/// refuse the empty request, but never as UNIMPLEMENTED or "not supported".
async fn check_grpc(channel: tonic::transport::Channel, method: &str, state: &str) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery = format!("/{method}").parse().unwrap();
    let answer = grpc
        .unary(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await;
    let what = format!("gRPC {method} ({state}): {answer:?}");
    match (state, answer) {
        ("works" | "differs", Ok(_)) => {}
        ("works" | "differs", Err(status)) => {
            assert_ne!(status.code(), tonic::Code::Unimplemented, "{what}");
            assert!(!status.message().contains("not supported"), "{what}");
        }
        ("not supported", Err(status)) => {
            assert_eq!(status.code(), tonic::Code::Unimplemented, "{what}");
            assert!(status.message().contains("is not supported"), "{what}");
        }
        _ => panic!("{what}"),
    }
}
