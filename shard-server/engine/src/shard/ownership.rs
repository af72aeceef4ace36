//! Which partitions this replica answers reads for and accepts writes for, as of a shard-map
//! version (rebalancing moves partitions between shards). Persisted in `ownership.json` before
//! it takes effect, so a restarted replica neither serves nor takes back what it gave away.
//! A replica that was never told serves every partition and accepts any map version, as a
//! collection that never rebalanced always has.

use std::path::Path;

use vecshard_core::error::{Error, Result};
use vecshard_core::model::PointId;
use vecshard_proto::shard_map::{partition_of, Ownership};

const FILE: &str = "ownership.json";

#[derive(Clone, Debug)]
pub struct OwnershipView {
    lists: Ownership,
    readable: Vec<bool>,
    writable: Vec<bool>,
    all_readable: bool,
    all_writable: bool,
}

impl OwnershipView {
    pub fn everything(partitions: u32) -> OwnershipView {
        OwnershipView::new(Ownership::everything(partitions), partitions)
            .expect("every partition is a valid view")
    }

    /// Checks the lists against the collection's partition count.
    pub fn new(lists: Ownership, partitions: u32) -> Result<OwnershipView> {
        if lists.partitions != partitions {
            return Err(Error::invalid(format!(
                "ownership.partition_count is {}, the collection has {partitions} partitions",
                lists.partitions
            )));
        }
        let mask = |list: &[u32], field: &str| -> Result<Vec<bool>> {
            let mut mask = vec![false; partitions as usize];
            for &p in list {
                *mask.get_mut(p as usize).ok_or_else(|| {
                    Error::invalid(format!(
                        "ownership.{field} lists partition {p}; partitions are 0-{}",
                        partitions.saturating_sub(1)
                    ))
                })? = true;
            }
            Ok(mask)
        };
        let readable = mask(&lists.readable, "readable")?;
        let writable = mask(&lists.writable, "writable")?;
        if let Some(p) = (0..partitions as usize).find(|&p| readable[p] && !writable[p]) {
            return Err(Error::invalid(format!(
                "ownership: partition {p} is readable but not writable"
            )));
        }
        Ok(OwnershipView {
            all_readable: readable.iter().all(|r| *r),
            all_writable: writable.iter().all(|w| *w),
            readable,
            writable,
            lists,
        })
    }

    pub fn lists(&self) -> &Ownership {
        &self.lists
    }

    pub fn map_version(&self) -> u64 {
        self.lists.map_version
    }

    pub fn all_readable(&self) -> bool {
        self.all_readable
    }

    pub fn all_writable(&self) -> bool {
        self.all_writable
    }

    fn partition(&self, id: &PointId) -> usize {
        partition_of(&id.to_bytes(), self.lists.partitions) as usize
    }

    pub fn can_read(&self, id: &PointId) -> bool {
        self.all_readable || self.readable[self.partition(id)]
    }

    pub fn can_write(&self, id: &PointId) -> bool {
        self.all_writable || self.writable[self.partition(id)]
    }

    /// A request routed with `map_version` (0: not routed) may be served unless its map is
    /// older than the ownership this shard was given. A newer map is served: the operator
    /// raises the version for changes that move no partition (replicas added or removed), and
    /// every change that does move one is pushed here before its map is published, so a
    /// newer map never asks for a partition this shard does not hold — and `check_writable`
    /// refuses the write if it ever did.
    pub fn check_request(&self, map_version: u64, shard: &str) -> Result<()> {
        let mine = self.lists.map_version;
        if map_version == 0 || mine == 0 || map_version >= mine {
            return Ok(());
        }
        Err(Error::stale_map(format!(
            "shard {shard} serves shard map version {mine}; the request was routed with version \
             {map_version}: reload the shard map and retry"
        )))
    }

    /// Every id's partition is writable here.
    pub fn check_writable<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a PointId>,
        shard: &str,
    ) -> Result<()> {
        if self.all_writable {
            return Ok(());
        }
        match ids.into_iter().find(|id| !self.can_write(id)) {
            None => Ok(()),
            Some(id) => Err(Error::stale_map(format!(
                "point {id} is in partition {}, which shard {shard} does not hold as of shard map \
                 version {}: reload the shard map and retry",
                self.partition(id),
                self.lists.map_version
            ))),
        }
    }

    /// The view stored in `dir`, or every partition when none was ever stored.
    pub fn load(dir: &Path, partitions: u32) -> Result<OwnershipView> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let lists: Ownership = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::internal(format!("{} is unreadable: {e}", path.display()))
                })?;
                OwnershipView::new(lists, partitions)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(OwnershipView::everything(partitions))
            }
            Err(e) => Err(Error::internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Stores the view durably (temporary file, fsync, rename, fsync of the directory).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::storage("write ownership", e);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(&self.lists).expect("serializes");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, dir.join(FILE)).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(version: u64, readable: &[u32], writable: &[u32]) -> Result<OwnershipView> {
        OwnershipView::new(
            Ownership {
                map_version: version,
                partitions: 4,
                readable: readable.to_vec(),
                writable: writable.to_vec(),
            },
            4,
        )
    }

    #[test]
    fn only_maps_older_than_the_ownership_are_refused() {
        let v = view(7, &[0, 1], &[0, 1, 2]).unwrap();
        assert!(v.check_request(7, "docs-0").is_ok());
        assert!(v.check_request(0, "docs-0").is_ok());
        let err = v.check_request(6, "docs-0").unwrap_err();
        assert_eq!(err.code(), "FAILED_PRECONDITION");
        assert!(err.to_string().contains("version 7"), "{err}");
        // A replica-only change raises the map version without new ownership.
        assert!(v.check_request(8, "docs-0").is_ok());
        assert!(OwnershipView::everything(4)
            .check_request(8, "docs-0")
            .is_ok());
    }

    #[test]
    fn only_held_partitions_are_written_and_only_owned_ones_read() {
        let v = view(3, &[], &[]).unwrap();
        let id = PointId::Num(42);
        assert!(!v.can_read(&id) && !v.can_write(&id));
        let err = v.check_writable([&id], "docs-1").unwrap_err().to_string();
        assert!(err.contains("point 42") && err.contains("docs-1"), "{err}");
        let p = partition_of(&id.to_bytes(), 4);
        let v = view(3, &[], &[p]).unwrap();
        assert!(v.can_write(&id) && !v.can_read(&id));
    }

    #[test]
    fn bad_views_are_refused_by_field() {
        assert!(view(1, &[9], &[9])
            .unwrap_err()
            .to_string()
            .contains("readable"));
        assert!(view(1, &[1], &[])
            .unwrap_err()
            .to_string()
            .contains("readable but not writable"));
        assert!(OwnershipView::new(Ownership::everything(8), 4).is_err());
    }

    #[test]
    fn a_stored_view_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(OwnershipView::load(dir.path(), 4).unwrap().all_readable());
        view(5, &[1], &[1, 2]).unwrap().store(dir.path()).unwrap();
        let back = OwnershipView::load(dir.path(), 4).unwrap();
        assert_eq!(back.lists().writable, vec![1, 2]);
        assert_eq!(back.map_version(), 5);
    }
}
