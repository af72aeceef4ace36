use super::search::batch_chunks;
use super::*;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};
use vecshard_core::model::{FieldKind, HnswParams, IndexKind, IndexedField, Quantization};

pub(super) fn config(quantization: Quantization) -> CollectionConfig {
    CollectionConfig {
        name: "docs".into(),
        dimension: 8,
        metric: Metric::Cosine,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 64,
            ef_search: 32,
        },
        quantization,
        indexed_fields: vec![
            IndexedField {
                name: "group".into(),
                kind: FieldKind::Keyword,
            },
            IndexedField {
                name: "n".into(),
                kind: FieldKind::Integer,
            },
        ],
    }
}

pub(super) fn vector(i: u64) -> Vec<f32> {
    (0..8u64)
        .map(|d| {
            (xxhash_rust::xxh3::xxh3_64(&(i * 8 + d).to_le_bytes()) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn point(i: u64) -> Point {
    let payload = json!({"group": format!("g{}", i % 10), "n": i});
    Point {
        id: PointId::Num(i),
        vector: vector(i),
        payload: payload.as_object().unwrap().clone(),
    }
}

fn open(dir: &std::path::Path, quantization: Quantization) -> Arc<Shard> {
    let mut options = ShardOptions::new(dir);
    options.exact_scan_threshold = 50;
    Shard::open(config(quantization), options, Arc::new(Metrics::new())).unwrap()
}

fn search(vector: Vec<f32>, limit: usize, filter: Option<Filter>, exact: bool) -> SearchRequest {
    SearchRequest {
        vector,
        limit,
        filter,
        ef: Some(64),
        exact,
        with_payload: false,
        with_vector: false,
    }
}

async fn wait_indexed(shard: &Shard) {
    for _ in 0..500 {
        if shard.info().pending_points == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("index never caught up");
}

/// Waits until every replaced and deleted slot is compacted away and nothing waits for the
/// graph.
pub(super) async fn wait_compacted(shard: &Shard) {
    for _ in 0..500 {
        if shard.state.read().dead_slots() == 0 && shard.info().pending_points == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no compaction");
}

#[tokio::test]
async fn acknowledged_points_are_searchable_immediately_before_indexing() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    shard
        .upsert((0..500).map(point).collect(), 0)
        .await
        .unwrap();
    // No waiting for the indexer: read-your-writes comes from the exact scan of pending points.
    let hits = shard
        .search(search(vector(42), 1, None, false))
        .await
        .unwrap();
    assert_eq!(hits[0].id, PointId::Num(42));
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    shard.close();
}

/// Exact searches equal a brute-force oracle over `points` (the live points), and graph
/// searches reach recall 0.9, with and without filters.
async fn assert_agrees_with_oracle(shard: &Arc<Shard>, points: &[Point]) {
    let by_id: std::collections::HashMap<u64, &Point> = points
        .iter()
        .map(|p| match p.id {
            PointId::Num(n) => (n, p),
            _ => unreachable!(),
        })
        .collect();
    let filters = [
        None,
        Some(json!({"must":[{"key":"group","match":{"value":"g3"}}]})),
        Some(json!({"must":[{"key":"n","range":{"gte":100,"lt":140}}]})),
        Some(json!({"must_not":[{"key":"group","match":{"any":["g1","g2"]}}]})),
    ];
    for filter in filters {
        let parsed = filter.as_ref().map(|f| Filter::parse(f, "filter").unwrap());
        let mut recall_sum = 0.0;
        for q in 0..20u64 {
            let mut query = vector(10_000 + q);
            normalize(&mut query);
            let mut oracle: Vec<(u64, f32)> = points
                .iter()
                .filter(|p| parsed.as_ref().is_none_or(|f| f.matches(&p.payload)))
                .map(|p| {
                    let mut v = p.vector.clone();
                    normalize(&mut v);
                    (
                        match p.id {
                            PointId::Num(n) => n,
                            _ => unreachable!(),
                        },
                        scoring::dot(&query, &v),
                    )
                })
                .collect();
            oracle.sort_by(|a, b| b.1.total_cmp(&a.1));
            let truth: Vec<u64> = oracle.iter().take(10).map(|x| x.0).collect();
            for exact in [true, false] {
                let hits = shard
                    .search(search(query.clone(), 10, parsed.clone(), exact))
                    .await
                    .unwrap();
                for h in &hits {
                    let PointId::Num(n) = h.id else {
                        unreachable!()
                    };
                    let p = &by_id[&n];
                    assert!(
                        parsed.as_ref().is_none_or(|f| f.matches(&p.payload)),
                        "hit {n} breaks the filter"
                    );
                }
                let ids: Vec<u64> = hits
                    .iter()
                    .map(|h| match h.id {
                        PointId::Num(n) => n,
                        _ => 0,
                    })
                    .collect();
                if exact {
                    assert_eq!(ids, truth, "exact search must equal the oracle");
                } else {
                    recall_sum += ids.iter().filter(|i| truth.contains(i)).count() as f64
                        / truth.len() as f64;
                }
            }
        }
        assert!(
            recall_sum / 20.0 >= 0.9,
            "graph recall {} for {filter:?}",
            recall_sum / 20.0
        );
    }
}

#[tokio::test]
async fn graph_and_exact_plans_agree_with_a_brute_force_oracle_under_filters() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::I8);
    let points: Vec<Point> = (0..3000).map(point).collect();
    shard.upsert(points.clone(), 0).await.unwrap();
    wait_indexed(&shard).await;
    assert_agrees_with_oracle(&shard, &points).await;
    shard.close();
}

#[tokio::test]
async fn last_writer_wins_and_deletes_are_versioned_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    shard.upsert(vec![point(1)], 100).await.unwrap();
    let mut stale = point(1);
    stale.vector = vector(999);
    let outcome = shard.upsert(vec![stale], 50).await.unwrap();
    assert_eq!(outcome.affected, 0, "an older version must not overwrite");
    let got = shard.get(vec![PointId::Num(1)], true, true).await.unwrap();
    assert_eq!(got[0].version, 100);
    let deleted = shard
        .delete(DeleteTarget::Ids(vec![PointId::Num(1)]), 200)
        .await
        .unwrap();
    assert_eq!(deleted.affected, 1);
    let replay = shard.upsert(vec![point(1)], 100).await.unwrap();
    assert_eq!(
        replay.affected, 0,
        "a replayed old write must not resurrect a deleted point"
    );
    assert_eq!(shard.count(None).await.unwrap(), 0);
    shard.close();
}

#[tokio::test]
async fn scroll_pages_through_live_points_in_id_order_with_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    // Inserted out of order, with string ids (after every number) and a deleted point.
    let mut points: Vec<Point> = (0..100).rev().map(point).collect();
    points.push(Point {
        id: PointId::Str("b".into()),
        ..point(1000)
    });
    points.push(Point {
        id: PointId::Str("a".into()),
        ..point(1001)
    });
    shard.upsert(points, 0).await.unwrap();
    shard
        .delete(DeleteTarget::Ids(vec![PointId::Num(5)]), 0)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let page = shard
            .scroll(ScrollRequest {
                offset: offset.clone(),
                limit: 7,
                filter: None,
                with_payload: true,
                with_vector: false,
            })
            .await
            .unwrap();
        assert!(page.points.len() <= 7);
        assert!(page
            .points
            .iter()
            .all(|p| p.payload.is_some() && p.vector.is_none()));
        seen.extend(page.points.into_iter().map(|p| p.id));
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<PointId> = (0..100).filter(|i| *i != 5).map(PointId::Num).collect();
    expected.extend([PointId::Str("a".into()), PointId::Str("b".into())]);
    assert_eq!(seen, expected);

    let page = shard
        .scroll(ScrollRequest {
            offset: Some(PointId::Num(20)),
            limit: 3,
            filter: Some(group_filter("g7")),
            with_payload: false,
            with_vector: true,
        })
        .await
        .unwrap();
    let ids: Vec<PointId> = page.points.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, [27, 37, 47].map(PointId::Num));
    assert_eq!(page.next_offset, Some(PointId::Num(57)));
    assert_eq!(page.points[0].vector.as_ref().map(Vec::len), Some(8));
    let err = shard
        .scroll(ScrollRequest {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit is 0"), "{err}");
    shard.close();
}

#[test]
fn smallest_k_keeps_the_k_smallest_in_order() {
    use super::search::smallest_k;
    assert_eq!(smallest_k([5, 1, 9, 3, 7, 2].into_iter(), 3), vec![1, 2, 3]);
    assert_eq!(smallest_k([5, 1].into_iter(), 3), vec![1, 5]);
    assert!(smallest_k(std::iter::empty::<u8>(), 3).is_empty());
}

#[tokio::test]
async fn delete_by_filter_removes_exactly_the_matching_points() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    shard
        .upsert((0..100).map(point).collect(), 0)
        .await
        .unwrap();
    let f = Filter::parse(
        &json!({"must":[{"key":"group","match":{"value":"g7"}}]}),
        "filter",
    )
    .unwrap();
    let out = shard
        .delete(DeleteTarget::Filter(f.clone()), 0)
        .await
        .unwrap();
    assert_eq!(out.affected, 10);
    assert_eq!(shard.count(Some(f)).await.unwrap(), 0);
    assert_eq!(shard.count(None).await.unwrap(), 90);
    shard.close();
}

#[tokio::test]
async fn reopening_restores_points_tombstones_and_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    {
        let shard = open(dir.path(), Quantization::F16);
        shard
            .upsert((0..300).map(point).collect(), 0)
            .await
            .unwrap();
        shard
            .delete(DeleteTarget::Ids(vec![PointId::Num(7)]), 0)
            .await
            .unwrap();
        shard.close();
    }
    let shard = open(dir.path(), Quantization::F16);
    assert_eq!(shard.count(None).await.unwrap(), 299);
    wait_indexed(&shard).await;
    assert!(shard.is_ready());
    let hits = shard
        .search(search(vector(8), 1, None, false))
        .await
        .unwrap();
    assert_eq!(hits[0].id, PointId::Num(8));
    assert!(shard
        .get(vec![PointId::Num(7)], false, false)
        .await
        .unwrap()
        .is_empty());
    shard.close();
}

