//! The search planner: how a search finds its candidates, chosen by estimated cost. The
//! filter has already been evaluated to the exact set of matching points, so every estimate
//! works from exact cardinalities: the matching count, and for each value graph that could
//! answer the filter, how many of its points the filter allows. Pure functions: no I/O.
//!
//! The constants of `CostModel` come from `examples/filter_sweep.rs` (docs/benchmarks.md,
//! "Filtered search: planner calibration"): only their ratios matter, as every plan's cost is
//! estimated in the same unit.

/// How a search finds its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Score every matching point exactly: asked for, few points match, or a scan is cheaper
    /// than any walk. The result is exact.
    Exact,
    /// Walk the full HNSW graph (with the filter as a predicate, if any), then rescore.
    Graph,
    /// Walk the graphs of the filter's keyword values (`value_graphs.rs`), scan the matching
    /// points they do not hold yet, then rescore.
    ValueGraphs,
}

impl Plan {
    /// The plan's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Exact => "exact",
            Plan::Graph => "graph",
            Plan::ValueGraphs => "value_graph",
        }
    }
}

/// Estimated costs of the plans, in microseconds of one core on the calibration machine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Scoring one point exactly, per dimension (in-memory f16 or f32 copies), when the
    /// points scanned sit in neighbouring slots (memory is read in order)...
    pub scan_per_point_dim: f64,
    /// ...and when they are scattered through the shard (each vector a separate load, only
    /// partly hidden by prefetching).
    pub scattered_scan_per_point_dim: f64,
    /// A graph walk per unit of breadth, per dimension, on a graph of 1,000 points, at
    /// breadth 64...
    pub walk_per_breadth_dim: f64,
    /// ...and how the cost grows with breadth: `(breadth / 64)^breadth_exponent` (a broader
    /// beam revisits more of what it has already measured).
    pub breadth_exponent: f64,
    /// How much more a walk costs each time the graph doubles in size (a share of
    /// `walk_per_breadth_dim`).
    pub walk_growth_per_doubling: f64,
    /// A walk with a predicate that accepts a share `s` of the graph costs `s^-exponent`
    /// times the walk without one: it keeps measuring rejected nodes, and its search radius
    /// tightens only on accepted ones.
    pub predicate_exponent: f64,
    /// An exact plan is chosen while it costs at most this many times the cheapest
    /// approximate one: exact answers are worth some CPU.
    pub exact_preference: f64,
}

impl Default for CostModel {
    /// Calibrated on wordnet-minilm-384 (i8 graph, M 16, f16 copies), see the module docs.
    fn default() -> Self {
        CostModel {
            scan_per_point_dim: 0.035 / 384.0,
            scattered_scan_per_point_dim: 0.06 / 384.0,
            walk_per_breadth_dim: 0.55 / 384.0,
            breadth_exponent: 0.84,
            walk_growth_per_doubling: 0.5,
            predicate_exponent: 1.3,
            exact_preference: 1.2,
        }
    }
}

/// A value graph that could answer the search: its size and how many of its points the
/// filter allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphPart {
    pub members: u64,
    pub allowed: u64,
}

/// What the planner knows about one search.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInput {
    pub exact_requested: bool,
    pub dimension: usize,
    /// Points the filter matches (all live points without a filter).
    pub matching: u64,
    /// Slots from the first matching one to the last: `matching / span` is how densely the
    /// matches sit in memory, which sets the cost of scanning them.
    pub matching_span: u64,
    /// Points in the shard.
    pub live: u64,
    /// Breadth of a walk of the full graph.
    pub graph_breadth: usize,
    /// Breadth of a walk of one value graph.
    pub value_graph_breadth: usize,
    /// Filters matching at most this many points are always scanned.
    pub exact_scan_threshold: u64,
    /// Value graphs whose points, with `lag`, hold every match; `None`: no such cover.
    pub cover: Option<(Vec<GraphPart>, u64)>,
}

/// The chosen plan and the estimated cost of each candidate plan (µs), for logs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub plan: Plan,
    pub exact_cost: f64,
    pub graph_cost: f64,
    pub value_graph_cost: Option<f64>,
}

impl CostModel {
    /// Scanning `points` spread over `span` slots (`span == points`: neighbours).
    pub fn scan(&self, points: u64, span: u64, dimension: usize) -> f64 {
        let density = if span == 0 {
            1.0
        } else {
            (points as f64 / span as f64).min(1.0)
        };
        let per_dim =
            self.scan_per_point_dim * density + self.scattered_scan_per_point_dim * (1.0 - density);
        points as f64 * per_dim * dimension as f64
    }

    /// A walk of `breadth` on a graph of `size` points with a predicate accepting `allowed`.
    pub fn walk(&self, size: u64, allowed: u64, breadth: usize, dimension: usize) -> f64 {
        if size == 0 || allowed == 0 {
            return 0.0;
        }
        let doublings = (size as f64 / 1000.0).log2().max(0.0);
        let base = 64.0
            * (breadth as f64 / 64.0).powf(self.breadth_exponent)
            * self.walk_per_breadth_dim
            * dimension as f64
            * (1.0 + self.walk_growth_per_doubling * doublings);
        let share = (allowed as f64 / size as f64).min(1.0);
        base * share.powf(-self.predicate_exponent)
    }

