//! The host side over the CPU stand-in: candidates cover the CPU exact answer for every
//! metric and mask, near-ties take the second pass or fall back, writes and compactions are
//! seen in order, concurrent searches share batches, and the copy turns itself off clearly.

use super::*;
use crate::cpu::CpuStandIn;
use half::f16;
use std::sync::Arc;

fn unit(seed: u64, d: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..d)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

/// What the CPU exact plan scores: the f32 query against the copy (f16-rounded or f32).
fn cpu_score(key: KeyKind, element: Element, q: &[f32], v: &[f32]) -> f32 {
    let v: Vec<f32> = match element {
        Element::F16 => v.iter().map(|x| f16::from_f32(*x).to_f32()).collect(),
        Element::F32 => v.to_vec(),
    };
    match key {
        KeyKind::Dot => q.iter().zip(&v).map(|(a, b)| a * b).sum(),
        KeyKind::NegL2Squared => -q
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>(),
    }
}

fn best_k(mut scored: Vec<(u32, f32)>, k: usize) -> Vec<u32> {
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().take(k).map(|(s, _)| s).collect()
}

fn copy(element: Element, key: KeyKind, segment_len: usize, options: DeviceOptions) -> DeviceCopy {
    DeviceCopy::start(
        Box::new(CpuStandIn::new(16, element, segment_len)),
        key,
        options,
        None,
    )
    .expect("device thread starts")
}

#[test]
fn candidates_hold_the_cpu_exact_answer_for_every_metric_and_mask() {
    let d = 16;
    let vectors: Vec<Vec<f32>> = (0..700)
        .map(|i| {
            let mut v = unit(i, d);
            // Dot and l2 vectors of varied length.
            v.iter_mut().for_each(|x| *x *= 1.0 + (i % 7) as f32);
            v
        })
        .collect();
    for (element, key) in [
        (Element::F16, KeyKind::Dot),
        (Element::F32, KeyKind::Dot),
        (Element::F32, KeyKind::NegL2Squared),
    ] {
        let dev = copy(element, key, 64, DeviceOptions::default());
        for v in &vectors {
            dev.stage(v);
        }
        let masks = [
            Arc::new(Mask::All),
            Arc::new(Mask::of_slots((0..700).filter(|s| s % 3 == 0), 700)),
            Arc::new(Mask::of_slots([5u32, 6, 650].into_iter(), 700)),
        ];
        let queries: Vec<DeviceQuery> = (0..30)
            .map(|i| DeviceQuery {
                vector: unit(10_000 + i, d),
                mask: masks[i as usize % 3].clone(),
                k: [1, 10, 40][i as usize % 3],
                cpu_slack: 0.0,
            })
            .collect();
        let answers = dev.select(queries.clone());
        assert_eq!(dev.slots(), 700);
        for (q, answer) in queries.iter().zip(answers) {
            let candidates = answer.expect("complete");
            let rescored: Vec<(u32, f32)> = candidates
                .iter()
                .map(|&s| (s, cpu_score(key, element, &q.vector, &vectors[s as usize])))
                .collect();
            let all: Vec<(u32, f32)> = (0..700u32)
                .filter(|s| q.mask.allows(*s))
                .map(|s| (s, cpu_score(key, element, &q.vector, &vectors[s as usize])))
                .collect();
            assert!(
                candidates.iter().all(|s| q.mask.allows(*s)),
                "{element:?} {key:?}"
            );
            assert_eq!(
                best_k(rescored, q.k),
                best_k(all, q.k),
                "{element:?} {key:?} k {}",
                q.k
            );
        }
    }
}

#[test]
fn a_crowd_of_ties_takes_the_longer_lists_or_falls_back_to_the_cpu() {
    let d = 16;
    let same = unit(1, d);
    // 100 identical vectors in one segment of 1,000: k 10 keeps 18 per segment at first.
    let dev = copy(Element::F32, KeyKind::Dot, 1000, DeviceOptions::default());
    for i in 0..1000 {
        dev.stage(&if i < 100 {
            same.clone()
        } else {
            unit(i + 7, d)
        });
    }
    let q = |k| DeviceQuery {
        vector: same.clone(),
        mask: Arc::new(Mask::All),
        k,
        cpu_slack: 0.0,
    };
    let answers = dev.select(vec![q(10)]);
    let slots = answers[0]
        .clone()
        .expect("the second pass keeps 128 per segment");
    assert_eq!(slots.len(), 100, "every tie is a candidate");
    // 200 ties: more than the kernel's lists hold.
    let dev = copy(Element::F32, KeyKind::Dot, 1000, DeviceOptions::default());
    for _ in 0..300 {
        dev.stage(&same);
    }
    assert_eq!(dev.select(vec![q(10)])[0], Err(DeviceError::Incomplete));
}