#[tokio::test]
async fn a_bad_point_rejects_the_whole_batch_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    let mut bad = point(2);
    bad.vector[3] = f32::NAN;
    let err = shard.upsert(vec![point(1), bad], 0).await.unwrap_err();
    assert!(err.to_string().contains("points[1] (id 2)"), "{err}");
    let mut short = point(3);
    short.vector.pop();
    let err = shard.upsert(vec![short], 0).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("has 7 dimensions, collection \"docs\" expects 8"),
        "{err}"
    );
    assert_eq!(shard.count(None).await.unwrap(), 0);
    let err = shard.upsert(vec![], 0).await.unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    shard.close();
}

#[tokio::test]
async fn reopening_with_another_dimension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), Quantization::F32).close();
    let mut other = config(Quantization::F32);
    other.dimension = 16;
    // sled's background thread may hold the file lock for a moment after close.
    let mut err = String::new();
    for _ in 0..100 {
        err = Shard::open(
            other.clone(),
            ShardOptions::new(dir.path()),
            Arc::new(Metrics::new()),
        )
        .err()
        .expect("opening with another dimension must fail")
        .to_string();
        if !err.contains("could not acquire lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(err.contains("dimension 8"), "{err}");
}

#[tokio::test]
async fn a_delete_filter_without_conditions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    shard.upsert((0..10).map(point).collect(), 0).await.unwrap();
    let err = shard
        .delete(DeleteTarget::Filter(Filter::default()), 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no conditions"), "{err}");
    assert_eq!(shard.count(None).await.unwrap(), 10);
    shard.close();
}

#[tokio::test]
async fn versions_assigned_after_a_restart_stay_above_every_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    // A version from a clock far ahead of this one (e.g. a router whose clock ran fast).
    let future = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 86_400_000)
        << 16;
    {
        let shard = open(dir.path(), Quantization::F32);
        shard.upsert(vec![point(1)], future).await.unwrap();
        shard.close();
    }
    let shard = open(dir.path(), Quantization::F32);
    let mut newer = point(1);
    newer.vector = vector(77);
    let out = shard.upsert(vec![newer], 0).await.unwrap();
    assert_eq!(
        out.affected, 1,
        "a fresh write must win over the stored future version"
    );
    assert!(out.version > future);
    shard.close();
}

