//! Replica catch-up and repair. A replica that missed writes (it was down, restarted, or new)
//! copies them from its peers:
//! - **log catch-up**, every few seconds: read each peer's operation log from where it left off
//!   and apply the records with their own versions (last-writer-wins makes this idempotent;
//!   records it already has are skipped before touching its own log);
//! - **partition copy**, when a peer's log no longer reaches back far enough: stream every
//!   stored record (points and tombstones) of the peer, then continue from the log position
//!   read before the stream began;
//! - **anti-entropy**, every half minute: compare per-partition counts and checksums with each
//!   peer and copy the partitions that differed on two checks in a row (a single difference is
//!   usually a write still in flight).
//!
//! I/O: gRPC to the peers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use vecshard_proto::v1 as pb;
use vecshard_proto::v1::points_client::PointsClient;
use vecshard_proto::v1::points_internal_client::PointsInternalClient;
use vecshard_security::SecureChannel;

use vecshard_core::convert::record_from_pb;
use vecshard_core::error::{Error, Result};
use vecshard_core::partitions::diverged;
use vecshard_engine::shard::Shard;

/// Versions are HLC (milliseconds << 16). Writes from several routers can reach a replica out
/// of version order by up to their clock skew; the first read from a peer starts this far
/// below the newest version this replica holds so that such writes are not skipped.
const WINDOW: u64 = 30_000 << 16;
const ROUND: Duration = Duration::from_secs(2);
/// Rounds before the replica first caught up with its peers.
const CATCHING_UP_ROUND: Duration = Duration::from_millis(500);
/// Anti-entropy runs every this many rounds.
const REPAIR_EVERY: u32 = 15;
const PAGE: u32 = 2_000;

/// What this replica knows about one peer.
struct Peer {
    addr: String,
    /// The peer's public service (its log position, from `Info`).
    client: PointsClient<SecureChannel>,
    /// The peer's `PointsInternal` (log, records, fingerprints), on the same connection.
    internal: PointsInternalClient<SecureChannel>,
    /// Log sequence of the peer read up to; 0 until the first read.
    cursor: u64,
    /// Partitions that differed at the previous anti-entropy check.
    suspects: BTreeSet<u32>,
}

/// A lazily connecting channel to another replica, with this process's TLS and key.
fn peer_channel(addr: &str) -> Result<SecureChannel> {
    vecshard_security::current_client()
        .channel(addr, Duration::from_secs(1), Some(Duration::from_secs(30)))
        .map_err(|e| Error::invalid(format!("replica address {addr:?}: {e}")))
}

/// A lazily connecting client of a peer's internal service.
pub fn internal_client(addr: &str) -> Result<PointsInternalClient<SecureChannel>> {
    Ok(PointsInternalClient::new(peer_channel(addr)?).max_decoding_message_size(256 << 20))
}

impl Peer {
    fn connect(addr: &str) -> Option<Peer> {
        let channel = peer_channel(addr).ok()?;
        Some(Peer {
            addr: addr.to_string(),
            client: PointsClient::new(channel.clone()),
            internal: PointsInternalClient::new(channel).max_decoding_message_size(256 << 20),
            cursor: 0,
            suspects: BTreeSet::new(),
        })
    }
}

/// Where a replica finds its peers.
#[derive(Clone, Debug)]
pub enum PeerSource {
    /// Fixed gRPC addresses (`vecshard-server dev`, hand-written setups).
    Static(Vec<String>),
    /// A DNS name that resolves to every replica of the shard (a Kubernetes headless Service),
    /// looked up every round so that replicas added or rescheduled by the operator are found
    /// without a restart. Addresses equal to `own_ip` are this replica.
    Dns {
        host: String,
        port: u16,
        own_ip: Option<std::net::IpAddr>,
    },
}

impl PeerSource {
    pub fn is_empty(&self) -> bool {
        matches!(self, PeerSource::Static(p) if p.is_empty())
    }

    /// The peers' gRPC addresses now. A failed DNS lookup (e.g. the Service has no endpoints
    /// yet) yields none; the next round tries again.
    async fn addresses(&self) -> Vec<String> {
        match self {
            PeerSource::Static(addrs) => addrs.clone(),
            PeerSource::Dns { host, port, own_ip } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(found) => peer_addresses(found, *own_ip),
                    Err(e) => {
                        tracing::debug!(%host, error = %e, "peer lookup failed");
                        Vec::new()
                    }
                }
            }
        }
    }
}

