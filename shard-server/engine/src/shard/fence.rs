//! Partition ownership of a replica while a collection rebalances: installing a new view
//! (the fence: it waits for every write admitted under the old one), and checking that a read
//! was routed with the map the view belongs to. See `ownership.rs` for the view itself.

use super::*;
use vecshard_proto::shard_map::Ownership;

impl Shard {
    /// The ownership view in force.
    pub fn ownership(&self) -> Arc<OwnershipView> {
        self.ownership.read().clone()
    }

    /// A read routed with shard map `map_version` (0: not routed) may be served here.
    pub fn check_route(&self, map_version: u64) -> Result<()> {
        self.ownership()
            .check_request(map_version, &self.options.shard_name)
    }

    /// Installs `lists` as this replica's ownership: waits for the writes admitted under the
    /// current view to be acknowledged, stores the view durably, hides the points of
    /// partitions no longer readable, and drops the records of partitions no longer writable.
    /// Returns the view in force and how many records were dropped. Idempotent; a view older
    /// than the one in force is refused.
    pub async fn set_ownership(self: &Arc<Self>, lists: Ownership) -> Result<(Ownership, u64)> {
        let view = Arc::new(OwnershipView::new(lists, self.options.partitions)?);
        let fence = self.write_gate.write().await;
        let current = self.ownership();
        if view.map_version() < current.map_version() {
            return Err(Error::stale_map(format!(
                "shard {} already holds the ownership of shard map version {}; version {} is older",
                self.options.shard_name,
                current.map_version(),
                view.map_version()
            )));
        }
        view.store(&self.options.data_dir)?;
        *self.ownership.write() = view.clone();
        self.state.write().set_visibility(&view);
        // The view is in force: writes to partitions no longer writable are refused from here
        // on and their points are invisible, so neither the other writes nor the caller (a
        // rebalancing step that publishes the next shard map once every replica answered)
        // wait for the drop. It runs in the background, in chunks; a drop cut short by a
        // crash is finished when the shard opens.
        drop(fence);
        let dropped = {
            let st = self.state.read();
            st.by_id.keys().filter(|id| !view.can_write(id)).count() as u64
        };
        if dropped > 0 {
            let shard = self.clone();
            tokio::spawn(async move {
                loop {
                    match shard.submit(WriteOp::Purge, 0).await {
                        Ok(chunk) if chunk.affected > 0 => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "dropping partitions given away failed; retried at the next start");
                            break;
                        }
                    }
                }
            });
        }
        tracing::info!(
            map_version = view.map_version(),
            readable = view.lists().readable.len(),
            writable = view.lists().writable.len(),
            dropped,
            "partition ownership installed"
        );
        Ok((view.lists().clone(), dropped))
    }
}
