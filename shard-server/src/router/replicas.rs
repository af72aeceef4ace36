//! Replicas of a shard as the router sees them: a gRPC client each, a moving average of
//! latency, and a short out-of-rotation period after a failure. Reads go to the fastest
//! replica that is in rotation and fail over to the others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tonic::transport::{Channel, Endpoint};
use vecshard_proto::v1::points_client::PointsClient;

use crate::error::{Error, Result};

/// How long a failed replica is skipped before it is tried (probed) again.
const OUT_OF_ROTATION: Duration = Duration::from_secs(2);

pub struct Replica {
    pub addr: String,
    pub client: PointsClient<Channel>,
    /// Exponential moving average of call latency, in microseconds.
    latency_us: AtomicU64,
    /// Unix milliseconds until which the replica is out of rotation.
    down_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replica {
    /// Creates a lazily connecting client: a replica that is down now can come back later.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Replica> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| Error::invalid(format!("shard map: bad replica address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout)
            .tcp_nodelay(true);
        let client = PointsClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok(Replica {
            addr: addr.to_string(),
            client,
            latency_us: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
        })
    }

    pub fn in_rotation(&self) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now_ms()
    }

    /// Records the outcome of a call: latency on success; out of rotation on an error that
    /// says the replica (not the request) is the problem.
    pub fn observe<T>(&self, result: &std::result::Result<T, tonic::Status>, elapsed: Duration) {
        match result {
            Ok(_) => {
                let sample = elapsed.as_micros() as u64;
                let old = self.latency_us.load(Ordering::Relaxed);
                let new = if old == 0 {
                    sample
                } else {
                    (old * 7 + sample) / 8
                };
                self.latency_us.store(new, Ordering::Relaxed);
            }
            Err(status) if replica_fault(status) => {
                self.down_until_ms.store(
                    now_ms() + OUT_OF_ROTATION.as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
            Err(_) => {}
        }
    }

    fn latency(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }
}

/// Errors that mean "try another replica" rather than "the request is wrong".
pub fn replica_fault(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

pub struct ShardRoute {
    pub name: String,
    pub replicas: Vec<std::sync::Arc<Replica>>,
}

impl ShardRoute {
    /// Replicas in the order reads should try them: in rotation first, then by latency.
    fn read_order(&self) -> Vec<&Replica> {
        let mut order: Vec<&Replica> = self.replicas.iter().map(|r| &**r).collect();
        order.sort_by_key(|r| (!r.in_rotation(), r.latency()));
        order
    }

    /// Runs an idempotent read on the best replica, failing over to the others on replica
    /// faults. The error of the last attempt is returned when all fail.
    pub async fn call<T, F, Fut>(&self, f: F) -> std::result::Result<T, tonic::Status>
    where
        F: Fn(PointsClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = tonic::Status::unavailable(format!("shard {} has no replicas", self.name));
        for replica in self.read_order() {
            let started = Instant::now();
            let result = f(replica.client.clone()).await;
            replica.observe(&result, started.elapsed());
            match result {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if replica_fault(&status) => {
                    last = tonic::Status::new(
                        status.code(),
                        format!("{}: {}", replica.addr, status.message()),
                    )
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    /// `call` with a request value (cloned per attempt) and the error mapped to the router's:
    /// the form every read of the router uses.
    pub async fn read<Req, T, F, Fut>(&self, request: Req, f: F) -> Result<T>
    where
        Req: Clone,
        F: Fn(PointsClient<Channel>, Req) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|c| f(c, request.clone()))
            .await
            .map_err(|s| status_to_error(&self.name, s))
    }
}

/// A shard's gRPC status as the router's error, naming the shard where it is the cause.
fn status_to_error(shard: &str, status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::InvalidArgument => Error::invalid(status.message()),
        tonic::Code::NotFound => Error::not_found(status.message()),
        tonic::Code::ResourceExhausted => {
            Error::exhausted(format!("shard {shard}: {}", status.message()))
        }
        _ => Error::unavailable(format!(
            "shard {shard} is unavailable: {}",
            status.message()
        )),
    }
}