/// `http://ip:port` for every resolved address but this replica's own, sorted and deduplicated.
fn peer_addresses(
    found: impl IntoIterator<Item = std::net::SocketAddr>,
    own_ip: Option<std::net::IpAddr>,
) -> Vec<String> {
    let set: BTreeSet<String> = found
        .into_iter()
        .filter(|a| Some(a.ip()) != own_ip)
        .map(|a| format!("http://{a}"))
        .collect();
    set.into_iter().collect()
}

/// Keeps the state of peers still present, connects to new ones, forgets the gone.
fn refresh_peers(peers: &mut Vec<Peer>, addresses: &[String]) {
    peers.retain(|p| addresses.contains(&p.addr));
    for addr in addresses {
        if !peers.iter().any(|p| &p.addr == addr) {
            if let Some(peer) = Peer::connect(addr) {
                tracing::info!(peer = %addr, "new peer");
                peers.push(peer);
            }
        }
    }
}

/// A peer that failed this many rounds in a row before this replica first caught up with it is
/// taken to be down: waiting for it would keep this replica unready for as long as it is away
/// (two replicas restarting together would each wait for the other).
const GIVE_UP_ROUNDS: u32 = 3;

/// Runs until `stop` turns true. The replica is not ready (`Shard::mark_catching_up`) until
/// every peer found has been caught up with once, or has failed `GIVE_UP_ROUNDS` rounds in a
/// row: a new or restarted replica then serves reads (and counts toward the write consistency)
/// only once it holds what its peers acknowledged.
pub async fn catch_up_loop(shard: Arc<Shard>, source: PeerSource, mut stop: watch::Receiver<bool>) {
    shard.mark_catching_up();
    let mut initial = InitialSync::default();
    let mut peers: Vec<Peer> = Vec::new();
    // The first call to a peer finds its place by version; later calls continue from the
    // sequence cursor, so each round reads only the entries the peer wrote since.
    let watermark = shard.max_version().saturating_sub(WINDOW);
    let mut round: u32 = 0;
    loop {
        round = round.wrapping_add(1);
        refresh_peers(&mut peers, &source.addresses().await);
        adopt_ownership(&shard, &mut peers).await;
        for peer in &mut peers {
            let result =
                sync_with(&shard, peer, watermark, round.is_multiple_of(REPAIR_EVERY)).await;
            if let Err(e) = &result {
                tracing::debug!(peer = %peer.addr, error = %e, "peer not reachable for catch-up");
            }
            initial.record(&peer.addr, result.is_ok());
        }
        let caught_up = initial.done(peers.iter().map(|p| p.addr.as_str()));
        if caught_up {
            shard.mark_caught_up();
            initial.finished = true;
        }
        // Until it has caught up once, rounds come faster: the replica is not ready meanwhile,
        // and a peer that is down is given up on after GIVE_UP_ROUNDS of them.
        let pause = if initial.finished {
            ROUND
        } else {
            CATCHING_UP_ROUND
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Which peers a starting replica has caught up with, and how often the others failed.
#[derive(Default)]
struct InitialSync {
    /// Caught up once: the replica is ready for good.
    finished: bool,
    synced: BTreeSet<String>,
    failures: std::collections::BTreeMap<String, u32>,
}

impl InitialSync {
    fn record(&mut self, addr: &str, ok: bool) {
        if ok {
            self.synced.insert(addr.to_string());
        } else if !self.synced.contains(addr) {
            *self.failures.entry(addr.to_string()).or_default() += 1;
        }
    }

    /// Every peer of `current` caught up with once, or failed `GIVE_UP_ROUNDS` times.
    fn done<'a>(&self, mut current: impl Iterator<Item = &'a str>) -> bool {
        current.all(|addr| {
            self.synced.contains(addr)
                || self.failures.get(addr).copied().unwrap_or(0) >= GIVE_UP_ROUNDS
        })
    }
}

/// A replica that was never told its partition ownership (a new one, added after the
/// collection rebalanced) takes the ownership of the first peer that has one, before it copies
/// anything: otherwise it would serve every partition, and the records of partitions moved away
/// that linger in its peers' logs would come back through catch-up. The next rebalancing step
/// installs the ownership on it like on every replica.
async fn adopt_ownership(shard: &Arc<Shard>, peers: &mut [Peer]) {
    if shard.ownership().map_version() != 0 {
        return;
    }
    for peer in peers.iter_mut() {
        let info = peer
            .client
            .info(pb::InfoRequest {
                collection: shard.config().name.clone(),
            })
            .await;
        let Ok(info) = info.map(tonic::Response::into_inner) else {
            continue;
        };
        if info.map_version == 0 {
            continue;
        }
        let view = vecshard_proto::shard_map::Ownership {
            map_version: info.map_version,
            partitions: shard.options().partitions,
            readable: info.readable_partitions,
            writable: info.writable_partitions,
        };
        match shard.set_ownership(view).await {
            Ok(_) => {
                tracing::info!(peer = %peer.addr, map_version = info.map_version, "adopted the partition ownership of a peer");
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.addr, error = %e, "cannot adopt the partition ownership of a peer");
            }
        }
    }
}

/// One round with one peer: log catch-up (or a full copy when the log falls short), then, on
/// repair rounds, the anti-entropy check.
async fn sync_with(
    shard: &Arc<Shard>,
    peer: &mut Peer,
    watermark: u64,
    repair: bool,
) -> Result<()> {
    match pull_log(shard, peer.internal.clone(), watermark, peer.cursor).await? {
        LogPull::Done { applied, cursor } => {
            peer.cursor = cursor;
            if applied > 0 {
                tracing::info!(peer = %peer.addr, applied, "caught up from peer's log");
            }
        }
        LogPull::Truncated => {
            tracing::warn!(peer = %peer.addr, "peer's operation log no longer reaches back far enough; copying its partitions");
            let sequence = peer_sequence(shard, peer.client.clone()).await?;
            let applied = copy_partitions(shard, peer.internal.clone(), None)
                .await?
                .applied;
            tracing::info!(peer = %peer.addr, applied, "copied partitions from peer");
            peer.cursor = sequence;
            return Ok(());
        }
    }
    if repair {
        repair_from(shard, peer).await?;
    }
    Ok(())
}

enum LogPull {
    Done { applied: u64, cursor: u64 },
    Truncated,
}

/// Reads a peer's log from `cursor` (0: from the version watermark) to its end and applies
/// what this replica lacks.
async fn pull_log(
    shard: &Arc<Shard>,
    mut client: PointsInternalClient<SecureChannel>,
    watermark: u64,
    mut cursor: u64,
) -> Result<LogPull> {
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
            return Ok(LogPull::Truncated);
        }
        cursor = page.next_sequence;
        applied += apply(shard, page.records).await?;
        if !page.more {
            return Ok(LogPull::Done { applied, cursor });
        }
    }
}

