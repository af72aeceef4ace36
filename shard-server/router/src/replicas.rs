//! Replicas of a shard as the router sees them: a gRPC client each, a moving average of
//! latency, and a short out-of-rotation period after a failure. Reads go to the fastest
//! replica that is in rotation, are hedged to a second one after the shard's recent p95, and
//! fail over to the others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::points_internal_client::PointsInternalClient;
use vecshard_security::ClientSecurity;

use crate::h2_channel::H2Channel;
use vecshard_core::error::{Error, Result};
use vecshard_core::model::unix_millis;

/// The router's gRPC client of one replica.
pub type ReplicaClient = PointsClient<H2Channel>;

/// How long a failed replica is skipped before it is tried (probed) again.
const OUT_OF_ROTATION: Duration = Duration::from_secs(2);

pub struct Replica {
    pub addr: String,
    pub client: ReplicaClient,
    /// The replica's internal service (partition fingerprints for the cluster view), over the
    /// same connection.
    pub internal: PointsInternalClient<H2Channel>,
    /// Exponential moving average of call latency, in microseconds.
    latency_us: AtomicU64,
    /// Unix milliseconds until which the replica is out of rotation.
    down_until_ms: AtomicU64,
}

impl Replica {
    /// Creates a lazily connecting client: a replica that is down now can come back later.
    pub fn connect(addr: &str, timeout: Duration, security: &ClientSecurity) -> Result<Replica> {
        let channel = H2Channel::new(addr, Duration::from_secs(1), timeout, security.clone())
            .map_err(|e| Error::invalid(format!("shard map: bad replica address {addr:?}: {e}")))?;
        let internal = PointsInternalClient::new(channel.clone());
        let client = PointsClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok(Replica {
            addr: addr.to_string(),
            client,
            internal,
            latency_us: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
        })
    }

    pub fn in_rotation(&self) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= unix_millis()
    }

    /// Records the outcome of a call: latency on success; out of rotation on an error that
    /// says the replica (not the request) is the problem.
    pub fn observe<T>(&self, result: &std::result::Result<T, tonic::Status>, elapsed: Duration) {
        match result {
            Ok(_) => self.record_latency(elapsed),
            Err(status) if replica_fault(status) => {
                self.down_until_ms.store(
                    unix_millis() + OUT_OF_ROTATION.as_millis() as u64,
                    Ordering::Relaxed,
                );
            }
            Err(_) => {}
        }
    }

    /// Adds a latency sample to the moving average. A call that lost a hedge race is recorded
    /// with the time it had taken when it was cancelled, so that a replica that hangs (and so
    /// never fails) drifts to the back of the read order.
    pub fn record_latency(&self, elapsed: Duration) {
        let sample = elapsed.as_micros() as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    fn latency(&self) -> u64 {
        self.latency_us.load(Ordering::Relaxed)
    }
}

