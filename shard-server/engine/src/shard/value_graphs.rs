//! Value graphs: one small HNSW graph per frequent keyword value of an indexed field, holding
//! only the points with that value, so that a filter on the value walks a graph in which every
//! node matches. The full graph walked with a filter as a predicate slows down sharply when a
//! few percent of the points match (it keeps measuring non-matching neighbours and its search
//! radius only tightens on matching ones: 10–25× the cost of an unfiltered search at 3–10 %
//! selectivity, docs/benchmarks.md); a value graph answers such a filter at the cost of an
//! unfiltered search of a smaller graph. The same idea as Qdrant's payload-aware links
//! (`payload_m`), kept as separate graphs so that the full graph is untouched.
//!
//! The indexer keeps each graph in step with the payload index (`sync`, idempotent: it adds
//! the live points of the value the graph lacks and removes the ones no longer live); slots
//! the graph does not hold yet are scanned exactly by the search (`Cover::lag`). Which values
//! get a graph is decided by `ValueGraphPolicy`. The graphs are held in memory only: after a
//! restart they are rebuilt in the background while searches use the other plans.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use roaring::RoaringBitmap;

use crate::index::VectorIndex;
use crate::shard::payload_index::renumber_slots;
use crate::shard::state::State;
use vecshard_core::error::Result;
use vecshard_core::filter::{Condition, FieldTest, Filter, Scalar};
use vecshard_core::model::{CollectionConfig, FieldKind};

/// An indexed keyword field and one of its values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValueKey {
    pub field: String,
    pub value: String,
}

/// Which values get a graph of their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueGraphPolicy {
    pub enabled: bool,
    /// Values with fewer points are scanned exactly, which is cheaper than any graph walk
    /// (the planner's crossover, docs/api.md#how-filters-are-planned).
    pub min_points: u64,
    /// Values shared by more than this fraction of the live points are left to the full graph,
    /// whose filtered walk is cheap at such selectivity; it bounds the memory the graphs take.
    pub max_share: f64,
    /// A value-graph walk is this many times as broad as the search's `ef` (see
    /// `value_graph_breadth` in shard/mod.rs).
    pub breadth_factor: usize,
}

impl Default for ValueGraphPolicy {
    fn default() -> Self {
        ValueGraphPolicy {
            enabled: true,
            min_points: 2_000,
            max_share: 0.4,
            breadth_factor: 3,
        }
    }
}

impl ValueGraphPolicy {
    /// Whether a value with `count` of `live` points should have a graph; `exists` gives an
    /// existing graph some slack (half the minimum, a tenth more share) so that a value near
    /// a bound does not build and drop its graph over and over.
    pub fn wants(&self, count: u64, live: u64, exists: bool) -> bool {
        if !self.enabled || live == 0 {
            return false;
        }
        let share = count as f64 / live as f64;
        if exists {
            count * 2 >= self.min_points && share <= self.max_share + 0.1
        } else {
            count >= self.min_points && share <= self.max_share
        }
    }
}

/// One value's graph and the slots it holds.
pub struct ValueGraph {
    pub index: VectorIndex,
    members: RwLock<RoaringBitmap>,
}

impl ValueGraph {
    /// The slots the graph holds (a point may be in the graph a moment before it is listed
    /// here: callers merge graph hits and lag scans without duplicates).
    pub fn members(&self) -> parking_lot::RwLockReadGuard<'_, RoaringBitmap> {
        self.members.read()
    }
}

/// What a search on value graphs walks: graphs whose members, with `lag`, hold every point
/// the filter allows.
pub struct Cover {
    pub graphs: Vec<CoverPart>,
    /// Allowed points in none of the graphs yet: scanned exactly.
    pub lag: RoaringBitmap,
}

pub struct CoverPart {
    pub graph: Arc<ValueGraph>,
    /// Points the graph holds.
    pub members: u64,
    /// Of those, the ones the filter allows; fewer than `members` means the walk needs the
    /// filter as a predicate.
    pub allowed: u64,
}

/// Work done by one `sync` step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStep {
    pub added: usize,
    pub removed: usize,
    pub created: usize,
    pub dropped: usize,
}

impl SyncStep {
    pub fn is_idle(&self) -> bool {
        *self == SyncStep::default()
    }
}

pub struct ValueGraphs {
    config: CollectionConfig,
    policy: ValueGraphPolicy,
    threads: usize,
    graphs: RwLock<HashMap<ValueKey, Arc<ValueGraph>>>,
}

