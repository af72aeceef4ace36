//! GPU exact search against the CPU exact plan, in the same run (issue 24):
//!
//!     gpu_bench [--sizes 116659,1000000,10000000] [--dataset base.f16.npy --queries q.f32.npy]
//!               [--out table.md] [--threads 16]
//!
//! For each size: unit vectors (synthetic, seeded; the dataset's rows with `--dataset`) as
//! f16 copies, as a cosine shard holds them; queries are fresh random unit vectors (or the
//! dataset's queries). The GPU path is the shard's: `DeviceCopy::select` (device thread, GEMM,
//! selection kernel, candidate merge) then the CPU scores the candidates with the exact plan's
//! functions (`VectorArena::score_all`, `scoring::near_top_k`). The CPU exact plan scans every
//! point for each query, one query per thread, over `--threads` threads (as the read pool
//! does). Prints one markdown row per (size, batch): QPS and batch latency on both, how many
//! answers were identical, and the GPU's memory-bandwidth bound (one pass over the f16
//! vectors per 256 queries, at the device-to-device copy bandwidth measured here). At 1M
//! points it also runs 1, 8 and 32 clients of single searches with the batching window at 0,
//! 250 and 1,000 µs (QPS, latency, mean batch size): the measure behind the default window.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vecshard_core::model::Metric;
use vecshard_engine::shard::scoring::near_top_k;
use vecshard_engine::shard::vectors::{Precision, VectorArena};
use vecshard_gpu::cuda::CudaDevice;
use vecshard_gpu::{DeviceCopy, DeviceOptions, DeviceQuery, Element, KeyKind, Mask};

const DIM: usize = 384;
const K: usize = 10;
/// The CPU plan's slack around the k-th score for f16 copies (2 × the rounding bound).
const SLACK: f32 = 4e-3;
/// Queries sharing one pass over the vectors on the device (`cuda.rs` PASS_QUERIES).
const PASS_QUERIES: usize = 256;

