//! Qdrant's gRPC services (`qdrant.Points`, `qdrant.Collections`, `qdrant.Qdrant`) on the same
//! port as `vecshard.v1.Points`, for qdrant-client's gRPC mode and the frameworks built on it.
//! Each handler turns the message into the REST body of the same operation (`qdrant_pb`), runs
//! the REST implementation (`http_points`, `http_payload`, `http_collections`) and turns its
//! answer back into Qdrant's reply. Methods of Qdrant's services that vecshard lacks answer
//! UNIMPLEMENTED with the feature's name (`Refusing`), as does `qdrant.Snapshots`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use vecshard_proto::qdrant as q;

use super::grpc::{answer_before, grpc_timeout};
use super::qdrant::{check_create, check_payload_index, QDRANT_API_VERSION};
use super::status::grpc_status;
use super::{check_collection, http_collections, http_payload, http_points, observe};
use super::{qdrant_pb as conv, Backend};
use vecshard_core::error::Result;
use vecshard_core::request::WriteOutcome;

/// Serves the three Qdrant services over one backend.
#[derive(Clone)]
pub struct QdrantGrpc {
    backend: Arc<dyn Backend>,
}

impl QdrantGrpc {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        QdrantGrpc { backend }
    }

    /// Checks the collection, runs `work`, counts the request under `op` (the REST operation's
    /// name, so both APIs count alike).
    async fn run<T>(
        &self,
        op: &'static str,
        collection: &str,
        work: impl Future<Output = Result<T>>,
    ) -> std::result::Result<Response<T>, Status> {
        let result = match check_collection(&*self.backend, collection) {
            Ok(()) => work.await,
            Err(e) => Err(e),
        };
        observe(self.backend.metrics(), op, &result);
        result.map(Response::new).map_err(grpc_status)
    }
}

/// Seconds since `started`, Qdrant's `time`.
fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

