//! The in-memory view of a shard: which record is current for each id (last writer wins by
//! version), in-memory vector copies by slot, the live and not-yet-indexed slot sets, and the
//! payload index. Pure data structure: no I/O; the committer is its only writer.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use std::sync::Arc;

use crate::shard::ownership::OwnershipView;
use crate::shard::payload_index::{renumber_slots, PayloadIndex, DROPPED};
use crate::shard::vectors::{Precision, VectorArena};
use vecshard_core::model::{IndexedField, Metric, PointId};
use vecshard_gpu::DeviceCopy;

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
    /// Live slots whose partition this replica holds but does not serve (moving to or away
    /// from it while rebalancing): left out of every read. Empty unless a move is under way.
    pub hidden: RoaringBitmap,
    /// Decides which ids are hidden; `None` while every partition is readable.
    visibility: Option<Arc<OwnershipView>>,
    /// The GPU copy of `vectors`, slot for slot (`gpu.rs`): every vector stored here is
    /// staged for it, and compactions are mirrored, under the same lock.
    device: Option<Arc<DeviceCopy>>,
    /// False for a flat index: no slot ever waits for the graph (`pending` and
    /// `dead_indexed` stay empty).
    graph: bool,
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
            hidden: RoaringBitmap::new(),
            visibility: None,
            device: None,
            graph: true,
        }
    }

    /// A state for a shard without a graph (flat index): nothing is pending, nothing needs
    /// removing from a graph.
    pub fn without_graph(&mut self) {
        self.graph = false;
        self.pending.clear();
        self.dead_indexed.clear();
    }

    /// Keeps `device` a copy of the in-memory vectors from now on, starting with every slot
    /// held (sent in blocks, so that the staging buffer stays small).
    pub fn attach_device(&mut self, device: Arc<DeviceCopy>) {
        const BLOCK: usize = 65_536;
        for slot in 0..self.slot_ids.len() {
            device.stage(&self.vectors.to_f32(slot as u32));
            if (slot + 1) % BLOCK == 0 {
                device.flush();
            }
        }
        device.flush();
        self.device = Some(device);
    }

    pub fn device(&self) -> Option<&Arc<DeviceCopy>> {
        self.device.as_ref()
    }

    /// Sends the vectors staged since the last call to the device (the committer calls it
    /// once per group of writes, still under the write lock).
    pub fn flush_device(&self) {
        if let Some(d) = &self.device {
            d.flush();
        }
    }

    /// The device copy when it can answer for the current slots.
    pub fn usable_device(&self) -> Option<&Arc<DeviceCopy>> {
        self.device
            .as_ref()
            .filter(|d| d.usable() && d.slots() == self.slot_ids.len() as u64)
    }

    /// Hides the live points whose partition `view` does not make readable (and shows the
    /// others again).
    pub fn set_visibility(&mut self, view: &Arc<OwnershipView>) {
        self.visibility = (!view.all_readable()).then(|| view.clone());
        self.hidden = match &self.visibility {
            None => RoaringBitmap::new(),
            Some(v) => self
                .live
                .iter()
                .filter(|s| !v.can_read(&self.slot_ids[*s as usize]))
                .collect(),
        };
    }

    /// `slots` without the hidden ones.
    pub fn visible(&self, slots: &RoaringBitmap) -> RoaringBitmap {
        if self.hidden.is_empty() {
            slots.clone()
        } else {
            slots - &self.hidden
        }
    }

    /// Live points that reads see.
    pub fn visible_len(&self) -> u64 {
        self.live.len() - self.hidden.len()
    }

    /// Removes every trace of `id` (record and tombstone alike): its partition left this
    /// replica, so last-writer-wins no longer applies to it here.
    pub fn forget(&mut self, id: &PointId) {
        if let Some(old) = self.by_id.remove(id).and_then(|e| e.slot) {
            self.retire(old);
        }
    }

    fn retire(&mut self, old: u32) {
        self.live.remove(old);
        self.hidden.remove(old);
        // Still pending means the indexer has not added it yet; it checks liveness after
        // adding, so only slots already in the graph need an explicit removal.
        if !self.pending.remove(old) && self.graph {
            self.dead_indexed.push(old);
        }
    }

    /// The score of the vector in `slot` for `query` (see `scoring::score`).
    pub fn score(&self, metric: Metric, query: &[f32], slot: u32) -> f32 {
        self.vectors.score(metric, query, slot)
    }

    /// `score` for every slot of `slots` (an exact scan), in order.
    pub fn score_all(&self, metric: Metric, query: &[f32], slots: &[u32]) -> Vec<(u32, f32)> {
        self.vectors.score_all(metric, query, slots)
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
            self.retire(old);
        }
        let slot = point.map(|(vector, payload)| {
            let slot =
                u32::try_from(self.slot_ids.len()).expect("a shard holds fewer than 2^32 slots");
            self.slot_ids.push(id.clone());
            self.vectors.push(vector);
            if let Some(d) = &self.device {
                d.stage(vector);
            }
            self.live.insert(slot);
            if self.graph {
                self.pending.insert(slot);
            }
            self.payloads.insert(slot, payload);
            if self.visibility.as_ref().is_some_and(|v| !v.can_read(&id)) {
                self.hidden.insert(slot);
            }
            slot
        });
        self.by_id.insert(id, Entry { version, slot });
    }

    pub fn live_len(&self) -> u64 {
        self.live.len()
    }

    /// Slots that hold a replaced or deleted point's leftovers (vector copy, id, payload-index
    /// entries) until `compact`.
    pub fn dead_slots(&self) -> u64 {
        self.slot_ids.len() as u64 - self.live.len()
    }

    /// Where `compact` moves each slot: `map[slot]` is its rank among the live slots, or
    /// `DROPPED` for a dead one. One array lookup per slot afterwards (a bitmap rank per
    /// lookup made the payload index's remapping most of a compaction's pause).
    pub fn compaction_map(&self) -> Vec<u32> {
        let mut map = vec![DROPPED; self.slot_ids.len()];
        for (new, old) in self.live.iter().enumerate() {
            map[old as usize] = new as u32;
        }
        map
    }

    /// Drops every dead slot and renumbers the live ones densely, in order, as
    /// `compaction_map` says. The caller must have removed the dead slots from the graph
    /// (`dead_indexed` empty) and renames the graph's keys the same way, under the same lock.
    pub fn compact(&mut self, map: &[u32]) {
        assert!(
            self.dead_indexed.is_empty(),
            "dead slots must leave the graph before compaction"
        );
        let live = std::mem::take(&mut self.live);
        let n = live.len() as u32;
        self.vectors.compact(live.iter());
        if let Some(d) = &self.device {
            d.compact(live.iter().collect());
        }
        self.payloads = self.payloads.compacted(map);
        let old_ids = std::mem::take(&mut self.slot_ids);
        self.slot_ids = old_ids
            .into_iter()
            .zip(map)
            .filter(|(_, new)| **new != DROPPED)
            .map(|(id, _)| id)
            .collect();
        for entry in self.by_id.values_mut() {
            if let Some(slot) = entry.slot.as_mut() {
                *slot = map[*slot as usize];
            }
        }
        self.pending = renumber_slots(&self.pending, map);
        self.hidden = renumber_slots(&self.hidden, map);
        self.live = (0..n).collect();
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
    fn compaction_keeps_live_points_in_order_with_their_vectors_and_payloads() {
        use vecshard_core::model::FieldKind;
        let fields = [IndexedField {
            name: "tag".into(),
            kind: FieldKind::Keyword,
        }];
        let mut s = State::new(1, Precision::F32, &fields);
        let payload = |tag: &str| {
            let mut m = Map::new();
            m.insert("tag".into(), Value::String(tag.into()));
            m
        };
        for i in 0..6u64 {
            s.apply(PointId::Num(i), 1, Some((&[i as f32], &payload("a"))));
        }
        s.pending.clear(); // as if indexed
        s.apply(PointId::Num(1), 2, Some((&[10.0], &payload("b")))); // slot 1 -> slot 6
        s.apply(PointId::Num(4), 2, None); // slot 4 dead
        s.dead_indexed.clear(); // as if removed from the graph
        assert_eq!(s.dead_slots(), 2);
        let map = s.compaction_map();
        assert_eq!(map, vec![0, DROPPED, 1, 2, DROPPED, 3, 4]);
        s.compact(&map);
        assert_eq!(s.dead_slots(), 0);
        assert_eq!(s.live.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        let order = [0u64, 2, 3, 5, 1];
        for (slot, id) in order.iter().enumerate() {
            assert_eq!(s.slot_ids[slot], PointId::Num(*id));
            assert_eq!(s.by_id[&PointId::Num(*id)].slot, Some(slot as u32));
        }
        assert_eq!(s.vector(4), vec![10.0]);
        assert_eq!(s.vector(3), vec![5.0]);
        assert_eq!(
            s.pending.iter().collect::<Vec<_>>(),
            vec![4],
            "point 1's new slot"
        );
        assert_eq!(s.by_id[&PointId::Num(4)].slot, None);
        let tagged = |tag: &str| {
            let f = vecshard_core::filter::Filter::parse(
                &serde_json::json!({"must":[{"key":"tag","match":{"value":tag}}]}),
                "filter",
            )
            .unwrap();
            s.payloads.evaluate(&f, &s.live).iter().collect::<Vec<_>>()
        };
        assert_eq!(tagged("a"), vec![0, 1, 2, 3]);
        assert_eq!(tagged("b"), vec![4]);
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
