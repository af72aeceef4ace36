//! Dot product and squared distance between an f32 query and an f16 vector, the inner loop
//! of rescoring and exact scans over f16 copies (see `vectors::Precision`).
//!
//! On x86-64 with AVX2, FMA and F16C (every x86 server CPU since 2013) a fused kernel converts
//! 16 halves per step in registers and multiplies them in place; elsewhere the halves are
//! converted in stack-sized pieces and the portable f32 kernels do the arithmetic. The fused
//! kernel and `prefetch` are the only unsafe code in the shard: `std::arch` loads take raw
//! pointers, and a function compiled for those CPU features may only be called once they are
//! detected.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::shard::scoring::{dot, l2_squared};

pub fn dot_f16(query: &[f32], vector: &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::supported() {
        return x86::fused(query, vector, x86::Kind::Dot);
    }
    portable(query, vector, dot)
}

pub fn l2_squared_f16(query: &[f32], vector: &[f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if x86::supported() {
        return x86::fused(query, vector, x86::Kind::L2);
    }
    portable(query, vector, l2_squared)
}

/// Asks the CPU to start loading every cache line of `data` (a hint: no fault, no effect on
/// results). An exact scan over points spread through memory waits on each vector's load
/// (measured: ~4× slower than over neighbouring slots); issuing the next vectors' loads while
/// one is scored hides most of that wait.
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch(data);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

fn portable(query: &[f32], vector: &[f16], kernel: fn(&[f32], &[f32]) -> f32) -> f32 {
    let mut buf = [0.0f32; 256];
    query
        .chunks(buf.len())
        .zip(vector.chunks(buf.len()))
        .map(|(q, v)| {
            let b = &mut buf[..v.len()];
            v.convert_to_f32_slice(b);
            kernel(q, b)
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;
    use half::slice::HalfFloatSliceExt;

    #[derive(Clone, Copy)]
    pub enum Kind {
        Dot,
        L2,
    }

    pub fn prefetch<T>(data: &[T]) {
        let start = data.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(data);
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults and reads nothing architecturally; the address
            // is within `data` (SSE, which `_mm_prefetch` needs, is part of x86-64).
            unsafe { _mm_prefetch(start.wrapping_add(offset), _MM_HINT_T0) };
        }
    }

    pub fn supported() -> bool {
        // The macro caches the CPUID result; each call is an atomic load.
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    pub fn fused(query: &[f32], vector: &[f16], kind: Kind) -> f32 {
        debug_assert!(supported());
        // SAFETY: callers check `supported()` first, so the CPU has every feature the kernel
        // was compiled for.
        unsafe { kernel(query, vector.reinterpret_cast(), kind) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn kernel(query: &[f32], halves: &[u16], kind: Kind) -> f32 {
        let n = query.len().min(halves.len());
        let (q, h) = (query.as_ptr(), halves.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (lane, acc) in acc.iter_mut().enumerate() {
                let at = i + lane * 8;
                // SAFETY: `at + 8 <= n`, and `n` is within both slices; unaligned loads.
                let (x, y) = unsafe {
                    (
                        _mm256_loadu_ps(q.add(at)),
                        _mm256_cvtph_ps(_mm_loadu_si128(h.add(at).cast::<__m128i>())),
                    )
                };
                *acc = match kind {
                    Kind::Dot => _mm256_fmadd_ps(x, y, *acc),
                    Kind::L2 => {
                        let d = _mm256_sub_ps(x, y);
                        _mm256_fmadd_ps(d, d, *acc)
                    }
                };
            }
            i += 16;
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` has room for eight f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(acc[0], acc[1])) };
        let tail = query[i..n].iter().zip(&halves[i..n]).map(|(x, y)| {
            let y = f16::from_bits(*y).to_f32();
            match kind {
                Kind::Dot => x * y,
                Kind::L2 => (x - y) * (x - y),
            }
        });
        lanes.iter().sum::<f32>() + tail.sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_portable_kernels_agree_with_f32_arithmetic() {
        // Lengths around the 16-wide steps and the 256-wide portable pieces.
        for n in [1, 7, 15, 16, 17, 33, 384, 500] {
            let q: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let v: Vec<f16> = (0..n)
                .map(|i| f16::from_f32((i as f32 * 0.11).cos()))
                .collect();
            let vf: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
            let (want_dot, want_l2) = (dot(&q, &vf), l2_squared(&q, &vf));
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
            assert!(close(dot_f16(&q, &v), want_dot), "dot, n = {n}");
            assert!(close(l2_squared_f16(&q, &v), want_l2), "l2, n = {n}");
            assert!(
                close(portable(&q, &v, dot), want_dot),
                "portable dot, n = {n}"
            );
            assert!(
                close(portable(&q, &v, l2_squared), want_l2),
                "portable l2, n = {n}"
            );
        }
    }
}