/// The sooner of the caller's deadline (`grpc-timeout`) and the request's `timeout` (seconds).
fn deadline(metadata: &tonic::metadata::MetadataMap, timeout_s: Option<u64>) -> Option<Duration> {
    let header = grpc_timeout(metadata).map(answer_before);
    let field = timeout_s.filter(|s| *s > 0).map(Duration::from_secs);
    match (header, field) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The reply to a write: Qdrant's `UpdateResult` of vecshard's outcome.
fn written(outcome: WriteOutcome, wait: bool, started: Instant) -> q::PointsOperationResponse {
    q::PointsOperationResponse {
        result: Some(conv::update_result(outcome, wait)),
        time: seconds(started),
    }
}

#[tonic::async_trait]
impl q::points_server::Points for QdrantGrpc {
    async fn upsert(&self, request: Request<q::UpsertPoints>) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let (c, wait) = (r.collection_name.clone(), r.wait.unwrap_or(false));
        self.run("upsert", &c, async {
            let body = conv::upsert_body(r)?;
            let outcome = http_points::upsert_body(&*self.backend, &body).await?;
            Ok(written(outcome, wait, started))
        })
        .await
    }

    async fn delete(&self, request: Request<q::DeletePoints>) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let (c, wait) = (r.collection_name.clone(), r.wait.unwrap_or(false));
        self.run("delete", &c, async {
            let body = conv::delete_body(r)?;
            let outcome = http_points::delete_body(&*self.backend, &body).await?;
            Ok(written(outcome, wait, started))
        })
        .await
    }

    async fn get(&self, request: Request<q::GetPoints>) -> Reply<q::GetResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("get", &c, async {
            let body = conv::get_body(r)?;
            let points = http_points::retrieve_body(&*self.backend, &body).await?;
            Ok(q::GetResponse {
                result: conv::retrieved_points(points),
                time: seconds(started),
            })
        })
        .await
    }

    async fn set_payload(
        &self,
        request: Request<q::SetPayloadPoints>,
    ) -> Reply<q::PointsOperationResponse> {
        self.payload(
            "set_payload",
            request.into_inner(),
            http_payload::merge_change,
        )
        .await
    }

    async fn overwrite_payload(
        &self,
        request: Request<q::SetPayloadPoints>,
    ) -> Reply<q::PointsOperationResponse> {
        self.payload(
            "overwrite_payload",
            request.into_inner(),
            http_payload::replace_change,
        )
        .await
    }

    async fn delete_payload(
        &self,
        request: Request<q::DeletePayloadPoints>,
    ) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let (c, wait) = (r.collection_name.clone(), r.wait.unwrap_or(false));
        self.run("delete_payload", &c, async {
            let body = conv::delete_payload_body(r)?;
            let outcome =
                http_payload::payload_body(&*self.backend, &body, http_payload::delete_keys_change)
                    .await?;
            Ok(written(outcome, wait, started))
        })
        .await
    }

    async fn clear_payload(
        &self,
        request: Request<q::ClearPayloadPoints>,
    ) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let (c, wait) = (r.collection_name.clone(), r.wait.unwrap_or(false));
        self.run("clear_payload", &c, async {
            let body = conv::clear_payload_body(r)?;
            let outcome =
                http_payload::payload_body(&*self.backend, &body, http_payload::clear_change)
                    .await?;
            Ok(written(outcome, wait, started))
        })
        .await
    }

    async fn create_field_index(
        &self,
        request: Request<q::CreateFieldIndexCollection>,
    ) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        self.run("create_index", &r.collection_name, async {
            check_payload_index(&self.backend.info().await?, &conv::create_index_body(&r))?;
            Ok(q::PointsOperationResponse {
                result: Some(q::UpdateResult {
                    operation_id: Some(0),
                    status: q::UpdateStatus::Completed as i32,
                }),
                time: seconds(started),
            })
        })
        .await
    }

    async fn delete_field_index(
        &self,
        request: Request<q::DeleteFieldIndexCollection>,
    ) -> Reply<q::PointsOperationResponse> {
        let r = request.into_inner();
        self.run("delete_index", &r.collection_name, async {
            Err(http_collections::index_drop_refused(&r.field_name))
        })
        .await
    }

    async fn search(&self, request: Request<q::SearchPoints>) -> Reply<q::SearchResponse> {
        let started = Instant::now();
        let timeout = deadline(request.metadata(), request.get_ref().timeout);
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("search", &c, async {
            let (body, vector) = conv::search_parts(r)?;
            let (hits, _) =
                http_points::search_vector_body(&*self.backend, &body, vector, timeout).await?;
            Ok(q::SearchResponse {
                result: conv::scored_points(hits),
                time: seconds(started),
            })
        })
        .await
    }

    async fn search_batch(
        &self,
        request: Request<q::SearchBatchPoints>,
    ) -> Reply<q::SearchBatchResponse> {
        let started = Instant::now();
        let timeout = deadline(request.metadata(), request.get_ref().timeout);
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("search_batch", &c, async {
            let body = conv::search_batch_body(r)?;
            let (lists, _) = http_points::search_batch_body(&*self.backend, &body, timeout).await?;
            Ok(q::SearchBatchResponse {
                result: conv::batch_results(lists, conv::scored_points),
                time: seconds(started),
            })
        })
        .await
    }

    async fn scroll(&self, request: Request<q::ScrollPoints>) -> Reply<q::ScrollResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("scroll", &c, async {
            let body = conv::scroll_body(r)?;
            let page = http_points::scroll_body(&*self.backend, &body).await?;
            Ok(conv::scroll_answer(page, seconds(started)))
        })
        .await
    }

    async fn count(&self, request: Request<q::CountPoints>) -> Reply<q::CountResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("count", &c, async {
            let body = conv::count_body(r)?;
            let count = http_points::count_body(&*self.backend, &body).await?;
            Ok(q::CountResponse {
                result: Some(q::CountResult { count }),
                time: seconds(started),
            })
        })
        .await
    }

    async fn query(&self, request: Request<q::QueryPoints>) -> Reply<q::QueryResponse> {
        let started = Instant::now();
        let timeout = deadline(request.metadata(), request.get_ref().timeout);
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("query", &c, async {
            let backend = &*self.backend;
            let (answer, _) = match conv::query_parts(r)? {
                (body, Some(vector)) => {
                    http_points::query_vector_body(backend, &body, vector, timeout).await?
                }
                (body, None) => http_points::query_body(backend, &body, timeout).await?,
            };
            Ok(q::QueryResponse {
                result: conv::query_points(answer),
                time: seconds(started),
            })
        })
        .await
    }

    async fn query_batch(
        &self,
        request: Request<q::QueryBatchPoints>,
    ) -> Reply<q::QueryBatchResponse> {
        let started = Instant::now();
        let timeout = deadline(request.metadata(), request.get_ref().timeout);
        let r = request.into_inner();
        let c = r.collection_name.clone();
        self.run("query_batch", &c, async {
            let body = conv::query_batch_body(r)?;
            let (answers, _) =
                http_points::query_batch_body(&*self.backend, &body, timeout).await?;
            Ok(q::QueryBatchResponse {
                result: conv::batch_results(answers, conv::query_points),
                time: seconds(started),
            })
        })
        .await
    }
}

