//! `--filter-sweep`: filtered search over every value of every keyword field of the dataset
//! (`lexname`, `pos`), a synthetic integer field (`updated_at`, uniform over 0..1000 and
//! independent of the vectors) in range filters, and combined filters, each with two query
//! sets: the dataset's queries, and queries unlike them (the normalised mean of two base
//! vectors from different rows, plus noise: between concepts, not a WordNet gloss). For each:
//! matching count, the plan the server chose (from its `vecshard_search_plans` counter),
//! recall@10 against the exact top-10 among the matching rows, QPS and p99 at each
//! concurrency, the server's CPU per search, and the ratio to the unfiltered QPS measured in
//! the same run (baselines interleaved with the filters). Targets (issue 19): recall ≥ 0.95
//! and ≥ 50 % of the unfiltered QPS, for every filter.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::{search_block, top10_among, Args, Client, Data, SearchSpec};
use vecshard_core::model::normalize;
use vecshard_dataset::Matrix;

/// The synthetic integer field added to every payload for range filters.
pub const SYNTHETIC_FIELD: &str = "updated_at";

/// `updated_at` of a row: uniform over 0..1000, independent of the vectors.
pub fn synthetic_value(row: usize) -> i64 {
    (xxhash_rust::xxh3::xxh3_64(&(row as u64).to_le_bytes()) % 1000) as i64
}

/// Adds `updated_at` to every payload.
pub fn add_synthetic_field(payloads: &mut [Map<String, Value>]) {
    for (row, p) in payloads.iter_mut().enumerate() {
        p.insert(SYNTHETIC_FIELD.into(), json!(synthetic_value(row)));
    }
}

struct NamedFilter {
    name: String,
    filter: Option<Value>,
    /// Rows the filter matches.
    rows: Vec<usize>,
}

fn keyword(p: &Map<String, Value>, field: &str) -> Option<String> {
    p.get(field).and_then(|v| v.as_str()).map(str::to_string)
}

fn int(p: &Map<String, Value>, field: &str) -> i64 {
    p.get(field).and_then(|v| v.as_i64()).unwrap_or(-1)
}

fn filters(data: &Data) -> Vec<NamedFilter> {
    let p = &data.payloads;
    let all = |keep: &dyn Fn(&Map<String, Value>) -> bool| -> Vec<usize> {
        (0..p.len()).filter(|r| keep(&p[*r])).collect()
    };
    let mut out = Vec::new();
    for field in ["lexname", "pos"] {
        let mut values: BTreeMap<String, usize> = BTreeMap::new();
        for row in p {
            if let Some(v) = keyword(row, field) {
                *values.entry(v).or_default() += 1;
            }
        }
        for value in values.keys() {
            out.push(NamedFilter {
                name: format!("{field} = {value}"),
                filter: Some(json!({"must": [{"key": field, "match": {"value": value}}]})),
                rows: all(&|r| keyword(r, field).as_deref() == Some(value)),
            });
        }
    }
    for below in [10, 100, 500] {
        out.push(NamedFilter {
            name: format!("{SYNTHETIC_FIELD} < {below}"),
            filter: Some(json!({"must": [{"key": SYNTHETIC_FIELD, "range": {"lt": below}}]})),
            rows: all(&|r| int(r, SYNTHETIC_FIELD) < below),
        });
    }
    out.push(NamedFilter {
        name: format!("lexname = noun.artifact AND {SYNTHETIC_FIELD} < 500"),
        filter: Some(json!({"must": [
            {"key": "lexname", "match": {"value": "noun.artifact"}},
            {"key": SYNTHETIC_FIELD, "range": {"lt": 500}}]})),
        rows: all(&|r| {
            keyword(r, "lexname").as_deref() == Some("noun.artifact")
                && int(r, SYNTHETIC_FIELD) < 500
        }),
    });
    out.push(NamedFilter {
        name: "lexname = noun.animal OR lexname = noun.plant".into(),
        filter: Some(json!({"should": [
            {"key": "lexname", "match": {"value": "noun.animal"}},
            {"key": "lexname", "match": {"value": "noun.plant"}}]})),
        rows: all(&|r| {
            matches!(
                keyword(r, "lexname").as_deref(),
                Some("noun.animal" | "noun.plant")
            )
        }),
    });
    out.push(NamedFilter {
        name: "pos = verb AND NOT lexname = verb.change".into(),
        filter: Some(json!({"must": [{"key": "pos", "match": {"value": "verb"}}],
            "must_not": [{"key": "lexname", "match": {"value": "verb.change"}}]})),
        rows: all(&|r| {
            keyword(r, "pos").as_deref() == Some("verb")
                && keyword(r, "lexname").as_deref() != Some("verb.change")
        }),
    });
    out
}

