//! The host side of a selection: how far device scores may be from the CPU's, and which
//! candidates of a query's segments must be rescored so that the result equals the CPU exact
//! plan's. Pure functions: no device, no I/O.

use crate::kernel::{Element, KeyKind, SegmentBest};

/// What one query's segments give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Picked {
    /// Every slot whose key is within the margin of the k-th best key: a superset of what the
    /// CPU exact plan keeps, to be scored on the CPU.
    Complete(Vec<u32>),
    /// Some segment kept too few candidates to be sure (a crowd of near-ties): select again
    /// with more per segment, or scan on the CPU.
    Incomplete,
}

/// Candidates of `segments` (one query) within `margin` of the k-th best key. Incomplete when
/// a segment that left slots out kept its last one within the margin: a slot left out could
/// then belong to the answer.
pub fn pick(segments: &[SegmentBest], k: usize, margin: f32) -> Picked {
    let mut found: Vec<(f32, u32)> = segments
        .iter()
        .flat_map(|s| s.found.iter().copied())
        .collect();
    if found.is_empty() || k == 0 {
        return Picked::Complete(Vec::new());
    }
    found.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let kth = found[k.min(found.len()) - 1].0;
    let threshold = kth - margin;
    let unsure = segments
        .iter()
        .filter(|s| s.truncated())
        .any(|s| s.found.last().is_some_and(|(key, _)| *key >= threshold));
    if unsure {
        return Picked::Incomplete;
    }
    Picked::Complete(
        found
            .into_iter()
            .take_while(|(key, _)| *key >= threshold)
            .map(|(_, slot)| slot)
            .collect(),
    )
}

/// How far a device key may be from the key the CPU computes for the same slot: the query's
/// rounding to the element type (f16: 2^-11 relative per component, so at most 2^-11·|q|·|v|
/// by Cauchy–Schwarz) plus the f32 accumulation of both sums (`dimension` · 2^-24 · |q|·|v|
/// each), doubled for safety. For l2 the device expands |q|² + |v|² − 2q·v, whose
/// cancellation error scales with (|q| + |v|)².
pub fn key_error(
    element: Element,
    key: KeyKind,
    dimension: usize,
    query_norm: f32,
    max_vector_norm: f32,
) -> f32 {
    const F16_ROUNDING: f32 = 1.0 / 2048.0;
    const F32_EPS: f32 = 1.0 / 16_777_216.0;
    let accumulation = 2.0 * dimension as f32 * F32_EPS;
    let rounding = match element {
        Element::F16 => F16_ROUNDING,
        Element::F32 => 0.0,
    };
    let scale = match key {
        KeyKind::Dot => query_norm * max_vector_norm,
        KeyKind::NegL2Squared => {
            let s = query_norm + max_vector_norm;
            2.0 * s * s
        }
    };
    2.0 * (rounding + accumulation) * scale
}

/// The margin for `pick`: the slack the CPU plan keeps around its k-th score (`cpu_slack`,
/// in key units) plus the device error on both sides (the k-th key and the candidate's).
pub fn margin(cpu_slack: f32, key_error: f32) -> f32 {
    cpu_slack + 2.0 * key_error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(found: &[(f32, u32)], allowed: u32) -> SegmentBest {
        SegmentBest {
            found: found.to_vec(),
            allowed,
        }
    }

    #[test]
    fn keeps_everything_within_the_margin_of_the_kth_best_across_segments() {
        let segments = [
            seg(&[(0.9, 1), (0.5, 2)], 2),
            seg(&[(0.8, 10), (0.79, 11), (0.1, 12)], 3),
        ];
        assert_eq!(pick(&segments, 2, 0.0), Picked::Complete(vec![1, 10]));
        assert_eq!(pick(&segments, 2, 0.02), Picked::Complete(vec![1, 10, 11]));
        assert_eq!(
            pick(&segments, 10, 0.0),
            Picked::Complete(vec![1, 10, 11, 2, 12])
        );
    }

    #[test]
    fn equal_keys_order_by_slot_and_all_ties_of_the_kth_are_kept() {
        let segments = [seg(&[(0.5, 7), (0.5, 3)], 2), seg(&[(0.5, 5)], 1)];
        assert_eq!(pick(&segments, 1, 0.0), Picked::Complete(vec![3, 5, 7]));
    }

    #[test]
    fn a_truncated_segment_whose_last_kept_key_is_near_the_kth_is_incomplete() {
        // Segment 1 held 50 allowed slots and kept 2; its last (0.79) is within 0.02 of the
        // 2nd best (0.8): a slot it left out could score 0.79 too.
        let segments = [seg(&[(0.9, 1)], 1), seg(&[(0.8, 10), (0.79, 11)], 50)];
        assert_eq!(pick(&segments, 2, 0.02), Picked::Incomplete);
        // Far from it, nothing left out can matter.
        assert_eq!(pick(&segments, 2, 0.001), Picked::Complete(vec![1, 10]));
        // Fewer found than asked while a segment left slots out: incomplete.
        assert_eq!(pick(&segments, 5, 0.0), Picked::Incomplete);
    }

    #[test]
    fn empty_segments_give_no_candidates() {
        assert_eq!(pick(&[seg(&[], 0)], 3, 0.1), Picked::Complete(vec![]));
    }

    #[test]
    fn errors_scale_with_precision_and_norms() {
        let f16 = key_error(Element::F16, KeyKind::Dot, 384, 1.0, 1.0);
        let f32 = key_error(Element::F32, KeyKind::Dot, 384, 1.0, 1.0);
        assert!(f16 > 9e-4 && f16 < 2e-3, "{f16}");
        assert!(f32 < 1e-4 && f32 > 0.0, "{f32}");
        assert!(key_error(Element::F32, KeyKind::Dot, 384, 10.0, 10.0) > 99.0 * f32);
        assert!(key_error(Element::F32, KeyKind::NegL2Squared, 384, 1.0, 1.0) > f32);
        assert_eq!(margin(0.004, 0.001), 0.006);
    }
}
