//! How many live vectors a shard holds, as its replicas report them (gRPC `Info`). I/O at the
//! edge: `count_vectors` asks; `shard_vectors` decides from the answers.

use std::time::Duration;

use futures::future::join_all;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::InfoRequest;

/// How long a replica may take to answer (name lookup and connecting included); replicas are
/// asked at once, so a reconcile waits at most this long.
pub const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// The shard's count from its replicas' answers: the highest one. A replica that is behind
/// (catching up after a restart) reports fewer points than the shard acknowledged; none
/// reports more. `None` when no replica answered.
pub fn shard_vectors(answers: &[Option<u64>]) -> Option<u64> {
    answers.iter().flatten().copied().max()
}

/// Asks every replica address for its point count, all at once. Each replica has
/// `COUNT_TIMEOUT`, so one that hangs does not discard the answers of the others.
pub async fn count_vectors(addresses: &[String]) -> Option<u64> {
    let ask = |addr: String| async move {
        let endpoint = tonic::transport::Endpoint::from_shared(addr).ok()?;
        let count = async {
            let mut client = PointsClient::connect(endpoint).await.ok()?;
            let info = client.info(InfoRequest::default()).await.ok()?;
            Some(info.into_inner().points)
        };
        tokio::time::timeout(COUNT_TIMEOUT, count)
            .await
            .ok()
            .flatten()
    };
    shard_vectors(&join_all(addresses.iter().cloned().map(ask)).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_count_is_the_highest_answer_and_unknown_without_any() {
        assert_eq!(shard_vectors(&[Some(10), None, Some(12)]), Some(12));
        assert_eq!(shard_vectors(&[Some(0)]), Some(0));
        assert_eq!(shard_vectors(&[None, None]), None);
        assert_eq!(shard_vectors(&[]), None);
    }

    #[tokio::test]
    async fn replicas_that_do_not_answer_leave_the_count_unknown_within_the_timeout() {
        // A port nothing listens on: refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let started = std::time::Instant::now();
        assert_eq!(count_vectors(&[addr]).await, None);
        assert!(started.elapsed() <= COUNT_TIMEOUT + Duration::from_millis(500));
    }
}