    pub fn choose(&self, input: &PlanInput) -> Choice {
        let exact_cost = self.scan(input.matching, input.matching_span, input.dimension);
        let graph_cost = self.walk(
            input.live,
            input.matching,
            input.graph_breadth,
            input.dimension,
        );
        let value_graph_cost = input.cover.as_ref().map(|(parts, lag)| {
            parts
                .iter()
                .map(|p| {
                    self.walk(
                        p.members,
                        p.allowed,
                        input.value_graph_breadth,
                        input.dimension,
                    )
                })
                .sum::<f64>()
                // Points the graphs lack are recent writes, in neighbouring slots.
                + self.scan(*lag, *lag, input.dimension)
        });
        let plan = if input.exact_requested || input.matching <= input.exact_scan_threshold {
            Plan::Exact
        } else {
            let (approximate, cost) = match value_graph_cost {
                Some(v) if v < graph_cost => (Plan::ValueGraphs, v),
                _ => (Plan::Graph, graph_cost),
            };
            if exact_cost <= cost * self.exact_preference {
                Plan::Exact
            } else {
                approximate
            }
        };
        Choice {
            plan,
            exact_cost,
            graph_cost,
            value_graph_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(matching: u64, cover: Option<(Vec<GraphPart>, u64)>) -> PlanInput {
        PlanInput {
            exact_requested: false,
            dimension: 384,
            matching,
            matching_span: matching,
            live: 116_659,
            graph_breadth: 64,
            value_graph_breadth: 64,
            exact_scan_threshold: 1_000,
            cover,
        }
    }

    fn part(members: u64, allowed: u64) -> Option<(Vec<GraphPart>, u64)> {
        Some((vec![GraphPart { members, allowed }], 0))
    }

    #[test]
    fn unfiltered_searches_walk_the_graph_and_tiny_shards_are_scanned() {
        let m = CostModel::default();
        assert_eq!(m.choose(&input(116_659, None)).plan, Plan::Graph);
        let tiny = PlanInput {
            live: 900,
            ..input(900, None)
        };
        assert_eq!(m.choose(&tiny).plan, Plan::Exact);
    }

    #[test]
    fn exact_is_kept_when_asked_for_or_under_the_threshold() {
        let m = CostModel::default();
        let asked = PlanInput {
            exact_requested: true,
            ..input(116_659, None)
        };
        assert_eq!(m.choose(&asked).plan, Plan::Exact);
        assert_eq!(
            m.choose(&input(1_000, part(1_000, 1_000))).plan,
            Plan::Exact
        );
    }

    #[test]
    fn a_few_percent_without_a_value_graph_is_scanned_not_walked() {
        // The cliff of issue 19: 6 % of the points, no value graph. The filtered walk costs
        // tens of times the scan.
        let m = CostModel::default();
        let c = m.choose(&input(7_472, None));
        assert_eq!(c.plan, Plan::Exact);
        assert!(c.graph_cost > 5.0 * c.exact_cost, "{c:?}");
    }

    #[test]
    fn a_value_graph_beats_both_the_scan_and_the_filtered_walk() {
        let m = CostModel::default();
        for n in [3_000u64, 7_472, 14_288, 40_000] {
            let c = m.choose(&input(n, part(n, n)));
            assert_eq!(c.plan, Plan::ValueGraphs, "{n}: {c:?}");
        }
    }

    #[test]
    fn a_value_graph_far_behind_is_not_worth_walking() {
        let m = CostModel::default();
        // The graph holds 500 of 7,472 matches (it is being built): scanning the rest costs
        // as much as scanning everything.
        let c = m.choose(&input(
            7_472,
            Some((
                vec![GraphPart {
                    members: 500,
                    allowed: 500,
                }],
                6_972,
            )),
        ));
        assert_eq!(c.plan, Plan::Exact, "{c:?}");
    }

    #[test]
    fn broad_filters_walk_the_full_graph() {
        let m = CostModel::default();
        assert_eq!(m.choose(&input(80_000, None)).plan, Plan::Graph);
    }

    #[test]
    fn costs_grow_with_points_breadth_and_selectivity() {
        let m = CostModel::default();
        assert!(m.scan(2_000, 2_000, 384) > m.scan(1_000, 1_000, 384));
        assert!(m.scan(1_000, 100_000, 384) > 1.5 * m.scan(1_000, 1_000, 384));
        assert!(m.walk(100_000, 100_000, 64, 384) > m.walk(1_000, 1_000, 64, 384));
        assert!(m.walk(10_000, 10_000, 128, 384) > m.walk(10_000, 10_000, 64, 384));
        assert!(m.walk(10_000, 1_000, 64, 384) > 10.0 * m.walk(10_000, 10_000, 64, 384));
        assert_eq!(m.walk(10_000, 0, 64, 384), 0.0);
    }
}
