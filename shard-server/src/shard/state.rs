//! The in-memory view of a shard: which record is current for each id (last writer wins by
//! version), in-memory vector copies by slot, the live and not-yet-indexed slot sets, and the
//! payload index. Pure data structure: no I/O; the committer is its only writer.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use crate::model::{IndexedField, Metric, PointId};
use crate::shard::payload_index::PayloadIndex;
use crate::shard::vectors::{Precision, VectorArena};

/// The current version of an id and, when it is live, the slot holding its vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub version: u64,
    pub slot: Option<u32>,
}

pub struct State {
    pub by_id: HashMap<PointId, Entry>,
    /// slot → id. A slot is never reused: an update takes a fresh slot, so a search that raced
    /// with the update can never pair an old graph hit with the new vector.
    pub slot_ids: Vec<PointId>,
    vectors: VectorArena,
    pub live: RoaringBitmap,
    /// Live slots not yet in the HNSW graph; searches scan them exactly (read-your-writes).
    pub pending: RoaringBitmap,
    /// Slots in the graph whose point has been replaced or deleted, to be removed from it.
    pub dead_indexed: Vec<u32>,
    pub payloads: PayloadIndex,
}

impl State {
    pub fn new(dimension: usize, precision: Precision, fields: &[IndexedField]) -> Self {
        State {
            by_id: HashMap::new(),
            slot_ids: Vec::new(),
            vectors: VectorArena::new(dimension, precision),
            live: RoaringBitmap::new(),
            pending: RoaringBitmap::new(),
            dead_indexed: Vec::new(),
            payloads: PayloadIndex::new(fields),
        }
    }

    /// The score of the vector in `slot` for `query` (see `scoring::score`).
    pub fn score(&self, metric: Metric, query: &[f32], slot: u32) -> f32 {
        self.vectors.score(metric, query, slot)
    }

    /// How far a score from the in-memory copies may be from the score of the stored
    /// vector; `None` when the copies are exact.
    pub fn copy_score_error(&self) -> Option<f32> {
        self.vectors.score_error()
    }

    /// The in-memory copy of the vector in `slot` (f16-rounded unless the arena is f32).
    pub fn vector(&self, slot: u32) -> Vec<f32> {
        self.vectors.to_f32(slot)
    }

    /// True when a write of `id` at `version` wins over what is stored (last writer wins;
    /// an equal version is a replay and changes nothing).
    pub fn wins(&self, id: &PointId, version: u64) -> bool {
        self.by_id.get(id).is_none_or(|e| version > e.version)
    }

    /// Applies a winning write: `Some((vector, payload))` stores a point, `None` a tombstone.
    pub fn apply(
        &mut self,
        id: PointId,
        version: u64,
        point: Option<(&[f32], &Map<String, Value>)>,
    ) {
        if let Some(old) = self.by_id.get(&id).and_then(|e| e.slot) {
            self.live.remove(old);
            // Still pending means the indexer has not added it yet; it checks liveness after
            // adding, so only slots already in the graph need an explicit removal.
            if !self.pending.remove(old) {
                self.dead_indexed.push(old);
            }
        }
        let slot = point.map(|(vector, payload)| {
            let slot =
                u32::try_from(self.slot_ids.len()).expect("a shard holds fewer than 2^32 slots");
            self.slot_ids.push(id.clone());
            self.vectors.push(vector);
            self.live.insert(slot);
            self.pending.insert(slot);
            self.payloads.insert(slot, payload);
            slot
        });
        self.by_id.insert(id, Entry { version, slot });
    }

    pub fn live_len(&self) -> u64 {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_moves_the_point_to_a_fresh_slot_and_retires_the_old_one() {
        let mut s = State::new(2, Precision::F32, &[]);
        let empty = Map::new();
        s.apply(PointId::Num(1), 1, Some((&[1.0, 0.0], &empty)));
        s.pending.clear(); // as if indexed
        s.apply(PointId::Num(1), 2, Some((&[0.0, 1.0], &empty)));
        assert_eq!(s.live.iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.dead_indexed, vec![0]);
        assert_eq!(s.vector(1), vec![0.0, 1.0]);
    }

    #[test]
    fn older_and_equal_versions_lose_and_tombstones_keep_their_version() {
        let mut s = State::new(1, Precision::F32, &[]);
        let empty = Map::new();
        s.apply(PointId::Num(1), 5, Some((&[1.0], &empty)));
        assert!(!s.wins(&PointId::Num(1), 4));
        assert!(!s.wins(&PointId::Num(1), 5));
        s.apply(PointId::Num(1), 6, None);
        assert_eq!(s.live_len(), 0);
        assert!(
            !s.wins(&PointId::Num(1), 5),
            "a delayed old write must not resurrect a deleted point"
        );
        assert!(s.wins(&PointId::Num(1), 7));
    }
}