#[test]
fn appends_and_compactions_are_seen_in_order() {
    let d = 16;
    let dev = copy(Element::F32, KeyKind::Dot, 8, DeviceOptions::default());
    for i in 0..20 {
        dev.stage(&unit(i, d));
    }
    let probe = |v: Vec<f32>| DeviceQuery {
        vector: v,
        mask: Arc::new(Mask::All),
        k: 1,
        cpu_slack: 0.0,
    };
    assert_eq!(dev.select(vec![probe(unit(13, d))])[0], Ok(vec![13]));
    // Slots 0..10 dropped: old slot 13 is now 3.
    dev.compact((10..20).collect());
    assert_eq!(dev.slots(), 10);
    assert_eq!(dev.select(vec![probe(unit(13, d))])[0], Ok(vec![3]));
    dev.stage(&unit(99, d));
    assert_eq!(dev.select(vec![probe(unit(99, d))])[0], Ok(vec![10]));
}

/// The stand-in, recording the size of every batch it is given.
struct Recording {
    inner: CpuStandIn,
    batches: Arc<parking_lot::Mutex<Vec<usize>>>,
}

impl ExactKernel for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn element(&self) -> Element {
        self.inner.element()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn memory_bytes(&self) -> u64 {
        self.inner.memory_bytes()
    }
    fn append(&mut self, vectors: &[f32]) -> Result<(), KernelError> {
        self.inner.append(vectors)
    }
    fn compact(&mut self, keep: &[u32]) -> Result<(), KernelError> {
        self.inner.compact(keep)
    }
    fn segment_count(&self, queries: usize) -> usize {
        self.inner.segment_count(queries)
    }
    fn select(&mut self, batch: &SelectBatch<'_>) -> Result<Vec<kernel::SegmentBest>, KernelError> {
        self.batches.lock().push(batch.mask_of_query.len());
        std::thread::sleep(Duration::from_millis(5));
        self.inner.select(batch)
    }
}

use crate::kernel;

#[test]
fn concurrent_searches_share_batches_and_batches_respect_the_maximum() {
    let d = 16;
    let batches = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let dev = Arc::new(
        DeviceCopy::start(
            Box::new(Recording {
                inner: CpuStandIn::new(d, Element::F32, 64),
                batches: batches.clone(),
            }),
            KeyKind::Dot,
            DeviceOptions {
                max_batch: 6,
                batch_window: Duration::from_millis(2),
                ..DeviceOptions::default()
            },
            None,
        )
        .expect("starts"),
    );
    for i in 0..200 {
        dev.stage(&unit(i, d));
    }
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                for i in 0..4u64 {
                    let v = unit(t * 10 + i, d);
                    let got = dev.select(vec![DeviceQuery {
                        vector: v,
                        mask: Arc::new(Mask::All),
                        k: 1,
                        cpu_slack: 0.0,
                    }]);
                    assert_eq!(got[0], Ok(vec![(t * 10 + i) as u32]));
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .for_each(|t| t.join().expect("no panic"));
    let sizes = batches.lock().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 64);
    assert_eq!(dev.batch_stats(), (sizes.len() as u64, 64));
    assert!(sizes.iter().all(|s| *s <= 6), "{sizes:?}");
    assert!(sizes.iter().any(|s| *s > 1), "no batch formed: {sizes:?}");
}

#[test]
fn outgrowing_the_memory_limit_turns_the_copy_off_with_the_reason() {
    let d = 16;
    // 100 vectors of 16 f32 + a norm: 6,800 bytes; the limit holds ~50.
    let dev = copy(
        Element::F32,
        KeyKind::Dot,
        64,
        DeviceOptions {
            memory_limit: 3_500,
            ..DeviceOptions::default()
        },
    );
    for i in 0..100 {
        dev.stage(&unit(i, d));
    }
    let answer = dev.select(vec![DeviceQuery {
        vector: unit(1, d),
        mask: Arc::new(Mask::All),
        k: 1,
        cpu_slack: 0.0,
    }]);
    let Err(DeviceError::Unavailable(why)) = &answer[0] else {
        panic!("{answer:?}");
    };
    assert!(why.contains("--gpu-memory-limit"), "{why}");
    assert!(!dev.usable());
}

#[test]
fn a_device_failure_turns_the_copy_off_and_searches_go_back_to_the_cpu() {
    let d = 16;
    let mut kernel = CpuStandIn::new(d, Element::F32, 64);
    kernel.append(&unit(1, d)).expect("append");
    kernel.fail_next(KernelError::Device("an illegal memory access".into()));
    let dev = DeviceCopy::start(
        Box::new(kernel),
        KeyKind::Dot,
        DeviceOptions::default(),
        None,
    )
    .expect("starts");
    let q = DeviceQuery {
        vector: unit(1, d),
        mask: Arc::new(Mask::All),
        k: 1,
        cpu_slack: 0.0,
    };
    let first = dev.select(vec![q.clone()]);
    assert!(
        matches!(&first[0], Err(DeviceError::Unavailable(w)) if w.contains("illegal memory access")),
        "{first:?}"
    );
    assert!(!dev.usable());
    assert!(matches!(
        &dev.select(vec![q])[0],
        Err(DeviceError::Unavailable(_))
    ));
}