/// `n` queries unlike the dataset's: the normalised mean of two base rows of different
/// `lexname`s, plus uniform noise of 10 % of a component's typical size.
fn synthetic_queries(data: &Data, n: usize) -> Matrix<f32> {
    let (rows, cols) = (data.base.rows, data.base.cols);
    let h = |x: u64| xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes());
    let mut out = Vec::with_capacity(n * cols);
    let mut i = 0u64;
    while out.len() < n * cols {
        let (a, b) = (
            (h(i) % rows as u64) as usize,
            (h(i ^ 0x5eed_0000_0000) % rows as u64) as usize,
        );
        i += 1;
        if keyword(&data.payloads[a], "lexname") == keyword(&data.payloads[b], "lexname") {
            continue;
        }
        let scale = 0.1 / (cols as f32).sqrt();
        let mut q: Vec<f32> = (0..cols)
            .map(|d| {
                let noise = (h(i * 7919 + d as u64) % 2001) as f32 / 1000.0 - 1.0;
                data.base.row(a)[d] + data.base.row(b)[d] + noise * scale
            })
            .collect();
        normalize(&mut q);
        out.extend(q);
    }
    Matrix {
        rows: n,
        cols,
        data: out,
    }
}

/// Exact top-10 by inner product among `rows`, for every query, on two threads.
fn truth(base: &Matrix<f32>, queries: &Matrix<f32>, rows: &[usize]) -> Vec<Vec<u32>> {
    let one = |q: usize| top10_among(base, queries.row(q), rows);
    let half = queries.rows / 2;
    std::thread::scope(|s| {
        let first = s.spawn(|| (0..half).map(one).collect::<Vec<_>>());
        let second: Vec<Vec<u32>> = (half..queries.rows).map(one).collect();
        let mut all = first.join().expect("truth thread");
        all.extend(second);
        all
    })
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The server's counters of interest: searches by plan, and its CPU time (clock ticks).
#[derive(Default, Clone)]
struct ServerCounters {
    plans: HashMap<String, f64>,
    cpu_ticks: u64,
}

fn scrape(metrics_url: Option<&str>, pid: Option<u32>) -> Result<ServerCounters> {
    let mut c = ServerCounters::default();
    if let Some(url) = metrics_url {
        for line in http_get(url)?.lines() {
            if let Some(rest) = line.strip_prefix("vecshard_search_plans_total{plan=\"") {
                if let Some((plan, value)) = rest.split_once("\"} ") {
                    c.plans
                        .insert(plan.to_string(), value.trim().parse().unwrap_or(0.0));
                }
            }
        }
    }
    if let Some(pid) = pid {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
        let f: Vec<&str> = after.split_whitespace().collect();
        c.cpu_ticks = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(c)
}

/// A plain HTTP/1.0 GET (the metrics endpoint), without a client library.
fn http_get(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("metrics URL must start with http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{} HTTP/1.0\r\nHost: {host}\r\n\r\n",
        path.trim_start_matches('/')
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string()))
}

/// Waits until the server's value graphs stop growing (they are built after the full graph).
pub async fn wait_for_value_graphs(metrics_url: &str) -> Result<()> {
    let points = || -> Result<f64> {
        Ok(http_get(metrics_url)?
            .lines()
            .find_map(|l| l.strip_prefix("vecshard_value_graph_points "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    };
    let mut last = -1.0;
    let mut stable = 0;
    while stable < 3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = points()?;
        stable = if now == last { stable + 1 } else { 0 };
        last = now;
    }
    println!("value graphs hold {last} points");
    Ok(())
}

struct Cell {
    recall: f64,
    qps: f64,
    p99_ms: f64,
    cpu_us: f64,
    plan: String,
}

#[allow(clippy::too_many_arguments)]
async fn cell(
    args: &Args,
    clients: &[Client],
    queries: &Matrix<f32>,
    truth: &[Vec<u32>],
    filter: Option<&Value>,
    concurrency: usize,
    ef: usize,
) -> Result<Cell> {
    let spec = SearchSpec {
        collection: args.collection.clone(),
        queries: std::sync::Arc::new((0..queries.rows).map(|q| queries.row(q).to_vec()).collect()),
        ef,
        filter: filter.map(|f| f.to_string()).unwrap_or_default(),
    };
    let requests = args.sweep_requests.max(queries.rows);
    let before = scrape(args.metrics_url.as_deref(), args.server_pid)?;
    let block = search_block(clients, &spec, concurrency, 0..requests).await?;
    let after = scrape(args.metrics_url.as_deref(), args.server_pid)?;
    let mut recall = 0.0;
    for (q, ids) in &block.results {
        let t = &truth[*q];
        recall += ids.iter().filter(|i| t.contains(i)).count() as f64 / t.len().max(1) as f64;
    }
    let mut lat = block.latencies.clone();
    lat.sort();
    let p99 = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    let plans: Vec<(String, f64)> = after
        .plans
        .iter()
        .map(|(p, v)| (p.clone(), v - before.plans.get(p).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let total: f64 = plans.iter().map(|(_, d)| d).sum();
    let mut plan: Vec<String> = plans
        .iter()
        .map(|(p, d)| {
            if *d >= total * 0.99 {
                p.clone()
            } else {
                format!("{p} {:.0} %", d * 100.0 / total)
            }
        })
        .collect();
    plan.sort();
    let ticks_per_s = 100.0; // USER_HZ on Linux
    Ok(Cell {
        recall: recall / block.results.len().max(1) as f64,
        qps: requests as f64 / block.wall.as_secs_f64(),
        p99_ms: p99,
        cpu_us: (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_s * 1e6 / requests as f64,
        plan: if plan.is_empty() {
            "?".into()
        } else {
            plan.join(", ")
        },
    })
}

pub async fn run(args: &Args, clients: &[Client], data: &Data) -> Result<Value> {
    let ef = args.ef.first().copied().unwrap_or(64);
    let n = args.sweep_queries.min(data.queries.rows);
    let shared = Matrix {
        rows: n,
        cols: data.queries.cols,
        data: data.queries.data[..n * data.queries.cols].to_vec(),
    };
    let sets = [
        ("shared", shared),
        ("synthetic", synthetic_queries(data, n)),
    ];
    let filters = filters(data);
    let total = data.base.rows as f64;
    let mut report = Vec::new();
    let concurrency = &args.concurrency;
    println!(
        "\nfilter sweep: ef {ef}, {n} queries per set, {} requests per cell, concurrency {concurrency:?}",
        args.sweep_requests.max(n)
    );
    for (set, queries) in &sets {
        let all: Vec<usize> = (0..data.base.rows).collect();
        // Unfiltered baselines, interleaved with the filters: the median is the reference.
        let mut baselines: Vec<Vec<f64>> = vec![Vec::new(); concurrency.len()];
        let base_truth = truth(&data.base, queries, &all);
        let mut baseline_recall = 0.0;
        let mut baseline_cpu: Vec<Vec<f64>> = vec![Vec::new(); concurrency.len()];
        let mut results = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            if i % 8 == 0 {
                for (ci, &c) in concurrency.iter().enumerate() {
                    let b = cell(args, clients, queries, &base_truth, None, c, ef).await?;
                    baselines[ci].push(b.qps);
                    baseline_cpu[ci].push(b.cpu_us);
                    baseline_recall = b.recall;
                }
            }
            let t = truth(&data.base, queries, &f.rows);
            let mut cells = Vec::new();
            for &c in concurrency {
                cells.push(cell(args, clients, queries, &t, f.filter.as_ref(), c, ef).await?);
            }
            results.push((f, cells));
        }
        let median: Vec<f64> = baselines.iter_mut().map(|b| median_of(b)).collect();
        let cpu: Vec<f64> = baseline_cpu.iter_mut().map(|b| median_of(b)).collect();
        println!("\nquery set: {set}; unfiltered: recall@10 {baseline_recall:.3}, QPS (median of {} interleaved runs) {}; server CPU µs/search {}",
            baselines[0].len(),
            concurrency.iter().zip(&median).map(|(c, q)| format!("c={c} {q:.0}")).collect::<Vec<_>>().join(", "),
            concurrency.iter().zip(&cpu).map(|(c, u)| format!("c={c} {u:.0}")).collect::<Vec<_>>().join(", "));
        let mut header = "| filter | matching | share | plan | recall@10 |".to_string();
        for c in concurrency {
            header +=
                &format!(" QPS c={c} | vs unfiltered c={c} | p99 ms c={c} | CPU µs/search c={c} |");
        }
        println!("{header} targets |");
        println!("|{}", "---|".repeat(5 + 4 * concurrency.len() + 1));
        let mut failures = 0;
        for (f, cells) in &results {
            let share = f.rows.len() as f64 / total;
            let recall = cells.iter().map(|c| c.recall).fold(1.0, f64::min);
            let mut line = format!(
                "| {} | {} | {:.2} % | {} | {:.3} |",
                f.name,
                f.rows.len(),
                share * 100.0,
                cells[0].plan,
                recall
            );
            let mut ok = recall >= 0.95;
            let mut row = json!({"set": set, "filter": f.name, "matching": f.rows.len(), "plan": cells[0].plan, "recall": recall});
            for ((c, cell), base) in concurrency.iter().zip(cells).zip(&median) {
                let ratio = cell.qps / base;
                ok &= ratio >= 0.5;
                line += &format!(
                    " {:.0} | {:.2} | {:.2} | {:.0} |",
                    cell.qps, ratio, cell.p99_ms, cell.cpu_us
                );
                row[format!("qps_c{c}")] = json!(cell.qps);
                row[format!("ratio_c{c}")] = json!(ratio);
                row[format!("p99_ms_c{c}")] = json!(cell.p99_ms);
                row[format!("cpu_us_c{c}")] = json!(cell.cpu_us);
            }
            failures += usize::from(!ok);
            println!("{line} {} |", if ok { "met" } else { "**missed**" });
            row["met"] = json!(ok);
            report.push(row);
        }
        println!(
            "query set {set}: {} of {} filters meet both targets",
            results.len() - failures,
            results.len()
        );
    }
    Ok(json!(report))
}