#[test]
fn a_batch_is_split_in_order_into_near_equal_runs_one_per_thread() {
    let split = |n: usize, threads: usize| batch_chunks((0..n).collect::<Vec<_>>(), threads);
    assert_eq!(split(5, 2), vec![vec![0, 1, 2], vec![3, 4]]);
    assert_eq!(split(2, 4), vec![vec![0], vec![1]]);
    assert_eq!(split(3, 1), vec![vec![0, 1, 2]]);
    assert_eq!(split(7, 3).concat(), (0..7).collect::<Vec<_>>());
    assert!(split(0, 2).is_empty());
}

/// The saved graph files of a data dir, to copy aside and put back.
const GRAPH_FILES: [&str; 2] = ["graph.usearch", "graph.keys"];

async fn top_hit(shard: &Arc<Shard>, vector: Vec<f32>) -> Option<PointId> {
    let hits = shard.search(search(vector, 1, None, false)).await.unwrap();
    hits.first().map(|h| h.id.clone())
}

/// Opens a shard in `dir`, writes points `0..n` and closes it once they are all in the graph
/// (closing saves the graph); returns the closed shard's metrics.
async fn write_indexed_and_close(
    dir: &std::path::Path,
    quantization: Quantization,
    n: u64,
) -> Arc<Metrics> {
    let shard = open(dir, quantization);
    shard.upsert((0..n).map(point).collect(), 0).await.unwrap();
    wait_indexed(&shard).await;
    shard.close();
    shard.metrics.clone()
}

