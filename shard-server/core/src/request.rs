//! The requests and answers that pass between the layers (transport → router or shard →
//! engine), independent of any wire format: `convert` maps them to and from the protobuf
//! messages, the HTTP handlers to and from JSON.

use serde_json::{Map, Value};

use crate::filter::Filter;
use crate::model::PointId;

/// One top-k search, as validated by the shard (`Shard::validate_search`).
#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub ef: Option<usize>,
    pub exact: bool,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// A hit of a search, or a point read by id (`score` 0).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    pub id: PointId,
    pub score: f32,
    pub version: u64,
    pub payload: Option<Map<String, Value>>,
    pub vector: Option<Vec<f32>>,
}

/// What an acknowledged write did: its log sequence, how many points it changed, its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub sequence: u64,
    pub affected: u64,
    pub version: u64,
}

/// What a delete removes: points by id, or every point a filter matches.
#[derive(Clone, Debug)]
pub enum DeleteTarget {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// How a read may be answered: partially (some shards missing) or not, and by when.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// With every replica of a shard down, answer from the others instead of failing.
    pub allow_partial: bool,
    /// The caller's deadline (gRPC `grpc-timeout`, HTTP `?timeout=`); calls to shards get the
    /// time that remains.
    pub timeout: Option<std::time::Duration>,
}

/// Results of a batch of searches, one list per query, and the shards missing from them.
#[derive(Debug, Default)]
pub struct SearchResults {
    pub results: Vec<Vec<ScoredPoint>>,
    /// Shards that could not answer (only with `allow_partial`).
    pub unavailable_shards: Vec<String>,
}

/// A page of points in id order (Qdrant's scroll): those at or after `offset` that `filter`
/// accepts, at most `limit` of them.
#[derive(Clone, Debug, Default)]
pub struct ScrollRequest {
    pub offset: Option<PointId>,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub with_payload: bool,
    pub with_vector: bool,
}

/// A page of a scroll and where the next page starts (`None`: this was the last).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScrollPage {
    pub points: Vec<ScoredPoint>,
    pub next_offset: Option<PointId>,
}

impl ScrollPage {
    /// Merges the pages that several shards gave for the same request into the page the whole
    /// collection gives: the `limit` smallest ids; the next page starts at the smallest id
    /// left out (the one after the page, or the smallest of the shards' own next offsets).
    pub fn merge(pages: Vec<ScrollPage>, limit: usize) -> ScrollPage {
        let mut next_offset = pages.iter().filter_map(|p| p.next_offset.clone()).min();
        let mut points: Vec<ScoredPoint> = pages.into_iter().flat_map(|p| p.points).collect();
        points.sort_by(|a, b| a.id.cmp(&b.id));
        if points.len() > limit {
            let first_left_out = points[limit].id.clone();
            next_offset =
                Some(next_offset.map_or(first_left_out.clone(), |n| n.min(first_left_out)));
            points.truncate(limit);
        }
        ScrollPage {
            points,
            next_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[u64], next: Option<u64>) -> ScrollPage {
        ScrollPage {
            points: ids
                .iter()
                .map(|i| ScoredPoint {
                    id: PointId::Num(*i),
                    score: 0.0,
                    version: 1,
                    payload: None,
                    vector: None,
                })
                .collect(),
            next_offset: next.map(PointId::Num),
        }
    }

    fn ids(p: &ScrollPage) -> Vec<u64> {
        p.points
            .iter()
            .map(|p| match p.id {
                PointId::Num(n) => n,
                PointId::Str(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn merged_scroll_pages_keep_the_smallest_ids_and_resume_at_the_first_left_out() {
        // Shard A holds 1, 4, 5, 9; shard B holds 2, 3, 8. Pages of 3.
        let merged = ScrollPage::merge(vec![page(&[1, 4, 5], Some(9)), page(&[2, 3, 8], None)], 3);
        assert_eq!(ids(&merged), vec![1, 2, 3]);
        assert_eq!(merged.next_offset, Some(PointId::Num(4)));
        // A shard's own next offset can be the smallest id not on the page.
        let merged = ScrollPage::merge(vec![page(&[1, 2, 3], Some(6)), page(&[7], None)], 3);
        assert_eq!(ids(&merged), vec![1, 2, 3]);
        assert_eq!(merged.next_offset, Some(PointId::Num(6)));
        // Everything fits: the last page.
        let merged = ScrollPage::merge(vec![page(&[1], None), page(&[], None)], 3);
        assert_eq!(ids(&merged), vec![1]);
        assert_eq!(merged.next_offset, None);
    }
}
