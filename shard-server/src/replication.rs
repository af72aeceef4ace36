//! Replica catch-up: a replica that missed writes (it was down, restarted, or new) copies them
//! from its peers' operation logs. Every few seconds it asks each peer for the records with a
//! version above its watermark and applies them with their own versions; last-writer-wins
//! makes this idempotent, and records it already has are skipped before touching the log.
//! I/O: gRPC to the peers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Endpoint;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;

use crate::api::grpc::id_from_pb;
use crate::error::Result;
use crate::model::PointId;
use crate::shard::Shard;
use crate::storage::Record;

/// Versions are HLC (milliseconds << 16). Writes from several routers can reach a replica out
/// of version order by up to their clock skew; the watermark trails the newest version seen by
/// this much so that such writes are not skipped.
const WINDOW: u64 = 30_000 << 16;
const ROUND: Duration = Duration::from_secs(2);
const PAGE: u32 = 2_000;

/// Runs until `stop` turns true.
pub async fn catch_up_loop(shard: Arc<Shard>, peers: Vec<String>, mut stop: watch::Receiver<bool>) {
    let clients: Vec<(String, PointsClient<tonic::transport::Channel>)> = peers
        .iter()
        .filter_map(|addr| {
            let endpoint = Endpoint::from_shared(addr.clone())
                .ok()?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10));
            Some((
                addr.clone(),
                PointsClient::new(endpoint.connect_lazy()).max_decoding_message_size(256 << 20),
            ))
        })
        .collect();
    let mut watermark = shard.max_version().saturating_sub(WINDOW);
    loop {
        let mut newest = 0;
        for (addr, client) in &clients {
            match pull_from(&shard, client.clone(), watermark).await {
                Ok((applied, seen)) => {
                    newest = newest.max(seen);
                    if applied > 0 {
                        tracing::info!(peer = %addr, applied, "caught up from peer");
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "peer not reachable for catch-up")
                }
            }
        }
        watermark = watermark.max(newest.saturating_sub(WINDOW));
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One pass over a peer's log above `watermark`: (records applied, newest version seen).
async fn pull_from(
    shard: &Arc<Shard>,
    mut client: PointsClient<tonic::transport::Channel>,
    watermark: u64,
) -> Result<(u64, u64)> {
    let (mut applied, mut newest, mut skip) = (0, 0, 0u64);
    loop {
        let request = pb::ReadLogRequest {
            collection: shard.config().name.clone(),
            after_version: watermark,
            skip,
            max_records: PAGE,
        };
        let page = client
            .read_log(request)
            .await
            .map_err(|s| crate::error::Error::unavailable(s.message().to_string()))?
            .into_inner();
        if page.truncated && skip == 0 {
            tracing::warn!("peer's operation log no longer reaches the watermark; points older than its log are not copied (full partition copy is not implemented yet)");
        }
        skip += page.records.len() as u64;
        let records = page
            .records
            .into_iter()
            .map(|r| {
                newest = newest.max(r.version);
                let id: PointId = id_from_pb(r.id, "log record id")?;
                let vector = (!r.deleted).then_some(r.vector);
                Ok((
                    id,
                    Record {
                        version: r.version,
                        vector,
                        payload: r.payload_json.into_bytes(),
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        applied += shard.apply_replicated(records).await?;
        if !page.more {
            return Ok((applied, newest));
        }
    }
}
