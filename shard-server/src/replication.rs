//! Replica catch-up: a replica that missed writes (it was down, restarted, or new) copies them
//! from its peers' operation logs. Every few seconds it reads each peer's log from where it
//! left off and applies the records with their own versions; last-writer-wins makes this
//! idempotent, and records it already has are skipped before touching its own log.
//! I/O: gRPC to the peers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;

use crate::api::grpc::id_from_pb;
use crate::error::{Error, Result};
use crate::model::PointId;
use crate::shard::Shard;
use crate::storage::Record;

/// Versions are HLC (milliseconds << 16). Writes from several routers can reach a replica out
/// of version order by up to their clock skew; the first read from a peer starts this far
/// below the newest version this replica holds so that such writes are not skipped.
const WINDOW: u64 = 30_000 << 16;
const ROUND: Duration = Duration::from_secs(2);
const PAGE: u32 = 2_000;

/// Runs until `stop` turns true.
pub async fn catch_up_loop(shard: Arc<Shard>, peers: Vec<String>, mut stop: watch::Receiver<bool>) {
    let clients: Vec<(String, PointsClient<Channel>)> = peers
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
    // The first call to a peer finds its place by version; later calls continue from the
    // sequence cursor, so each round reads only the entries the peer wrote since.
    let watermark = shard.max_version().saturating_sub(WINDOW);
    let mut cursors = vec![0u64; clients.len()];
    loop {
        for ((addr, client), cursor) in clients.iter().zip(cursors.iter_mut()) {
            match pull_from(&shard, client.clone(), watermark, *cursor).await {
                Ok((applied, next)) => {
                    *cursor = next;
                    if applied > 0 {
                        tracing::info!(peer = %addr, applied, "caught up from peer");
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "peer not reachable for catch-up")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reads a peer's log from `cursor` (0: from the version watermark) to its end and applies
/// what this replica lacks: (records applied, the new cursor).
async fn pull_from(
    shard: &Arc<Shard>,
    mut client: PointsClient<Channel>,
    watermark: u64,
    mut cursor: u64,
) -> Result<(u64, u64)> {
    let mut applied = 0;
    loop {
        let request = pb::ReadLogRequest {
            collection: shard.config().name.clone(),
            after_version: if cursor == 0 { watermark } else { 0 },
            after_sequence: cursor,
            max_records: PAGE,
        };
        let page = client
            .read_log(request)
            .await
            .map_err(|s| Error::unavailable(s.message().to_string()))?
            .into_inner();
        if page.truncated {
            tracing::warn!("peer's operation log no longer reaches back far enough; older points are not copied (full partition copy is not implemented yet)");
        }
        cursor = page.next_sequence;
        let records = page
            .records
            .into_iter()
            .map(|r| {
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
            return Ok((applied, cursor));
        }
    }
}