#[tokio::test]
async fn a_restart_loads_the_saved_graph_instead_of_rebuilding_it() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = write_indexed_and_close(dir.path(), Quantization::I8, 400).await;
    assert_eq!(metrics.graph_points_loaded.get(), 0);
    assert!(metrics.graph_saves.get() >= 1);
    for f in GRAPH_FILES {
        assert!(dir.path().join(f).exists(), "{f} was not saved at close");
    }
    let shard = open(dir.path(), Quantization::I8);
    assert_eq!(shard.graph_points_loaded(), 400);
    assert!(shard.is_ready(), "nothing was left to index");
    assert_eq!(shard.index.len(), 400);
    // The loaded graph answers searches (approximately: HNSW may miss a rare point).
    let mut found = 0;
    for i in 0..400 {
        found += usize::from(top_hit(&shard, vector(i)).await == Some(PointId::Num(i)));
    }
    assert!(
        found >= 396,
        "only {found} of 400 points found through the loaded graph"
    );
    shard.close();
}

#[tokio::test]
async fn a_saved_graph_older_than_the_data_serves_no_replaced_or_deleted_vector() {
    let dir = tempfile::tempdir().unwrap();
    let aside = tempfile::tempdir().unwrap();
    write_indexed_and_close(dir.path(), Quantization::F16, 300).await;
    for f in GRAPH_FILES {
        std::fs::copy(dir.path().join(f), aside.path().join(f)).unwrap();
    }
    let moved = |i: u64| Point {
        vector: vector(i + 1000),
        ..point(i)
    };
    {
        let shard = open(dir.path(), Quantization::F16);
        assert_eq!(shard.graph_points_loaded(), 300);
        shard.upsert((0..50).map(moved).collect(), 0).await.unwrap();
        shard
            .delete(DeleteTarget::Ids((50..60).map(PointId::Num).collect()), 0)
            .await
            .unwrap();
        shard
            .upsert((300..320).map(point).collect(), 0)
            .await
            .unwrap();
        wait_indexed(&shard).await;
        shard.close();
    }
    // As if the last save had been lost (a kill -9 before it): the graph predates the writes.
    for f in GRAPH_FILES {
        std::fs::copy(aside.path().join(f), dir.path().join(f)).unwrap();
    }
    let shard = open(dir.path(), Quantization::F16);
    assert_eq!(
        shard.graph_points_loaded(),
        240,
        "300 saved, 50 replaced, 10 deleted"
    );
    wait_indexed(&shard).await;
    assert_eq!(shard.count(None).await.unwrap(), 310);
    assert_eq!(shard.index.len(), 310);
    for i in 0..50 {
        assert_eq!(
            top_hit(&shard, vector(i + 1000)).await,
            Some(PointId::Num(i))
        );
        // The old vector is gone from the graph: whatever it finds scores as stored now.
        let hits = shard
            .search(search(vector(i), 10, None, false))
            .await
            .unwrap();
        for h in hits {
            let PointId::Num(n) = h.id else {
                unreachable!()
            };
            let now = if n < 50 { vector(n + 1000) } else { vector(n) };
            let mut q = vector(i);
            normalize(&mut q);
            let mut v = now;
            normalize(&mut v);
            assert!((h.score - scoring::dot(&q, &v)).abs() < 5e-3, "{n}");
            assert!(!(50..60).contains(&n), "deleted point {n} returned");
        }
    }
    for i in (60..100).chain(300..320) {
        assert_eq!(top_hit(&shard, vector(i)).await, Some(PointId::Num(i)));
    }
    shard.close();
}