struct Args {
    sizes: Vec<usize>,
    dataset: Option<PathBuf>,
    queries: Option<PathBuf>,
    out: Option<PathBuf>,
    threads: usize,
    /// The CPU stand-in instead of CUDA: checks the benchmark's own flow on a machine without
    /// a GPU (its numbers mean nothing).
    stand_in: bool,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![116_659, 1_000_000, 10_000_000],
        dataset: None,
        queries: None,
        out: None,
        threads: std::thread::available_parallelism().map_or(4, |n| n.get()),
        stand_in: false,
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|x| x == "--stand-in") {
        argv.remove(i);
        a.stand_in = true;
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--sizes" => a.sizes = value.split(',').map(|s| s.parse().expect("size")).collect(),
            "--dataset" => a.dataset = Some(value.into()),
            "--queries" => a.queries = Some(value.into()),
            "--out" => a.out = Some(value.into()),
            "--threads" => a.threads = value.parse().expect("threads"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Seeded unit vectors: row `i` of stream `seed`.
fn unit(seed: u64, i: u64) -> Vec<f32> {
    let mut x = (seed << 40) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

struct Data {
    arena: VectorArena,
    len: usize,
    device: DeviceCopy,
    upload: Duration,
    bandwidth: f64,
    name: String,
}

fn load(
    name: String,
    len: usize,
    stand_in: bool,
    mut row: impl FnMut(usize) -> Vec<f32>,
) -> Result<Data, String> {
    let (kernel, bandwidth, free): (Box<dyn vecshard_gpu::ExactKernel>, f64, usize) = if stand_in {
        let k = vecshard_gpu::cpu::CpuStandIn::new(DIM, Element::F16, 65_536);
        (Box::new(k), 1e10, usize::MAX / 2)
    } else {
        let k = CudaDevice::open(0, DIM, Element::F16)?;
        let bandwidth = k.copy_bandwidth(1 << 30)?;
        let (free, _) = k.memory_info()?;
        (Box::new(k), bandwidth, free)
    };
    let describe = kernel.describe();
    let device = DeviceCopy::start(
        kernel,
        KeyKind::Dot,
        DeviceOptions {
            memory_limit: free as u64 / 10 * 9,
            max_batch: 1024,
            batch_window: Duration::ZERO,
        },
        None,
    )
    .map_err(|e| e.to_string())?;
    let mut arena = VectorArena::new(DIM, Precision::F16);
    let started = Instant::now();
    for i in 0..len {
        let v = row(i);
        arena.push(&v);
        device.stage(&v);
        if (i + 1) % 65_536 == 0 {
            device.flush();
        }
    }
    device.flush();
    // A selection waits for every queued append: the upload is done when it returns.
    let probe = device.select(vec![DeviceQuery {
        vector: unit(99, 0),
        mask: Arc::new(Mask::All),
        k: 1,
        cpu_slack: 0.0,
    }]);
    probe[0].clone().map_err(|e| e.to_string())?;
    eprintln!(
        "{name}: {len} vectors on {describe}, {} MiB, loaded in {:.1} s; copy bandwidth {:.0} GB/s",
        device.memory_bytes() >> 20,
        started.elapsed().as_secs_f64(),
        bandwidth / 1e9
    );
    Ok(Data {
        arena,
        len,
        device,
        upload: started.elapsed(),
        bandwidth,
        name,
    })
}

/// The CPU exact plan for one query: every allowed slot scored, near-ties of the k-th kept.
fn cpu_exact(arena: &VectorArena, slots: &[u32], q: &[f32]) -> Vec<u32> {
    let scored = arena.score_all(Metric::Cosine, q, slots);
    near_top_k(Metric::Cosine, scored, K, SLACK)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// The GPU path for a batch: device candidates, then the exact plan's scoring of them.
fn gpu_exact(data: &Data, queries: &[Vec<f32>], mask: &Arc<Mask>) -> Vec<Option<Vec<u32>>> {
    let asked = queries
        .iter()
        .map(|q| DeviceQuery {
            vector: q.clone(),
            mask: mask.clone(),
            k: K,
            cpu_slack: SLACK,
        })
        .collect();
    data.device
        .select(asked)
        .into_iter()
        .zip(queries)
        .map(|(answer, q)| {
            let slots = answer.ok()?;
            Some(cpu_exact(&data.arena, &slots, q))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Row {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn timed(batches: usize, mut run: impl FnMut(usize)) -> Row {
    let mut latencies = Vec::with_capacity(batches);
    let started = Instant::now();
    for b in 0..batches {
        let t = Instant::now();
        run(b);
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Row {
        qps: batches as f64 / total,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
    }
}

/// Queries of batch `b` (size `size`) from the pool, cycling.
fn batch_of(pool: &[Vec<f32>], b: usize, size: usize) -> Vec<Vec<f32>> {
    (0..size)
        .map(|i| pool[(b * size + i) % pool.len()].clone())
        .collect()
}

fn bench(
    data: &Data,
    pool: &[Vec<f32>],
    threads: usize,
    filter: Option<usize>,
    out: &mut Vec<String>,
) {
    let mask = Arc::new(match filter {
        None => Mask::All,
        Some(every) => Mask::of_slots((0..data.len as u32).step_by(every), data.len),
    });
    let slots: Vec<u32> = (0..data.len as u32).filter(|s| mask.allows(*s)).collect();
    let scale = (data.len as f64 / 1e6).max(0.12);
    let label = match filter {
        None => data.name.clone(),
        Some(every) => format!("{} (filter: 1 in {every})", data.name),
    };
    for size in [1usize, 8, 64, 1024] {
        // Fewer repetitions on larger data; each cell still runs for a second or more.
        let gpu_batches = ((match size {
            1 => 300.0,
            8 => 100.0,
            64 => 30.0,
            _ => 6.0,
        }) / scale.sqrt())
        .ceil()
        .max(2.0) as usize;
        let mut answers: Vec<(Vec<f32>, Option<Vec<u32>>)> = Vec::new();
        let gpu = timed(gpu_batches, |b| {
            let qs = batch_of(pool, b, size);
            let got = gpu_exact(data, &qs, &mask);
            if answers.len() < 64 {
                answers.extend(qs.into_iter().zip(got));
            }
        });
        // CPU: the batch's queries over the threads, one query per thread at a time.
        let cpu_queries_budget = (4e7 / (slots.len() as f64)).clamp(3.0, 2000.0) as usize;
        let cpu_batches = (cpu_queries_budget / size).clamp(1, 50);
        let skip_cpu = size * cpu_batches > 4 * cpu_queries_budget;
        let cpu = if skip_cpu {
            None
        } else {
            Some(timed(cpu_batches, |b| {
                let qs = batch_of(pool, b, size);
                std::thread::scope(|s| {
                    for part in qs.chunks(size.div_ceil(threads)) {
                        let (arena, slots) = (&data.arena, &slots);
                        s.spawn(move || {
                            for q in part {
                                std::hint::black_box(cpu_exact(arena, slots, q));
                            }
                        });
                    }
                });
            }))
        };
        // Same ids as the CPU exact plan, checked on the first answers (fewer on large data:
        // each check is a full CPU scan).
        let checks = (8e7 / slots.len().max(1) as f64).clamp(4.0, 32.0) as usize;
        let (mut same, mut checked, mut fallbacks) = (0, 0, 0);
        for (q, got) in answers.iter().take(checks) {
            checked += 1;
            match got {
                None => fallbacks += 1,
                Some(g) if *g == cpu_exact(&data.arena, &slots, q) => same += 1,
                Some(_) => {}
            }
        }
        let passes = size.div_ceil(PASS_QUERIES) as f64;
        let bound_s = passes * (data.len * DIM * 2) as f64 / data.bandwidth;
        let bound_qps = size as f64 / bound_s;
        let gpu_qps = gpu.qps * size as f64;
        let (cpu_qps, cpu_p50, cpu_p99) = match &cpu {
            Some(c) => (
                format!("{:.0}", c.qps * size as f64),
                format!("{:.2}", c.p50_ms),
                format!("{:.2}", c.p99_ms),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let row = format!(
            "| {label} | {size} | {gpu_qps:.0} | {:.3} | {:.3} | {cpu_qps} | {cpu_p50} | {cpu_p99} | {:.0} | {:.2}× | {same}/{checked} ({fallbacks} to CPU) |",
            gpu.p50_ms,
            gpu.p99_ms,
            bound_qps,
            bound_qps / gpu_qps
        );
        println!("{row}");
        out.push(row);
    }
}

/// Concurrent single searches (as the read threads send them) with the batching window at
/// 0, 250 and 1,000 µs: whether micro-batching lowers latency at each load.
fn concurrency(data: &Data, pool: &[Vec<f32>], out: &mut Vec<String>) {
    out.push(String::new());
    out.push(format!(
        "Micro-batching, {}: concurrent single searches",
        data.name
    ));
    out.push(String::new());
    out.push("| clients | window µs | QPS | p50 ms | p99 ms | mean batch |".into());
    out.push("|---|---|---|---|---|---|".into());
    let mask = Arc::new(Mask::All);
    let slots: Vec<u32> = (0..data.len as u32).collect();
    for clients in [1usize, 8, 32] {
        for window_us in [0u64, 250, 1000] {
            data.device
                .set_batch_window(Duration::from_micros(window_us));
            let (b0, q0) = data.device.batch_stats();
            let run_for = Duration::from_millis(1500);
            let started = Instant::now();
            let mut latencies: Vec<f64> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..clients)
                    .map(|c| {
                        let (mask, slots) = (&mask, &slots);
                        s.spawn(move || {
                            let mut lat = Vec::new();
                            let mut i = c;
                            while started.elapsed() < run_for {
                                let q = &pool[i % pool.len()];
                                let t = Instant::now();
                                let got = gpu_exact(data, std::slice::from_ref(q), mask);
                                if got[0].is_none() {
                                    std::hint::black_box(cpu_exact(&data.arena, slots, q));
                                }
                                lat.push(t.elapsed().as_secs_f64() * 1e3);
                                i += clients;
                            }
                            lat
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("client"))
                    .collect()
            });
            let total = started.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            let (b1, q1) = data.device.batch_stats();
            let row = format!(
                "| {clients} | {window_us} | {:.0} | {:.3} | {:.3} | {:.1} |",
                latencies.len() as f64 / total,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                (q1 - q0) as f64 / (b1 - b0).max(1) as f64
            );
            println!("{row}");
            out.push(row);
        }
    }
    data.device.set_batch_window(Duration::ZERO);
}

fn main() {
    let a = args();
    let mut rows = vec![
        "| data | batch | GPU QPS | GPU batch p50 ms | GPU batch p99 ms | CPU exact QPS | CPU batch p50 ms | CPU batch p99 ms | bandwidth-bound QPS | bound ÷ GPU | same ids as CPU |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let synthetic_queries: Vec<Vec<f32>> = (0..2048).map(|i| unit(7, i)).collect();
    if let Some(path) = &a.dataset {
        let mut file = vecshard_dataset::VectorFile::open(path).expect("dataset");
        let mut rows_read = Vec::new();
        while let Some(r) = file.next_row().expect("row") {
            rows_read.push(r);
        }
        let queries: Vec<Vec<f32>> = match &a.queries {
            Some(q) => {
                let m = vecshard_dataset::read_f32_matrix(q).expect("queries");
                (0..m.rows.min(2048))
                    .map(|i| {
                        let mut v = m.row(i).to_vec();
                        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                        v.iter_mut().for_each(|x| *x /= n);
                        v
                    })
                    .collect()
            }
            None => synthetic_queries.clone(),
        };
        let len = rows_read.len();
        let name = format!("dataset rows ({len} × {DIM})");
        match load(name, len, a.stand_in, |i| rows_read[i].clone()) {
            Ok(data) => {
                bench(&data, &queries, a.threads, None, &mut rows);
                save(&a, &rows);
            }
            Err(e) => {
                eprintln!("no GPU: {e}");
                std::process::exit(1);
            }
        }
    }
    for &n in &a.sizes {
        let name = format!("synthetic {n} × {DIM}");
        let data = match load(name, n, a.stand_in, |i| unit(1, i as u64)) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("no GPU: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("{}: upload {:.1} s", data.name, data.upload.as_secs_f64());
        bench(&data, &synthetic_queries, a.threads, None, &mut rows);
        if n == 1_000_000 || (a.stand_in && n == a.sizes[0]) {
            bench(&data, &synthetic_queries, a.threads, Some(10), &mut rows);
            concurrency(&data, &synthetic_queries, &mut rows);
        }
        save(&a, &rows);
    }
}

/// Writes the table so far after every data set: a device call that runs out of time still
/// brings back the rows it measured.
fn save(a: &Args, rows: &[String]) {
    if let Some(out) = &a.out {
        std::fs::write(out, rows.join("\n") + "\n").expect("write table");
    }
}