impl ValueGraphs {
    /// `threads`: callers that may use one graph at once (as `VectorIndex::new`).
    pub fn new(config: &CollectionConfig, policy: ValueGraphPolicy, threads: usize) -> Self {
        ValueGraphs {
            config: config.clone(),
            policy,
            threads,
            graphs: RwLock::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> ValueGraphPolicy {
        self.policy
    }

    /// Graphs held now and the points they hold in all.
    pub fn stats(&self) -> (usize, u64, usize) {
        let graphs = self.graphs.read();
        let points = graphs.values().map(|g| g.members().len()).sum();
        let bytes = graphs.values().map(|g| g.index.memory_bytes()).sum();
        (graphs.len(), points, bytes)
    }

    fn get(&self, field: &str, value: &str) -> Option<Arc<ValueGraph>> {
        let key = ValueKey {
            field: field.to_string(),
            value: value.to_string(),
        };
        self.graphs.read().get(&key).cloned()
    }

    /// The cheapest set of value graphs that covers `allowed` (the points `filter` matches),
    /// if the filter pins one: a `must` equality or `any` on a keyword field with graphs for
    /// every value named, or a `should` whose every condition pins one. Smallest total first.
    pub fn cover(&self, filter: &Filter, allowed: &RoaringBitmap) -> Option<Cover> {
        if !self.policy.enabled {
            return None;
        }
        let keys = cheapest_cover(filter, &|field, value| {
            self.get(field, value).map(|g| g.members().len())
        })?;
        let mut covered = RoaringBitmap::new();
        let graphs = keys
            .iter()
            .filter_map(|k| self.get(&k.field, &k.value))
            .map(|graph| {
                let (members, allowed_in) = {
                    let m = graph.members();
                    covered |= &*m;
                    (m.len(), m.intersection_len(allowed))
                };
                CoverPart {
                    graph,
                    members,
                    allowed: allowed_in,
                }
            })
            .collect::<Vec<_>>();
        if graphs.len() != keys.len() {
            return None; // dropped meanwhile
        }
        Some(Cover {
            graphs,
            lag: allowed - &covered,
        })
    }

    /// One bounded step of keeping the graphs in step with the payload index: creates graphs
    /// for values the policy wants, drops the ones it no longer wants, removes points no
    /// longer live, and adds up to `batch` live points a graph lacks. Returns what it did;
    /// idle when every graph is current.
    pub fn sync(&self, state: &RwLock<State>, batch: usize, threads: usize) -> Result<SyncStep> {
        let mut step = SyncStep::default();
        // Plan under the state's read lock: what to create, drop, add and remove.
        let (wanted, removals, additions) = {
            let st = state.read();
            let live = st.live_len();
            let graphs = self.graphs.read();
            let mut wanted: Vec<ValueKey> = Vec::new();
            for field in &self.config.indexed_fields {
                if field.kind != FieldKind::Keyword {
                    continue;
                }
                for (value, slots) in st.payloads.keyword_values(&field.name) {
                    let key = ValueKey {
                        field: field.name.clone(),
                        value: value.to_string(),
                    };
                    let count = slots.intersection_len(&st.live);
                    if self.policy.wants(count, live, graphs.contains_key(&key)) {
                        wanted.push(key);
                    }
                }
            }
            let mut removals = Vec::new();
            let mut additions = Vec::new();
            let mut budget = batch;
            for key in &wanted {
                let Some(graph) = graphs.get(key) else {
                    continue;
                };
                let members = graph.members();
                let gone = &*members - &st.live;
                if !gone.is_empty() {
                    removals.push((graph.clone(), gone));
                }
                if budget == 0 {
                    continue;
                }
                let slots = st
                    .payloads
                    .keyword_slots(&key.field, &key.value)
                    .map(|s| s & &st.live)
                    .unwrap_or_default();
                let missing = slots - &*members;
                let take: Vec<(u64, Vec<f32>)> = missing
                    .iter()
                    .take(budget)
                    .map(|s| (u64::from(s), st.vector(s)))
                    .collect();
                budget -= take.len();
                if !take.is_empty() {
                    additions.push((graph.clone(), take));
                }
            }
            (wanted, removals, additions)
        };
        // Create and drop graphs (the new ones fill on the next steps).
        {
            let mut graphs = self.graphs.write();
            let before = graphs.len();
            let keep: std::collections::HashSet<&ValueKey> = wanted.iter().collect();
            graphs.retain(|k, _| keep.contains(k));
            step.dropped = before - graphs.len();
            for key in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = graphs.entry(key) {
                    let graph = ValueGraph {
                        index: VectorIndex::new(&self.config, self.threads)?,
                        members: RwLock::new(RoaringBitmap::new()),
                    };
                    slot.insert(Arc::new(graph));
                    step.created += 1;
                }
            }
        }
        for (graph, gone) in removals {
            let keys: Vec<u64> = gone.iter().map(u64::from).collect();
            graph.index.remove_batch(&keys)?;
            *graph.members.write() -= &gone;
            step.removed += keys.len();
        }
        for (graph, points) in additions {
            graph.index.add_batch(&points, threads)?;
            let mut members = graph.members.write();
            members.extend(points.iter().map(|(k, _)| *k as u32));
            step.added += points.len();
        }
        Ok(step)
    }

    /// Renumbers every graph's keys and members by a slot compaction's `map` (`map[old]`,
    /// order-keeping, dead slots already removed from the graphs by `sync` or dropped here).
    /// A graph that fails to renumber is dropped, to be rebuilt by `sync`. The caller holds
    /// the state's write lock, so no search walks a graph meanwhile.
    pub fn compact(&self, map: &[u32]) {
        let mut graphs = self.graphs.write();
        graphs.retain(|key, graph| {
            let mut members = graph.members.write();
            let dead: Vec<u64> = members
                .iter()
                .filter(|s| {
                    map.get(*s as usize)
                        .is_none_or(|m| *m == crate::shard::payload_index::DROPPED)
                })
                .map(u64::from)
                .collect();
            let moves: Vec<(u64, u64)> = members
                .iter()
                .filter_map(|s| {
                    let to = *map.get(s as usize)?;
                    (to != crate::shard::payload_index::DROPPED && to != s)
                        .then_some((u64::from(s), u64::from(to)))
                })
                .collect();
            let renamed = graph
                .index
                .remove_batch(&dead)
                .and_then(|()| graph.index.rekey_downward(&moves));
            match renamed {
                Ok(()) => {
                    *members = renumber_slots(&members, map);
                    true
                }
                Err(e) => {
                    tracing::warn!(field = %key.field, value = %key.value, error = %e,
                        "renumbering a value graph failed; rebuilding it");
                    false
                }
            }
        });
    }
}

/// The value graphs (by key) whose union holds every point `filter` can match, choosing the
/// smallest total size among the conditions that pin values; `size` gives a graph's size, or
/// `None` when the value has no graph. `None` when no choice is covered by graphs.
pub fn cheapest_cover(
    filter: &Filter,
    size: &dyn Fn(&str, &str) -> Option<u64>,
) -> Option<Vec<ValueKey>> {
    let total = |keys: &Vec<ValueKey>| -> u64 {
        keys.iter()
            .map(|k| size(&k.field, &k.value).unwrap_or(u64::MAX / 64))
            .sum()
    };
    let mut options: Vec<Vec<ValueKey>> = filter
        .must
        .iter()
        .filter_map(|c| condition_cover(c, size))
        .collect();
    if !filter.should.is_empty() {
        let parts: Option<Vec<Vec<ValueKey>>> = filter
            .should
            .iter()
            .map(|c| condition_cover(c, size))
            .collect();
        if let Some(parts) = parts {
            let mut union: Vec<ValueKey> = parts.into_iter().flatten().collect();
            union.sort();
            union.dedup();
            options.push(union);
        }
    }
    options.into_iter().min_by_key(total)
}

fn condition_cover(
    condition: &Condition,
    size: &dyn Fn(&str, &str) -> Option<u64>,
) -> Option<Vec<ValueKey>> {
    match condition {
        Condition::Nested(inner) => cheapest_cover(inner, size),
        Condition::Field { key, test } => {
            let values: Vec<&String> = match test {
                FieldTest::Equals(Scalar::Keyword(v)) => vec![v],
                FieldTest::AnyOf(list) => list
                    .iter()
                    .map(|s| match s {
                        Scalar::Keyword(v) => Some(v),
                        Scalar::Integer(_) | Scalar::Bool(_) => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                FieldTest::Equals(Scalar::Integer(_) | Scalar::Bool(_)) | FieldTest::Range(_) => {
                    return None
                }
            };
            if values.is_empty() {
                return None;
            }
            values
                .into_iter()
                .map(|v| {
                    size(key, v).map(|_| ValueKey {
                        field: key.clone(),
                        value: v.clone(),
                    })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Filter {
        Filter::parse(&v, "filter").unwrap()
    }

    fn sizes(field: &str, value: &str) -> Option<u64> {
        match (field, value) {
            ("lexname", "noun.animal") => Some(7_000),
            ("lexname", "noun.act") => Some(6_000),
            ("pos", "verb") => Some(13_000),
            _ => None,
        }
    }

    fn keys(cover: Option<Vec<ValueKey>>) -> Option<Vec<String>> {
        cover.map(|c| {
            c.into_iter()
                .map(|k| format!("{}={}", k.field, k.value))
                .collect()
        })
    }

    #[test]
    fn an_equality_on_a_value_with_a_graph_is_covered_by_that_graph() {
        let f = parse(json!({"must":[{"key":"lexname","match":{"value":"noun.animal"}}]}));
        assert_eq!(
            keys(cheapest_cover(&f, &sizes)),
            Some(vec!["lexname=noun.animal".into()])
        );
    }

    #[test]
    fn a_conjunction_takes_its_smallest_covered_condition() {
        let f = parse(json!({"must":[
            {"key":"pos","match":{"value":"verb"}},
            {"key":"lexname","match":{"value":"noun.act"}},
            {"key":"year","range":{"gte":2000}}]}));
        assert_eq!(
            keys(cheapest_cover(&f, &sizes)),
            Some(vec!["lexname=noun.act".into()])
        );
    }

    #[test]
    fn a_disjunction_needs_a_graph_for_every_branch() {
        let both = parse(json!({"should":[
            {"key":"lexname","match":{"value":"noun.act"}},
            {"key":"lexname","match":{"value":"noun.animal"}}]}));
        assert_eq!(
            keys(cheapest_cover(&both, &sizes)),
            Some(vec![
                "lexname=noun.act".into(),
                "lexname=noun.animal".into()
            ])
        );
        let one_missing = parse(json!({"should":[
            {"key":"lexname","match":{"value":"noun.act"}},
            {"key":"lexname","match":{"value":"noun.plant"}}]}));
        assert_eq!(keys(cheapest_cover(&one_missing, &sizes)), None);
        let any =
            parse(json!({"must":[{"key":"lexname","match":{"any":["noun.act","noun.animal"]}}]}));
        assert_eq!(keys(cheapest_cover(&any, &sizes)).map(|k| k.len()), Some(2));
    }

    #[test]
    fn ranges_negations_and_unknown_values_are_not_covered() {
        for f in [
            json!({"must":[{"key":"year","range":{"gte":2000}}]}),
            json!({"must_not":[{"key":"lexname","match":{"value":"noun.act"}}]}),
            json!({"must":[{"key":"lexname","match":{"value":"noun.plant"}}]}),
            json!({"must":[{"key":"lexname","match":{"any":[]}}]}),
        ] {
            assert_eq!(keys(cheapest_cover(&parse(f.clone()), &sizes)), None, "{f}");
        }
    }

    #[test]
    fn a_nested_filter_in_must_is_covered_through_its_own_conditions() {
        let f =
            parse(json!({"must":[{"must":[{"key":"lexname","match":{"value":"noun.animal"}}]}]}));
        assert_eq!(
            keys(cheapest_cover(&f, &sizes)),
            Some(vec!["lexname=noun.animal".into()])
        );
    }

    #[test]
    fn the_policy_builds_graphs_for_mid_sized_values_with_slack_for_existing_ones() {
        let p = ValueGraphPolicy {
            min_points: 2_000,
            max_share: 0.4,
            ..ValueGraphPolicy::default()
        };
        assert!(!p.wants(1_999, 100_000, false));
        assert!(p.wants(2_000, 100_000, false));
        assert!(p.wants(1_500, 100_000, true), "kept until half the minimum");
        assert!(!p.wants(999, 100_000, true));
        assert!(!p.wants(45_000, 100_000, false));
        assert!(p.wants(45_000, 100_000, true));
        assert!(!p.wants(60_000, 100_000, true));
        assert!(!ValueGraphPolicy {
            enabled: false,
            ..p
        }
        .wants(5_000, 100_000, false));
    }
}