#[tokio::test]
async fn a_damaged_or_mismatched_saved_graph_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    write_indexed_and_close(dir.path(), Quantization::F16, 200).await;
    let graph = dir.path().join("graph.usearch");
    let mut bytes = std::fs::read(&graph).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&graph, &bytes).unwrap();
    {
        let shard = open(dir.path(), Quantization::F16);
        assert_eq!(
            shard.graph_points_loaded(),
            0,
            "a damaged graph file was used"
        );
        wait_indexed(&shard).await;
        assert_eq!(shard.index.len(), 200);
        assert_eq!(top_hit(&shard, vector(17)).await, Some(PointId::Num(17)));
        shard.close(); // saves the rebuilt graph
    }
    // Another quantization: the saved (f16) graph does not fit the collection any more.
    {
        let shard = open(dir.path(), Quantization::I8);
        assert_eq!(shard.graph_points_loaded(), 0);
        wait_indexed(&shard).await;
        assert_eq!(shard.index.len(), 200);
        assert_eq!(top_hit(&shard, vector(17)).await, Some(PointId::Num(17)));
        shard.close();
    }
    let shard = open(dir.path(), Quantization::I8);
    assert_eq!(
        shard.graph_points_loaded(),
        200,
        "the i8 graph was saved at close"
    );
    shard.close();
}

/// Point `i` with another vector (as a replacing write gives it).
fn moved_point(i: u64) -> Point {
    Point {
        vector: vector(i + 5000),
        ..point(i)
    }
}

