use serde_json::{json, Value};
use vecshard_proto::v1 as pb;

use crate::support::*;

async fn http_json(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn put(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    http_json(
        reqwest::Method::PUT,
        format!("{}{path}", s.http),
        Some(body),
    )
    .await
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    http_json(
        reqwest::Method::POST,
        format!("{}{path}", s.http),
        Some(body),
    )
    .await
}

async fn count(s: &TestServer) -> u64 {
    let (status, v) = post(s, "/collections/docs/points/count", json!({})).await;
    assert_eq!(status, 200, "{v}");
    v["result"]["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_grpc_serve_the_same_points_with_filters() {
    let s = TestServer::start().await;
    let points: Vec<Value> = (0..300).map(json_point).collect();
    let (status, v) = put(&s, "/collections/docs/points", json!({"points": points})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["affected"], 300);

    // HTTP search, filtered, with payload.
    let (status, v) = post(
        &s,
        "/collections/docs/points/search",
        json!({"vector": vector(42), "limit": 5, "with_payload": true,
               "filter": {"must": [{"key": "pos", "match": {"value": "noun"}}]}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let hits = v["result"].as_array().unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0]["id"], 42, "a point is its own nearest neighbour");
    assert!(hits.iter().all(|h| h["payload"]["pos"] == "noun"));
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );

    // gRPC search returns the same ranking.
    let mut client = s.grpc_client().await;
    let resp = client
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: vector(42),
            limit: 5,
            filter_json: r#"{"must":[{"key":"pos","match":{"value":"noun"}}]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let grpc_ids: Vec<u64> = resp.result.iter().map(|h| num_id(&h.id)).collect();
    let http_ids: Vec<u64> = hits.iter().map(|h| h["id"].as_u64().unwrap()).collect();
    assert_eq!(grpc_ids, http_ids);

    // Batch search (spread over the read threads, answered in the order asked), get, count,
    // delete, info.
    let mut searches: Vec<_> = (1..=7)
        .map(|i| json!({"vector": vector(i), "limit": 1}))
        .collect();
    searches[1]["exact"] = json!(true);
    let (status, v) = post(
        &s,
        "/collections/docs/points/search/batch",
        json!({ "searches": searches }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for i in 1..=7u64 {
        assert_eq!(v["result"][i as usize - 1][0]["id"], i, "{v}");
    }

    let (status, v) = post(
        &s,
        "/collections/docs/points",
        json!({"ids": [7, 999], "with_vector": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["result"].as_array().unwrap().len(),
        1,
        "unknown ids are left out"
    );
    assert_eq!(v["result"][0]["payload"]["text"], "point 7");
    assert_eq!(v["result"][0]["vector"].as_array().unwrap().len(), DIM);

    let (status, v) = post(
        &s,
        "/collections/docs/points/delete",
        json!({"filter": {"must": [{"key": "year", "range": {"gte": 2008}}]}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["affected"], 60);
    let (status, _) = post(
        &s,
        "/collections/docs/points/delete",
        json!({"ids": [0, "chunk-1"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(count(&s).await, 239);

    let (status, v) = http_json(
        reqwest::Method::GET,
        format!("{}/collections/docs", s.http),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["dimension"], DIM);
    assert_eq!(v["result"]["points"], 239);
    let info = client
        .info(pb::InfoRequest {
            collection: "docs".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.points, 239);
    assert_eq!(info.metric, "cosine");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = TestServer::start_with(|o| o.max_batch_bytes = 1024 * 1024).await;
    let (status, _) = put(
        &s,
        "/collections/docs/points",
        json!({"points": [json_point(1), json_point(2)]}),
    )
    .await;
    assert_eq!(status, 200);

    let mut short = json_point(3);
    short["vector"] = json!(vec![0.1; DIM - 1]);
    let too_long_id = json!({"id": "x".repeat(257), "vector": vector(4)});
    let big_payload =
        json!({"id": 5, "vector": vector(5), "payload": {"text": "y".repeat(70 * 1024)}});
    let huge_value = json!({"id": 6, "vector": [1e39, 0, 0, 0, 0, 0, 0, 0]});
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/collections/docs/points",
            json!({"points": [json_point(9), short]}),
            400,
            "vector has 7 dimensions, collection \"docs\" expects 8",
        ),
        (
            "/collections/docs/points",
            json!({"points": []}),
            400,
            "empty",
        ),
        (
            "/collections/docs/points",
            json!({"points": [too_long_id]}),
            400,
            "257 bytes, the limit is 256",
        ),
        (
            "/collections/docs/points",
            json!({"points": [big_payload]}),
            400,
            "the limit is 65536",
        ),
        (
            "/collections/docs/points",
            json!({"points": [huge_value]}),
            400,
            "non-finite",
        ),
        (
            "/collections/other/points",
            json!({"points": [json_point(10)]}),
            404,
            "collection \"other\" not found",
        ),
        (
            "/collections/docs/points/search",
            json!({"vector": vector(1), "limit": 0}),
            400,
            "limit is 0",
        ),
        (
            "/collections/docs/points/search",
            json!({"vector": vector(1), "limit": 10001}),
            400,
            "between 1 and 10000",
        ),
        (
            "/collections/docs/points/search",
            json!({"vector": vector(1), "filter": {"must": [{"key": "color", "match": {"value": "red"}}]}}),
            400,
            "\"color\" is not indexed",
        ),
        (
            "/collections/docs/points/search",
            json!({"vector": vector(1), "filter": {"must": [{"key": "pos", "range": {"gt": 1}}]}}),
            400,
            "keyword field",
        ),
        (
            "/collections/docs/points/search",
            json!({"vector": vector(1), "lmit": 3}),
            400,
            "unknown field \"lmit\"; this endpoint accepts vector, filter",
        ),
        (
            "/collections/docs/points/delete",
            json!({}),
            400,
            "exactly one of",
        ),
    ];
    for (path, body, want_status, want_message) in cases {
        let method = if path.ends_with("/points") {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let (status, v) = http_json(method, format!("{}{path}", s.http), Some(body)).await;
        assert_eq!(status, want_status, "{path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(want_message),
            "{path}: {message:?} should mention {want_message:?}"
        );
        assert!(v["error"]["code"].is_string(), "{v}");
    }

    // Malformed JSON and an oversized body.
    let client = reqwest::Client::new();
    let resp = client
        .put(format!("{}/collections/docs/points", s.http))
        .body("{\"points\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
    let resp = client
        .put(format!("{}/collections/docs/points", s.http))
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);

    // Too many points in one batch (limit 10,000).
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"id": i, "vector": [1.0, 0, 0, 0, 0, 0, 0, 0]}))
        .collect();
    let (status, v) = put(&s, "/collections/docs/points", json!({"points": many})).await;
    assert!(status == 400 || status == 413, "{status} {v}");

    // gRPC carries the same messages; NaN can only be sent over gRPC.
    let mut grpc = s.grpc_client().await;
    let mut nan = pb_point(11);
    nan.vector[2] = f32::NAN;
    let err = grpc
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            points: vec![nan],
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("non-finite value (NaN) at position 2"),
        "{}",
        err.message()
    );
    let err = grpc
        .search(pb::SearchRequest {
            collection: "docs".into(),
            vector: vec![0.5; DIM + 1],
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "query vector has 9 dimensions, collection \"docs\" expects 8"
    );
    let err = grpc
        .info(pb::InfoRequest {
            collection: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    assert_eq!(
        count(&s).await,
        2,
        "nothing was stored by the rejected requests"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_resource_exhausted_instead_of_queueing() {
    let s = TestServer::start_with(|o| {
        o.search_threads = 1;
        o.max_queued_requests = 2;
    })
    .await;
    let points: Vec<Value> = (0..5000).map(json_point).collect();
    put(&s, "/collections/docs/points", json!({"points": points})).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = format!("{}/collections/docs/points/search", s.http);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"vector": vector(i), "limit": 10, "exact": true});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_reflection_and_metrics_are_served() {
    let s = TestServer::start().await;
    put(
        &s,
        "/collections/docs/points",
        json!({"points": [json_point(1)]}),
    )
    .await;
    post(
        &s,
        "/collections/docs/points/search",
        json!({"vector": vector(1)}),
    )
    .await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/healthz", s.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for _ in 0..100 {
        if client
            .get(format!("{}/readyz", s.http))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        client
            .get(format!("{}/readyz", s.http))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client
        .get(format!("{}/metrics", s.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "vecshard_search_duration_seconds_bucket",
        "vecshard_upsert_duration_seconds_count",
        "vecshard_requests_total{op=\"search\",code=\"OK\"} 1",
        "vecshard_points{collection=\"docs\",shard=\"0\"} 1",
        "vecshard_index_memory_bytes",
        "vecshard_wal_sequence 1",
        "vecshard_gpu_available 0",
        "vecshard_dead_slots 0",
        "vecshard_graph_saved_timestamp_seconds",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    let channel = tonic::transport::Channel::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "vecshard.v1.Points".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    s.stop().await;
}
