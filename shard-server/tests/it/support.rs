use std::sync::Arc;

use serde_json::{json, Value};
use vecshard_core::metrics::Metrics;
use vecshard_core::model::{
    CollectionConfig, FieldKind, HnswParams, IndexedField, Metric, Quantization,
};
use vecshard_engine::shard::{Shard, ShardOptions};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_server::server::{self, RunningServer};

pub const DIM: usize = 8;

pub fn config() -> CollectionConfig {
    CollectionConfig {
        name: "docs".into(),
        dimension: DIM,
        metric: Metric::Cosine,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 64,
            ef_search: 32,
        },
        quantization: Quantization::F16,
        indexed_fields: vec![
            IndexedField {
                name: "pos".into(),
                kind: FieldKind::Keyword,
            },
            IndexedField {
                name: "year".into(),
                kind: FieldKind::Integer,
            },
        ],
    }
}

/// Deterministic pseudo-random unit-ish vector for point `i`.
pub fn vector(i: u64) -> Vec<f32> {
    (0..DIM as u64)
        .map(|d| (mix(i * 1000 + d) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn mix(x: u64) -> u64 {
    // splitmix64: good enough spread without another dependency.
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct TestServer {
    pub running: Option<RunningServer>,
    pub http: String,
    pub grpc: String,
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start_with(tune: impl FnOnce(&mut ShardOptions)) -> TestServer {
        Self::start_collection(config(), tune).await
    }

    pub async fn start_collection(
        config: CollectionConfig,
        tune: impl FnOnce(&mut ShardOptions),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ShardOptions::new(dir.path());
        tune(&mut options);
        let shard = Shard::open(config, options, Arc::new(Metrics::new())).unwrap();
        let any = "127.0.0.1:0".parse().unwrap();
        let running = server::start(Arc::new(shard), any, any).await.unwrap();
        TestServer {
            http: format!("http://{}", running.http_addr),
            grpc: format!("http://{}", running.grpc_addr),
            running: Some(running),
            _dir: dir,
        }
    }

    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn grpc_client(&self) -> PointsClient<tonic::transport::Channel> {
        PointsClient::connect(self.grpc.clone()).await.unwrap()
    }

    pub async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await;
    }
}

pub fn json_point(i: u64) -> Value {
    let pos = ["noun", "verb", "adj"][(i % 3) as usize];
    json!({"id": i, "vector": vector(i), "payload": {"pos": pos, "year": 2000 + (i % 10), "text": format!("point {i}")}})
}

pub fn pb_point(i: u64) -> pb::Point {
    pb::Point {
        id: Some(pb::PointId {
            kind: Some(pb::point_id::Kind::Num(i)),
        }),
        vector: vector(i),
        payload_json: json!({"pos": "noun", "year": 2000 + (i % 10)}).to_string(),
    }
}

pub fn num_id(id: &Option<pb::PointId>) -> u64 {
    match id.as_ref().and_then(|i| i.kind.clone()) {
        Some(pb::point_id::Kind::Num(n)) => n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}