impl QdrantGrpc {
    /// `SetPayload` and `OverwritePayload`: one message, two changes.
    async fn payload(
        &self,
        op: &'static str,
        r: q::SetPayloadPoints,
        change_of: fn(&serde_json::Map<String, Value>) -> Result<http_payload::Change>,
    ) -> Reply<q::PointsOperationResponse> {
        let started = Instant::now();
        let (c, wait) = (r.collection_name.clone(), r.wait.unwrap_or(false));
        self.run(op, &c, async {
            let body = conv::set_payload_body(r)?;
            let outcome = http_payload::payload_body(&*self.backend, &body, change_of).await?;
            Ok(written(outcome, wait, started))
        })
        .await
    }
}

#[tonic::async_trait]
impl q::collections_server::Collections for QdrantGrpc {
    async fn get(
        &self,
        request: Request<q::GetCollectionInfoRequest>,
    ) -> Reply<q::GetCollectionInfoResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        self.run("info", &r.collection_name, async {
            let info = self.backend.info().await?;
            Ok(q::GetCollectionInfoResponse {
                result: Some(conv::collection_info(&info, self.backend.shard_count())),
                time: seconds(started),
            })
        })
        .await
    }

    async fn list(
        &self,
        _: Request<q::ListCollectionsRequest>,
    ) -> Reply<q::ListCollectionsResponse> {
        let started = Instant::now();
        self.run("info", "", async {
            Ok(q::ListCollectionsResponse {
                collections: vec![q::CollectionDescription {
                    name: self.backend.collection().to_string(),
                }],
                time: seconds(started),
            })
        })
        .await
    }

    async fn create(
        &self,
        request: Request<q::CreateCollection>,
    ) -> Reply<q::CollectionOperationResponse> {
        let started = Instant::now();
        let r = request.into_inner();
        self.run("create_collection", "", async {
            http_collections::check_served(&*self.backend, &r.collection_name)?;
            check_create(
                &self.backend.info().await?,
                &conv::create_collection_body(&r),
            )?;
            Ok(q::CollectionOperationResponse {
                result: true,
                time: seconds(started),
            })
        })
        .await
    }

    async fn update(
        &self,
        request: Request<q::UpdateCollection>,
    ) -> Reply<q::CollectionOperationResponse> {
        let name = request.into_inner().collection_name;
        self.run("update_collection", "", async {
            Err(http_collections::update_refused(&name))
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<q::DeleteCollection>,
    ) -> Reply<q::CollectionOperationResponse> {
        let name = request.into_inner().collection_name;
        self.run("delete_collection", "", async {
            Err(http_collections::delete_refused(&name))
        })
        .await
    }

    async fn collection_exists(
        &self,
        request: Request<q::CollectionExistsRequest>,
    ) -> Reply<q::CollectionExistsResponse> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        self.run("info", "", async {
            Ok(q::CollectionExistsResponse {
                result: Some(q::CollectionExists {
                    exists: name == self.backend.collection(),
                }),
                time: seconds(started),
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl q::qdrant_server::Qdrant for QdrantGrpc {
    async fn health_check(&self, _: Request<q::HealthCheckRequest>) -> Reply<q::HealthCheckReply> {
        Ok(Response::new(q::HealthCheckReply {
            title: "vecshard (Qdrant-compatible API)".into(),
            version: QDRANT_API_VERSION.into(),
            commit: None,
        }))
    }
}

/// Methods served by each Qdrant service; the rest of Qdrant's methods are refused by name.
/// `served_methods_match_the_proto` keeps these lists and `qdrant.proto` in step.
pub const POINTS_METHODS: &[&str] = &[
    "Upsert",
    "Delete",
    "Get",
    "SetPayload",
    "OverwritePayload",
    "DeletePayload",
    "ClearPayload",
    "CreateFieldIndex",
    "DeleteFieldIndex",
    "Search",
    "SearchBatch",
    "Scroll",
    "Count",
    "Query",
    "QueryBatch",
];
pub const COLLECTIONS_METHODS: &[&str] = &[
    "Get",
    "List",
    "Create",
    "Update",
    "Delete",
    "CollectionExists",
];
pub const QDRANT_METHODS: &[&str] = &["HealthCheck"];

/// What a Qdrant method vecshard does not serve is for, named in its refusal.
fn feature_of(service: &str, method: &str) -> String {
    let feature = match method {
        m if m.starts_with("Recommend") => "recommendations",
        m if m.starts_with("Discover") => "discovery",
        m if m.ends_with("Groups") => "grouped results",
        "UpdateVectors" | "DeleteVectors" | "CreateVectorName" | "DeleteVectorName" => {
            "vector-only updates and named vectors"
        }
        "UpdateBatch" => "batched update operations",
        "Facet" => "facet counts",
        m if m.starts_with("SearchMatrix") => "the distance matrix API",
        m if m.contains("Alias") => "collection aliases",
        m if m.contains("Cluster") => {
            "Qdrant's cluster API (vecshard: GET /cluster, and the operator for topology)"
        }
        m if m.contains("ShardKey") => "custom sharding (shard keys)",
        _ if service == "qdrant.Snapshots" => {
            "snapshots through the Qdrant API (vecshard: VectorCollection snapshots, \
             docs/operations.md)"
        }
        _ => "this method",
    };
    format!(
        "{service}/{method} ({feature}) is not supported by vecshard; see the Qdrant \
         compatibility table in docs/api.md"
    )
}

fn refusal(path: &str) -> http::Response<tonic::body::Body> {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or("");
    let method = parts.next().unwrap_or("");
    Status::unimplemented(feature_of(service, method)).into_http()
}

/// A generated Qdrant service that answers the methods vecshard lacks with their name, where
/// tonic would answer a bare UNIMPLEMENTED.
#[derive(Clone)]
pub struct Refusing<S> {
    inner: S,
    served: &'static [&'static str],
}

impl<S> Refusing<S> {
    pub fn new(inner: S, served: &'static [&'static str]) -> Self {
        Refusing { inner, served }
    }
}

impl<S: NamedService> NamedService for Refusing<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<tonic::body::Body>> for Refusing<S>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("");
        if self.served.contains(&method) {
            Box::pin(self.inner.call(req))
        } else {
            let response = refusal(req.uri().path());
            Box::pin(async move { Ok(response) })
        }
    }
}

/// `qdrant.Snapshots`: every method refused by name (snapshots are the operator's).
#[derive(Clone, Default)]
pub struct SnapshotsRefused;

impl NamedService for SnapshotsRefused {
    const NAME: &'static str = "qdrant.Snapshots";
}

impl Service<http::Request<tonic::body::Body>> for SnapshotsRefused {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = refusal(req.uri().path());
        Box::pin(async move { Ok(response) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rpc names of `service` in qdrant.proto.
    fn proto_methods(service: &str) -> Vec<String> {
        let proto = include_str!("../../proto/proto/qdrant/qdrant.proto");
        let start = proto
            .find(&format!("service {service} {{"))
            .expect("service in proto");
        let block = &proto[start..start + proto[start..].find("\n}").unwrap()];
        block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn served_methods_match_the_proto() {
        for (service, served) in [
            ("Points", POINTS_METHODS),
            ("Collections", COLLECTIONS_METHODS),
            ("Qdrant", QDRANT_METHODS),
        ] {
            assert_eq!(proto_methods(service), served.to_vec(), "{service}");
        }
    }

    #[test]
    fn refusals_name_the_feature() {
        let message = |path: &str| {
            let response = refusal(path);
            let status = Status::from_header_map(response.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::Unimplemented);
            status.message().to_string()
        };
        assert!(message("/qdrant.Points/Recommend").contains("recommendations"));
        assert!(message("/qdrant.Points/QueryGroups").contains("grouped results"));
        assert!(message("/qdrant.Snapshots/Create").contains("snapshots"));
        assert!(message("/qdrant.Collections/UpdateAliases").contains("aliases"));
    }

    #[test]
    fn the_sooner_deadline_wins() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(deadline(&m, None), None);
        assert_eq!(deadline(&m, Some(2)), Some(Duration::from_secs(2)));
        m.insert("grpc-timeout", "500m".parse().unwrap());
        let header = answer_before(Duration::from_millis(500));
        assert_eq!(deadline(&m, Some(2)), Some(header));
        assert_eq!(deadline(&m, None), Some(header));
    }
}