/// Gives points 0..600 new vectors and deletes 600..900: 900 dead slots against 1,200 live
/// of the 1,500 written, enough to trigger a compaction.
async fn move_and_delete_for_compaction(shard: &Arc<Shard>) {
    shard
        .upsert((0..600).map(moved_point).collect(), 0)
        .await
        .unwrap();
    shard
        .delete(DeleteTarget::Ids((600..900).map(PointId::Num).collect()), 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn compaction_drops_replaced_and_deleted_slots_and_changes_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let open_small = || {
        let mut options = ShardOptions::new(dir.path());
        options.exact_scan_threshold = 50;
        options.compact_min_dead_slots = 100;
        Shard::open(config(Quantization::I8), options, Arc::new(Metrics::new())).unwrap()
    };
    let moved = moved_point;
    let mut live: Vec<Point> = (0..600).map(moved).chain((900..1500).map(point)).collect();
    {
        let shard = open_small();
        shard
            .upsert((0..1500).map(point).collect(), 0)
            .await
            .unwrap();
        wait_indexed(&shard).await;
        move_and_delete_for_compaction(&shard).await;
        wait_indexed(&shard).await;
        // 900 dead slots against 1,200 live: past half, so the indexer compacts once caught up.
        wait_compacted(&shard).await;
        {
            let st = shard.state.read();
            assert_eq!((st.dead_slots(), st.slot_ids.len()), (0, 1200));
        }
        assert_eq!(shard.index.len(), 1200);
        assert_eq!(shard.metrics.slot_compactions.get(), 1);
        assert_eq!(shard.info().dead_slots, 0);
        assert_agrees_with_oracle(&shard, &live).await;
        // Writes after the compaction land in the renumbered state.
        shard
            .upsert((2000..2100).map(point).collect(), 0)
            .await
            .unwrap();
        live.extend((2000..2100).map(point));
        wait_indexed(&shard).await;
        assert_agrees_with_oracle(&shard, &live).await;
        shard.close();
    }
    // The graph saved at close has the new numbering; a restart loads it whole.
    let shard = open_small();
    assert_eq!(shard.graph_points_loaded(), 1300);
    assert_agrees_with_oracle(&shard, &live).await;
    shard.close();
}

/// Options under which keyword values get value graphs from 100 points on (groups hold 10 %
/// each), and scans cost as much as a 384-dimensional collection's would, so that the planner
/// walks graphs at these tests' sizes (8 dimensions make every scan nearly free).
fn value_graph_options(dir: &std::path::Path) -> ShardOptions {
    let mut options = ShardOptions::new(dir);
    options.exact_scan_threshold = 50;
    options.value_graphs.min_points = 100;
    options.cost_model.scan_per_point_dim *= 48.0;
    options.cost_model.scattered_scan_per_point_dim *= 48.0;
    options
}

fn open_with_value_graphs(dir: &std::path::Path) -> Arc<Shard> {
    let options = value_graph_options(dir);
    Shard::open(config(Quantization::I8), options, Arc::new(Metrics::new())).unwrap()
}

/// Waits until the value graphs hold `points` points in all.
async fn wait_value_graphs(shard: &Shard, points: u64) {
    for _ in 0..1000 {
        if shard.info().value_graph_points == points && shard.info().pending_points == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "value graphs hold {} points, expected {points}",
        shard.info().value_graph_points
    );
}

fn plans(shard: &Shard, plan: &'static str) -> u64 {
    shard
        .metrics
        .search_plans
        .get_or_create(&vecshard_core::metrics::PlanLabels { plan })
        .get()
}

fn group_filter(group: &str) -> Filter {
    Filter::parse(
        &json!({"must":[{"key":"group","match":{"value":group}}]}),
        "filter",
    )
    .unwrap()
}

#[tokio::test]
async fn keyword_filters_walk_value_graphs_that_follow_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_with_value_graphs(dir.path());
    let mut live: Vec<Point> = (0..3000).map(point).collect();
    shard.upsert(live.clone(), 0).await.unwrap();
    wait_value_graphs(&shard, 3000).await;
    assert_eq!(shard.info().value_graphs, 10);
    let before = plans(&shard, "value_graph");
    assert_agrees_with_oracle(&shard, &live).await;
    assert!(
        plans(&shard, "value_graph") > before,
        "the group filter took the value-graph plan"
    );

    // Moved, deleted and new points of group g3, searched before the value graphs catch up
    // (the lag is scanned exactly) and after.
    let moved = |i: u64| Point {
        vector: vector(i + 7000),
        ..point(i)
    };
    shard
        .upsert((3..300).step_by(10).map(moved).collect(), 0)
        .await
        .unwrap();
    shard
        .delete(
            DeleteTarget::Ids((303..600).step_by(10).map(PointId::Num).collect()),
            0,
        )
        .await
        .unwrap();
    shard
        .upsert((3003..3300).step_by(10).map(point).collect(), 0)
        .await
        .unwrap();
    live.retain(|p| !matches!(p.id, PointId::Num(n) if n % 10 == 3 && n < 600));
    live.extend((3..300).step_by(10).map(moved));
    live.extend((3003..3300).step_by(10).map(point));
    for probe in [3u64, 13, 3003, 3293] {
        let v = live
            .iter()
            .find(|p| p.id == PointId::Num(probe))
            .unwrap()
            .vector
            .clone();
        let hits = shard
            .search(search(v, 1, Some(group_filter("g3")), false))
            .await
            .unwrap();
        assert_eq!(hits[0].id, PointId::Num(probe), "right after the write");
    }
    let deleted = vector(313);
    let hits = shard
        .search(search(deleted, 50, Some(group_filter("g3")), false))
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.id != PointId::Num(313)));
    wait_value_graphs(&shard, live.len() as u64).await;
    assert_agrees_with_oracle(&shard, &live).await;
    shard.close();
    drop(shard);

    // Value graphs are not saved: a restart builds them again.
    let shard = open_with_value_graphs(dir.path());
    wait_value_graphs(&shard, live.len() as u64).await;
    assert_agrees_with_oracle(&shard, &live).await;
    shard.close();
}

#[tokio::test]
async fn a_disjunction_of_values_merges_their_graphs_and_ranges_refine_them() {
    let dir = tempfile::tempdir().unwrap();
    let shard = open_with_value_graphs(dir.path());
    let points: Vec<Point> = (0..3000).map(point).collect();
    shard.upsert(points.clone(), 0).await.unwrap();
    wait_value_graphs(&shard, 3000).await;
    let filters = [
        json!({"should":[{"key":"group","match":{"value":"g1"}},{"key":"group","match":{"value":"g7"}}]}),
        json!({"must":[{"key":"group","match":{"any":["g2","g5"]}}]}),
        json!({"must":[{"key":"group","match":{"value":"g4"}},{"key":"n","range":{"lt":2000}}]}),
    ];
    for f in filters {
        let filter = Filter::parse(&f, "filter").unwrap();
        let before = plans(&shard, "value_graph");
        let mut recall = 0.0;
        for q in 0..20u64 {
            let mut query = vector(20_000 + q);
            normalize(&mut query);
            let exact = shard
                .search(search(query.clone(), 10, Some(filter.clone()), true))
                .await
                .unwrap();
            let approx = shard
                .search(search(query, 10, Some(filter.clone()), false))
                .await
                .unwrap();
            for h in &approx {
                let PointId::Num(n) = h.id else {
                    unreachable!()
                };
                assert!(filter.matches(&points[n as usize].payload), "{f}: hit {n}");
            }
            recall += approx
                .iter()
                .filter(|h| exact.iter().any(|e| e.id == h.id))
                .count() as f64
                / exact.len() as f64;
        }
        assert!(recall / 20.0 >= 0.9, "{f}: recall {}", recall / 20.0);
        assert_eq!(plans(&shard, "value_graph") - before, 20, "{f}");
    }
    shard.close();
}

