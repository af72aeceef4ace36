//! Exact scoring, top-k selection and the budget of a graph walk (the choice of plan is
//! `planner.rs`).
//! Pure functions: no I/O, no locks.

use vecshard_core::model::Metric;

/// The inner product, defined in core so that the tools' exact ground truth scores as the
/// shard does.
pub use vecshard_core::model::dot;

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The score users see: similarity for cosine (vectors are unit length) and dot, Euclidean
/// distance for l2.
pub fn score(metric: Metric, query: &[f32], vector: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => dot(query, vector),
        Metric::L2 => l2_squared(query, vector).sqrt(),
    }
}

/// `score` against a vector kept as f16 (see `vectors::Precision`).
pub fn score_f16(metric: Metric, query: &[f32], vector: &[half::f16]) -> f32 {
    use crate::shard::f16_kernels::{dot_f16, l2_squared_f16};
    match metric {
        Metric::Cosine | Metric::Dot => dot_f16(query, vector),
        Metric::L2 => l2_squared_f16(query, vector).sqrt(),
    }
}

/// Orders two scores best first under the metric; ties broken by key so results are stable.
pub fn better(metric: Metric, a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    let by_score = if metric.higher_is_better() {
        b.1.total_cmp(&a.1)
    } else {
        a.1.total_cmp(&b.1)
    };
    by_score.then(a.0.cmp(&b.0))
}

/// The best `k` of the scored candidates, best first.
pub fn top_k(metric: Metric, mut scored: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, |a, b| better(metric, a, b));
        scored.truncate(k);
    }
    scored.sort_unstable_by(|a, b| better(metric, a, b));
    scored
}

/// The best `k` of the scored candidates, best first, plus every other candidate within
/// `slack` of the k-th score: when scores are approximate by up to `slack / 2`, the true
/// best `k` are among these.
pub fn near_top_k(
    metric: Metric,
    mut scored: Vec<(u32, f32)>,
    k: usize,
    slack: f32,
) -> Vec<(u32, f32)> {
    if k == 0 || scored.len() <= k {
        return top_k(metric, scored, k);
    }
    scored.select_nth_unstable_by(k - 1, |a, b| better(metric, a, b));
    let kth = scored[k - 1].1;
    // Keeps the best k too: none is worse than the k-th.
    scored.retain(|&(_, score)| {
        if metric.higher_is_better() {
            score >= kth - slack
        } else {
            score <= kth + slack
        }
    });
    scored.sort_unstable_by(|a, b| better(metric, a, b));
    scored
}

/// How wide a graph search walks and how many of its best candidates are rescored exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphBudget {
    /// Candidates asked of the graph; this is also the walk's breadth (ef).
    pub breadth: usize,
    /// The graph's best candidates (by quantized distance) rescored with full-precision
    /// vectors. Rescoring reads a full vector from memory per candidate, the dominant cost of
    /// a search, so only as many as the quantization's ranking error needs are rescored.
    pub rescore: usize,
}

/// Budget for a graph search: at least the requested breadth, wide enough to rescore, and
/// widened for selective filters (the walk rejects non-matching nodes).
pub fn graph_budget(limit: usize, ef: usize, oversample: usize, selectivity: f64) -> GraphBudget {
    let rescore = limit * oversample;
    let widen = if selectivity < 0.5 {
        (0.5 / selectivity.max(0.01)).sqrt()
    } else {
        1.0
    };
    let breadth = ((ef.max(rescore) as f64) * widen).ceil() as usize;
    GraphBudget { breadth, rescore }
}

/// Rescores the first `budget.rescore` graph candidates (given best first) exactly, and
/// returns the best `limit`.
pub fn rescore(
    metric: Metric,
    candidates: impl Iterator<Item = u32>,
    extra: impl Iterator<Item = u32>,
    budget: GraphBudget,
    limit: usize,
    score_of: impl Fn(u32) -> f32,
) -> Vec<(u32, f32)> {
    let scored = candidates
        .take(budget.rescore)
        .chain(extra)
        .map(|s| (s, score_of(s)))
        .collect();
    top_k(metric, scored, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_friendly_kernels_match_the_naive_formulas() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.25 - 2.0).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.5 - i as f32 * 0.125).collect();
        let naive_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let naive_l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((dot(&a, &b) - naive_dot).abs() < 1e-4);
        assert!((l2_squared(&a, &b) - naive_l2).abs() < 1e-4);
    }

    #[test]
    fn top_k_orders_by_metric_direction() {
        let scored = vec![(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.7)];
        let ids = |v: Vec<(u32, f32)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(ids(top_k(Metric::Cosine, scored.clone(), 2)), vec![2, 4]);
        assert_eq!(ids(top_k(Metric::L2, scored, 2)), vec![3, 1]);
    }

    #[test]
    fn near_top_k_keeps_every_candidate_within_the_slack_of_the_kth() {
        let scored = vec![(1, 0.90), (2, 0.80), (3, 0.799), (4, 0.70), (5, 0.805)];
        let ids = |v: Vec<(u32, f32)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            ids(near_top_k(Metric::Cosine, scored.clone(), 2, 0.01)),
            vec![1, 5, 2, 3]
        );
        assert_eq!(
            ids(near_top_k(Metric::Cosine, scored.clone(), 2, 0.0)),
            vec![1, 5]
        );
        let distances = vec![(1, 1.0), (2, 2.0), (3, 2.005), (4, 3.0)];
        assert_eq!(
            ids(near_top_k(Metric::L2, distances, 2, 0.01)),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn selective_filters_widen_the_graph_walk() {
        assert!(graph_budget(10, 64, 2, 0.05).breadth > graph_budget(10, 64, 2, 1.0).breadth);
        assert_eq!(
            graph_budget(10, 16, 8, 1.0),
            GraphBudget {
                breadth: 80,
                rescore: 80
            }
        );
        assert_eq!(
            graph_budget(10, 64, 2, 1.0),
            GraphBudget {
                breadth: 64,
                rescore: 20
            }
        );
    }
}