/// What a partition copy read and applied.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyStats {
    pub scanned: u64,
    pub applied: u64,
    /// Vector and payload bytes read.
    pub bytes: u64,
}

async fn apply(shard: &Arc<Shard>, records: Vec<pb::LogRecord>) -> Result<u64> {
    let records = records
        .into_iter()
        .map(record_from_pb)
        .collect::<Result<Vec<_>>>()?;
    let applied = shard.apply_replicated(records).await?;
    shard.metrics().replicated_records.inc_by(applied);
    Ok(applied)
}

/// The peer's current log sequence: every write at or below it is in its stored records.
async fn peer_sequence(shard: &Arc<Shard>, mut client: PointsClient<SecureChannel>) -> Result<u64> {
    let info = client
        .info(pb::InfoRequest {
            collection: shard.config().name.clone(),
        })
        .await
        .map_err(|s| Error::unavailable(s.message().to_string()))?;
    Ok(info.into_inner().wal_sequence)
}

/// Streams the peer's stored records (of `partitions`, or all) and applies those that win.
pub async fn copy_partitions(
    shard: &Arc<Shard>,
    mut client: PointsInternalClient<SecureChannel>,
    partitions: Option<Vec<u32>>,
) -> Result<CopyStats> {
    let (partition_count, partitions) = match partitions {
        Some(list) => (shard.options().partitions, list),
        None => (0, Vec::new()),
    };
    let mut after = Vec::new();
    let mut stats = CopyStats::default();
    loop {
        let page = client
            .scan_points(pb::ScanPointsRequest {
                collection: shard.config().name.clone(),
                after: after.clone(),
                max_records: PAGE,
                partition_count,
                partitions: partitions.clone(),
            })
            .await
            .map_err(|s| Error::unavailable(s.message().to_string()))?
            .into_inner();
        stats.scanned += page.records.len() as u64;
        stats.bytes += page
            .records
            .iter()
            .map(|r| (r.vector.len() * 4 + r.payload_json.len()) as u64)
            .sum::<u64>();
        stats.applied += apply(shard, page.records).await?;
        if page.done {
            return Ok(stats);
        }
        after = page.next_after;
    }
}