#[tokio::test]
async fn compaction_renumbers_the_value_graphs_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = value_graph_options(dir.path());
    options.compact_min_dead_slots = 100;
    options.value_graphs.min_points = 50;
    let shard = Shard::open(config(Quantization::I8), options, Arc::new(Metrics::new())).unwrap();
    shard
        .upsert((0..1500).map(point).collect(), 0)
        .await
        .unwrap();
    wait_value_graphs(&shard, 1500).await;
    move_and_delete_for_compaction(&shard).await;
    let moved = moved_point;
    let live: Vec<Point> = (0..600).map(moved).chain((900..1500).map(point)).collect();
    for _ in 0..500 {
        if shard.metrics.slot_compactions.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shard.metrics.slot_compactions.get(), 1);
    wait_value_graphs(&shard, 1200).await;
    assert_agrees_with_oracle(&shard, &live).await;
    shard.close();
}

/// Partitions of `ids` under the default 256-partition count.
fn partitions_of(ids: impl Iterator<Item = u64>) -> Vec<u32> {
    let mut out: Vec<u32> = ids
        .map(|i| vecshard_proto::shard_map::partition_of(&PointId::Num(i).to_bytes(), 256))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_hides_moving_partitions_fences_old_maps_and_drops_what_left() {
    use vecshard_proto::shard_map::Ownership;
    let dir = tempfile::tempdir().unwrap();
    let shard = open(dir.path(), Quantization::F32);
    shard
        .upsert((0..200).map(point).collect(), 0)
        .await
        .unwrap();
    // Partitions of points 0-99 stay readable; those only 100-199 use become write-only.
    let kept = partitions_of(0..100);
    let all: Vec<u32> = (0..256).collect();
    let moving: Vec<u32> = all.iter().filter(|p| !kept.contains(p)).copied().collect();
    let visible: Vec<u64> = (0..200)
        .filter(|i| kept.contains(&partitions_of(std::iter::once(*i))[0]))
        .collect();
    shard
        .set_ownership(Ownership {
            map_version: 5,
            partitions: 256,
            readable: kept.clone(),
            writable: all.clone(),
        })
        .await
        .unwrap();
    assert_eq!(shard.count(None).await.unwrap(), visible.len() as u64);
    let hits = shard
        .search(search(vector(150), 200, None, true))
        .await
        .unwrap();
    assert_eq!(
        hits.len(),
        visible.len(),
        "hidden points are never candidates"
    );
    let hits = shard
        .search(search(vector(150), 10, None, false))
        .await
        .unwrap();
    assert!(hits
        .iter()
        .all(|h| visible.iter().any(|v| h.id == PointId::Num(*v))));
    let got = shard
        .get((0..200).map(PointId::Num).collect(), false, false)
        .await
        .unwrap();
    assert_eq!(got.len(), visible.len());
    // Requests routed with an older map version are refused; newer (a replica-only map
    // change) and unrouted ones are served.
    assert_eq!(
        shard.check_route(4).unwrap_err().code(),
        "FAILED_PRECONDITION"
    );
    shard.check_route(5).unwrap();
    shard.check_route(6).unwrap();
    shard.check_route(0).unwrap();
    let err = shard
        .upsert_routed(vec![point(300)], 0, 4)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "FAILED_PRECONDITION");
    // Partitions no longer writable are dropped, and writes to them refused.
    let (_, dropped) = shard
        .set_ownership(Ownership {
            map_version: 6,
            partitions: 256,
            readable: kept.clone(),
            writable: kept.clone(),
        })
        .await
        .unwrap();
    assert_eq!(dropped, 200 - visible.len() as u64);
    // The drop runs in the background: the stored records go.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (stats, _) = shard.partition_stats(256).await.unwrap();
        if stats.iter().all(|s| kept.contains(&s.partition)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records of dropped partitions remain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outside = (200..1000)
        .find(|i| moving.contains(&partitions_of(std::iter::once(*i))[0]))
        .unwrap();
    let err = shard
        .upsert_routed(vec![point(outside)], 0, 6)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("point {outside}")),
        "{err}"
    );
    // An older view is refused; the stored one survives a restart, dropped points stay gone.
    assert!(shard
        .set_ownership(Ownership {
            map_version: 5,
            partitions: 256,
            readable: all.clone(),
            writable: all.clone(),
        })
        .await
        .is_err());
    shard.close();
    drop(shard);
    let shard = open(dir.path(), Quantization::F32);
    assert_eq!(shard.ownership().map_version(), 6);
    assert_eq!(shard.count(None).await.unwrap(), visible.len() as u64);
    let (stats, _) = shard.partition_stats(256).await.unwrap();
    assert!(stats.iter().all(|s| kept.contains(&s.partition)));
    shard.close();
}