/// Errors after which a read goes to another replica: replica faults, and refusals for
/// overload (`RESOURCE_EXHAUSTED`: the replica's read queue is full, or its HTTP/2 server
/// sent GOAWAY `ENHANCE_YOUR_CALM`), since another replica may have room. Only a fault takes
/// the replica out of rotation; the refusal reaches the caller only when every replica
/// refused.
/// `FAILED_PRECONDITION` too: a replica that missed an ownership change (it was down) refuses
/// the map version the others serve.
fn worth_another_replica(status: &tonic::Status) -> bool {
    replica_fault(status)
        || matches!(
            status.code(),
            tonic::Code::ResourceExhausted | tonic::Code::FailedPrecondition
        )
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

/// Recent latencies of a shard's successful reads. Their p95 is how long a read waits before
/// it is hedged to a second replica: only the slowest ~5 % of reads pay for a second call.
pub struct LatencyWindow {
    inner: Mutex<(Vec<u32>, usize)>,
    /// Cached p95 in microseconds; 0 until enough samples arrived.
    p95_us: AtomicU64,
}

impl LatencyWindow {
    const SIZE: usize = 256;
    /// Samples needed before the p95 is trusted.
    const MIN_SAMPLES: usize = 32;

    pub fn new() -> Self {
        LatencyWindow {
            inner: Mutex::new((Vec::with_capacity(Self::SIZE), 0)),
            p95_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        let mut guard = self.inner.lock();
        let (samples, next) = &mut *guard;
        if samples.len() < Self::SIZE {
            samples.push(us);
        } else {
            samples[*next] = us;
        }
        *next = (*next + 1) % Self::SIZE;
        // Recomputing on every 16th sample keeps the sort off most reads.
        if samples.len() >= Self::MIN_SAMPLES && *next % 16 == 0 {
            self.p95_us
                .store(u64::from(p95(samples)), Ordering::Relaxed);
        }
    }

    /// The p95 of recent reads, once known.
    pub fn p95(&self) -> Option<Duration> {
        match self.p95_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// The 95th percentile of the samples (nearest rank).
pub fn p95(samples: &[u32]) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * 95).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// When reads are hedged to a second replica.
#[derive(Clone, Copy, Debug)]
pub struct HedgePolicy {
    pub enabled: bool,
    /// Lower bound of the delay, so that a very fast shard is not hedged on noise.
    pub min_delay: Duration,
    /// Delay used until the shard's p95 is known.
    pub initial_delay: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        HedgePolicy {
            enabled: true,
            min_delay: Duration::from_millis(1),
            initial_delay: Duration::from_millis(50),
        }
    }
}

impl HedgePolicy {
    pub fn delay(&self, window: &LatencyWindow) -> Option<Duration> {
        self.enabled.then(|| {
            window
                .p95()
                .unwrap_or(self.initial_delay)
                .max(self.min_delay)
        })
    }
}

pub struct ShardRoute {
    pub name: String,
    /// Serving replicas: they answer reads, and their acknowledgements make a write.
    pub replicas: Vec<std::sync::Arc<Replica>>,
    /// Replicas catching up (the shard map's `joining`): writes go to them too, reads do not,
    /// and their acknowledgements are not counted.
    pub joining: Vec<std::sync::Arc<Replica>>,
    pub latencies: LatencyWindow,
    pub hedge: HedgePolicy,
    /// `vecshard_router_hedged_reads`.
    pub hedged_reads: Counter,
    /// Version of the shard map this route belongs to, sent with every request
    /// (`vecshard-map-version`) so that a shard can refuse a request routed with an older map.
    pub map_version: u64,
}

/// `request` carrying `map_version` in its metadata.
pub fn with_map_version<T>(request: T, map_version: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        vecshard_proto::MAP_VERSION_HEADER,
        tonic::metadata::MetadataValue::from(map_version),
    );
    r
}

impl ShardRoute {
    /// Replicas in the order reads should try them: in rotation first, then by latency.
    fn read_order(&self) -> Vec<&Replica> {
        let mut order: Vec<&Replica> = self.replicas.iter().map(|r| &**r).collect();
        order.sort_by_key(|r| (!r.in_rotation(), r.latency()));
        order
    }

    /// Runs an idempotent read on the best replica. If it has not answered after the hedge
    /// delay, the read also goes to the next replica and the first answer wins (the other
    /// call is cancelled). A replica fault or refusal fails over to the next replica; an error
    /// that is about the request is returned at once, as is the end of the caller's deadline.
    pub async fn call<T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        f: F,
    ) -> std::result::Result<T, tonic::Status>
    where
        F: Fn(ReplicaClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let order = self.read_order();
        let mut last = tonic::Status::unavailable(format!("shard {} has no replicas", self.name));
        // When each call still in flight started, by position in `order`.
        let mut started: Vec<Option<Instant>> = vec![None; order.len()];
        let mut launch = |i: usize| {
            let call = f(order[i].client.clone());
            let at = Instant::now();
            started[i] = Some(at);
            async move { (i, call.await, at.elapsed()) }
        };
        let mut finished = vec![false; order.len()];
        let mut in_flight = FuturesUnordered::new();
        let mut next = 0;
        if !order.is_empty() {
            in_flight.push(launch(0));
            next = 1;
        }
        let mut hedged = false;
        while !in_flight.is_empty() {
            let hedge_after = (!hedged && next < order.len())
                .then(|| self.hedge.delay(&self.latencies))
                .flatten();
            let hedge_timer = async {
                match hedge_after {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((i, result, elapsed)) = in_flight.next() => {
                    let replica = order[i];
                    finished[i] = true;
                    // A call cut short by the caller's own deadline says nothing about the
                    // replica: it stays in rotation.
                    let expired = deadline.is_some_and(|d| Instant::now() >= d);
                    if !expired {
                        replica.observe(&result, elapsed);
                    }
                    match result {
                        Ok(resp) => {
                            self.latencies.record(elapsed);
                            drop(in_flight);
                            for (j, at) in started.iter().enumerate() {
                                if let (false, Some(at)) = (finished[j], at) {
                                    order[j].record_latency(at.elapsed());
                                }
                            }
                            return Ok(resp.into_inner());
                        }
                        Err(_) if expired => {
                            return Err(tonic::Status::deadline_exceeded(format!(
                                "shard {}: the request's deadline passed",
                                self.name
                            )))
                        }
                        Err(status) if worth_another_replica(&status) => {
                            let status = tonic::Status::new(
                                status.code(),
                                format!("{}: {}", replica.addr, status.message()),
                            );
                            // A refusal for the shard-map version says more than a replica
                            // that is down: reported (so the router reloads its map) even
                            // when another replica failed after it.
                            if last.code() != tonic::Code::FailedPrecondition
                                || status.code() == tonic::Code::FailedPrecondition
                            {
                                last = status;
                            }
                            if in_flight.is_empty() && next < order.len() {
                                in_flight.push(launch(next));
                                next += 1;
                            }
                        }
                        Err(status) => return Err(status),
                    }
                }
                _ = hedge_timer => {
                    hedged = true;
                    self.hedged_reads.inc();
                    in_flight.push(launch(next));
                    next += 1;
                }
            }
        }
        Err(last)
    }

    /// `call` with a request value (cloned per attempt, carrying what remains of the
    /// deadline) and the error mapped to the router's: the form every read of the router uses.
    pub async fn read<Req, T, F, Fut>(
        &self,
        deadline: Option<Instant>,
        request: Req,
        f: F,
    ) -> Result<T>
    where
        Req: Clone,
        F: Fn(ReplicaClient, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(deadline, |c| {
            let mut r = with_map_version(request.clone(), self.map_version);
            if let Some(d) = deadline {
                r.set_timeout(d.saturating_duration_since(Instant::now()));
            }
            f(c, r)
        })
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
        tonic::Code::DeadlineExceeded => Error::deadline(format!(
            "shard {shard} did not answer in time: {}",
            status.message()
        )),
        tonic::Code::FailedPrecondition => Error::stale_map(status.message()),
        _ => Error::unavailable(format!(
            "shard {shard} is unavailable: {}",
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(p95(&samples), 95);
        assert_eq!(p95(&[7]), 7);
        assert_eq!(p95(&[]), 0);
    }

    #[test]
    fn the_hedge_delay_follows_the_p95_once_known_and_never_drops_below_the_floor() {
        let policy = HedgePolicy {
            enabled: true,
            min_delay: Duration::from_millis(1),
            initial_delay: Duration::from_millis(50),
        };
        let window = LatencyWindow::new();
        assert_eq!(policy.delay(&window), Some(Duration::from_millis(50)));
        for i in 0..256u64 {
            window.record(Duration::from_millis(if i % 25 == 0 { 40 } else { 3 }));
        }
        assert_eq!(policy.delay(&window), Some(Duration::from_millis(3)));
        for _ in 0..256 {
            window.record(Duration::from_micros(10));
        }
        assert_eq!(policy.delay(&window), Some(Duration::from_millis(1)));
        let off = HedgePolicy {
            enabled: false,
            ..policy
        };
        assert_eq!(off.delay(&window), None);
    }
}
