//! gRPC transport: `vecshard.v1.Points` (what clients call), plus `grpc.health.v1` and server
//! reflection (wired in `server.rs`). Thin handlers over the backend: convert (`convert`),
//! call, convert back. Replica-to-replica calls are `PointsInternal` (`internal.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_server::Points;

use super::status::grpc_status;
use super::{check_collection, map_version_of, observe, routed_read, Backend};
use vecshard_core::convert::{
    delete_target_from_pb, ids_from_pb, point_from_pb, scroll_from_pb, search_from_pb, write_to_pb,
};
use vecshard_core::error::{Error, Result};
use vecshard_core::filter::Filter;
use vecshard_core::request::ReadOptions;

pub struct GrpcApi {
    backend: Arc<dyn Backend>,
}

impl GrpcApi {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        GrpcApi { backend }
    }

    fn finish<T>(&self, op: &'static str, result: Result<T>) -> Result<Response<T>, Status> {
        observe(self.backend.metrics(), op, &result);
        result.map(Response::new).map_err(grpc_status)
    }
}

/// The caller's deadline from the `grpc-timeout` header ("100m", "5S": digits and a unit).
pub(crate) fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The time the handler gives itself out of the caller's `grpc-timeout`: a little less, so
/// that it answers DEADLINE_EXCEEDED (naming what was slow) before tonic's own timeout layer
/// cuts the call off as CANCELLED.
pub(crate) fn answer_before(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).min(Duration::from_millis(20)))
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

#[tonic::async_trait]
impl Points for GrpcApi {
    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let started = Instant::now();
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let points = r
                .points
                .into_iter()
                .enumerate()
                .map(|(i, p)| point_from_pb(p, i))
                .collect::<Result<Vec<_>>>()?;
            self.backend
                .upsert(points, r.version, map_version)
                .await
                .map(|o| write_to_pb(o, elapsed_ms(started)))
        }
        .await;
        self.finish("upsert", result)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let started = Instant::now();
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let target = delete_target_from_pb(r.ids, &r.filter_json)?;
            self.backend
                .delete(target, r.version, map_version)
                .await
                .map(|o| write_to_pb(o, elapsed_ms(started)))
        }
        .await;
        self.finish("delete", result)
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let ids = ids_from_pb(r.ids)?;
            let found = routed_read(
                &*self.backend,
                map_version,
                self.backend
                    .get(ids, r.with_vector, r.with_payload.unwrap_or(true)),
            )
            .await?;
            let points = found.into_iter().map(pb::RetrievedPoint::from).collect();
            Ok(pb::GetResponse { points })
        }
        .await;
        self.finish("get", result)
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let started = Instant::now();
        let timeout = grpc_timeout(request.metadata()).map(answer_before);
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let options = ReadOptions {
                allow_partial: r.allow_partial,
                timeout,
            };
            let search = self.backend.search_batch(vec![search_from_pb(r)?], options);
            let mut out = routed_read(&*self.backend, map_version, search).await?;
            Ok(pb::SearchResponse {
                result: out
                    .results
                    .pop()
                    .unwrap_or_default()
                    .into_iter()
                    .map(pb::ScoredPoint::from)
                    .collect(),
                time_ms: elapsed_ms(started),
                unavailable_shards: out.unavailable_shards,
            })
        }
        .await;
        self.finish("search", result)
    }

    async fn search_batch(
        &self,
        request: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let started = Instant::now();
        let timeout = grpc_timeout(request.metadata()).map(answer_before);
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            // As over HTTP: partial results are accepted if the batch or any search asks.
            let options = ReadOptions {
                allow_partial: r.allow_partial || r.searches.iter().any(|s| s.allow_partial),
                timeout,
            };
            let searches = r
                .searches
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    check_collection(&*self.backend, &s.collection)?;
                    search_from_pb(s).map_err(|e| Error::invalid(format!("searches[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let search = self.backend.search_batch(searches, options);
            let out = routed_read(&*self.backend, map_version, search).await?;
            let time_ms = elapsed_ms(started);
            let results = out
                .results
                .into_iter()
                .map(|hits| pb::SearchResponse {
                    result: hits.into_iter().map(pb::ScoredPoint::from).collect(),
                    time_ms,
                    unavailable_shards: out.unavailable_shards.clone(),
                })
                .collect();
            Ok(pb::SearchBatchResponse {
                results,
                time_ms,
                unavailable_shards: out.unavailable_shards,
            })
        }
        .await;
        self.finish("search_batch", result)
    }

    async fn count(
        &self,
        request: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let count = self.backend.count(Filter::parse_text(&r.filter_json)?);
            let count = routed_read(&*self.backend, map_version, count).await?;
            Ok(pb::CountResponse { count })
        }
        .await;
        self.finish("count", result)
    }

    async fn scroll(
        &self,
        request: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let map_version = map_version_of(request.metadata());
        let r = request.into_inner();
        let result = async {
            check_collection(&*self.backend, &r.collection)?;
            let scroll = self.backend.scroll(scroll_from_pb(r)?);
            let page = routed_read(&*self.backend, map_version, scroll).await?;
            Ok(pb::ScrollResponse::from(page))
        }
        .await;
        self.finish("scroll", result)
    }

    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let r = request.into_inner();
        let result = match check_collection(&*self.backend, &r.collection) {
            Ok(()) => self.backend.info().await,
            Err(e) => Err(e),
        };
        self.finish("info", result)
    }

    async fn cluster(
        &self,
        _request: Request<pb::ClusterRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let result = self.backend.cluster().await;
        self.finish("cluster", result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_answer_before_the_transport_cuts_the_call() {
        assert_eq!(
            answer_before(Duration::from_millis(100)),
            Duration::from_millis(90)
        );
        assert_eq!(
            answer_before(Duration::from_secs(5)),
            Duration::from_millis(4980)
        );
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut m = tonic::metadata::MetadataMap::new();
        for (text, expected) in [
            ("250m", Some(Duration::from_millis(250))),
            ("2S", Some(Duration::from_secs(2))),
            ("1M", Some(Duration::from_secs(60))),
            ("1500u", Some(Duration::from_micros(1500))),
            ("7x", None),
            ("m", None),
        ] {
            m.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&m), expected, "{text}");
        }
    }
}