/// Anti-entropy with one peer: partitions whose fingerprints differed now and at the previous
/// check are copied from the peer (the peer does the same in the other direction, so both
/// converge on the newest version of every point).
async fn repair_from(shard: &Arc<Shard>, peer: &mut Peer) -> Result<()> {
    let n = shard.options().partitions;
    let theirs = peer
        .internal
        .partition_stats(pb::PartitionStatsRequest {
            collection: shard.config().name.clone(),
            partition_count: n,
        })
        .await
        .map_err(|s| Error::unavailable(s.message().to_string()))?
        .into_inner();
    let (ours, _) = shard.partition_stats(n).await?;
    let now: BTreeSet<u32> = diverged(&ours, &theirs.partitions).into_iter().collect();
    let persistent: Vec<u32> = now.intersection(&peer.suspects).copied().collect();
    peer.suspects = now;
    if persistent.is_empty() {
        return Ok(());
    }
    let applied = copy_partitions(shard, peer.internal.clone(), Some(persistent.clone()))
        .await?
        .applied;
    tracing::info!(peer = %peer.addr, partitions = ?persistent, applied, "repaired diverged partitions from peer");
    Ok(())
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    #[test]
    fn a_replica_does_not_count_itself_among_its_peers() {
        let found = [
            "10.0.0.7:6334",
            "10.0.0.5:6334",
            "10.0.0.6:6334",
            "10.0.0.5:6334",
        ]
        .map(|a| a.parse().unwrap());
        let own = Some("10.0.0.6".parse().unwrap());
        assert_eq!(
            peer_addresses(found, own),
            ["http://10.0.0.5:6334", "http://10.0.0.7:6334"]
        );
    }

    #[tokio::test]
    async fn peers_that_leave_are_forgotten_and_new_ones_are_connected() {
        let mut peers = Vec::new();
        refresh_peers(
            &mut peers,
            &["http://10.0.0.5:6334".into(), "http://10.0.0.7:6334".into()],
        );
        peers[0].cursor = 42;
        refresh_peers(
            &mut peers,
            &["http://10.0.0.5:6334".into(), "http://10.0.0.8:6334".into()],
        );
        let addrs: Vec<_> = peers.iter().map(|p| (p.addr.as_str(), p.cursor)).collect();
        assert_eq!(
            addrs,
            [("http://10.0.0.5:6334", 42), ("http://10.0.0.8:6334", 0)]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_replica_waits_for_every_reachable_peer_and_gives_up_on_a_down_one() {
        let mut sync = InitialSync::default();
        assert!(sync.done([].into_iter()), "no peers: nothing to wait for");
        sync.record("a", true);
        sync.record("b", false);
        assert!(!sync.done(["a", "b"].into_iter()), "b failed once");
        sync.record("b", false);
        assert!(!sync.done(["a", "b"].into_iter()));
        sync.record("b", false);
        assert!(
            sync.done(["a", "b"].into_iter()),
            "b failed three rounds: down"
        );
        // A peer found later is waited for too.
        assert!(!sync.done(["a", "b", "c"].into_iter()));
        sync.record("c", true);
        assert!(sync.done(["a", "b", "c"].into_iter()));
    }

    #[test]
    fn a_peer_caught_up_with_once_stays_caught_up() {
        let mut sync = InitialSync::default();
        sync.record("a", true);
        sync.record("a", false);
        assert!(sync.done(["a"].into_iter()));
    }
}