#[tokio::test]
async fn a_flat_index_keeps_no_graph_answers_every_search_exactly_and_can_switch_to_hnsw() {
    let dir = tempfile::tempdir().unwrap();
    let open_as = |index: IndexKind| {
        // Value graphs and graph walks would be chosen at this size under these options
        // (see `value_graph_options`): a flat shard must use neither.
        let mut options = value_graph_options(dir.path());
        options.compact_min_dead_slots = 100;
        options.index = index;
        Shard::open(config(Quantization::I8), options, Arc::new(Metrics::new())).unwrap()
    };
    let mut live: Vec<Point> = (0..600)
        .map(moved_point)
        .chain((900..1500).map(point))
        .collect();
    {
        let shard = open_as(IndexKind::Flat);
        assert_eq!(shard.index_kind(), IndexKind::Flat);
        shard
            .upsert((0..1500).map(point).collect(), 0)
            .await
            .unwrap();
        // Nothing waits for a graph: ready at once, nothing pending, the graph empty.
        let info = shard.info();
        assert!(info.ready);
        assert_eq!((info.pending_points, info.points), (0, 1500));
        assert_eq!(shard.index.len(), 0);
        move_and_delete_for_compaction(&shard).await;
        // Compaction still reclaims replaced and deleted slots.
        wait_compacted(&shard).await;
        assert_eq!(shard.state.read().slot_ids.len(), 1200);
        assert_eq!(shard.metrics.slot_compactions.get(), 1);
        // Approximate requests too get the oracle's answer (recall 1.0, checked inside as
        // exact for `exact: true`; here every id of every request is compared).
        assert_agrees_with_oracle(&shard, &live).await;
        let q = search(vector(77_777), 10, Some(group_filter("g3")), false);
        let approximate = shard.search(q.clone()).await.unwrap();
        let exact = shard
            .search(SearchRequest { exact: true, ..q })
            .await
            .unwrap();
        assert_eq!(
            approximate.iter().map(|h| &h.id).collect::<Vec<_>>(),
            exact.iter().map(|h| &h.id).collect::<Vec<_>>()
        );
        assert_eq!(plans(&shard, "graph"), 0);
        assert_eq!(plans(&shard, "value_graph"), 0);
        assert!(plans(&shard, "exact") > 0);
        assert_eq!(shard.info().value_graphs, 0);
        shard.close();
    }
    assert!(
        !dir.path().join("graph.usearch").exists(),
        "a flat shard saves no graph"
    );
    // The same data dir as hnsw: the graph is built from the stored points.
    {
        let shard = open_as(IndexKind::Hnsw);
        shard
            .upsert((2000..2100).map(point).collect(), 0)
            .await
            .unwrap();
        live.extend((2000..2100).map(point));
        wait_indexed(&shard).await;
        assert_eq!(shard.index.len(), 1300);
        assert_agrees_with_oracle(&shard, &live).await;
        shard.close();
    }
    // And back to flat: the saved graph is left alone, and answers stay exact.
    let shard = open_as(IndexKind::Flat);
    assert_eq!((shard.index.len(), shard.info().pending_points), (0, 0));
    assert_agrees_with_oracle(&shard, &live).await;
    shard.close();
}
