//! Graph-parameter sweep on an in-process index (no server): for every (M, ef_construction)
//! builds the shard's HNSW index over the dataset, then measures recall@10 and QPS per ef with
//! the shard's own rescoring. Searches of the different graphs are interleaved round by round,
//! so that the VM's slow spells spread over all of them.
//!
//! cargo run --release -p vecshard-engine --example graph_sweep -- \
//!   ../shared/datasets/wordnet-minilm-384 i8 16x128,24x128,16x256 16,24,28,32 3

use anyhow::{Context, Result};
use vecshard_dataset as dataset;
#[path = "support/in_process.rs"]
mod in_process;
use vecshard_core::model::{CollectionConfig, HnswParams, Metric, Quantization};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        anyhow::bail!(
            "usage: graph_sweep DATASET_DIR f32|f16|i8|b1 MxEFC[,MxEFC…] EF[,EF…] [ROUNDS]"
        );
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let quantization: Quantization = args[2].parse().map_err(anyhow::Error::msg)?;
    let graphs: Vec<(usize, usize)> = args[3]
        .split(',')
        .map(|g| {
            let (m, c) = g.split_once('x').context("MxEFC")?;
            Ok((m.parse()?, c.parse()?))
        })
        .collect::<Result<_>>()?;
    let efs: Vec<usize> = args[4]
        .split(',')
        .map(|e| e.parse())
        .collect::<Result<_, _>>()?;
    let rounds: usize = args.get(5).map_or(Ok(3), |r| r.parse())?;

    let base = dataset::read_f32_matrix(&dir.join("base.f16.npy"))?;
    let queries = dataset::read_f32_matrix(&dir.join("queries.f32.npy"))?;
    let gt = dataset::read_i32_matrix(&dir.join("groundtruth.i32.npy"))?;
    let truth: Vec<Vec<u32>> = (0..gt.rows)
        .map(|q| gt.row(q)[..10].iter().map(|x| *x as u32).collect())
        .collect();

    let mut indexes = Vec::new();
    for &(m, efc) in &graphs {
        let config = CollectionConfig {
            name: "sweep".into(),
            dimension: base.cols,
            metric: Metric::Cosine,
            hnsw: HnswParams {
                m,
                ef_construction: efc,
                ef_search: 64,
            },
            quantization,
            indexed_fields: vec![],
        };
        let (index, took) = in_process::build_index(&config, &base)?;
        println!("M {m} efc {efc}: built in {:.1} s", took.as_secs_f64());
        indexes.push(index);
    }

    // qps[g][e] over rounds
    let mut qps = vec![vec![Vec::new(); efs.len()]; graphs.len()];
    let mut recall = vec![vec![0.0; efs.len()]; graphs.len()];
    for _ in 0..rounds {
        for (e, &ef) in efs.iter().enumerate() {
            for (g, index) in indexes.iter().enumerate() {
                let (r, q) =
                    in_process::search(index, &base, &queries, &truth, ef, quantization, 2, 8000);
                qps[g][e].push(q);
                recall[g][e] = r;
            }
        }
    }
    println!("| M | efc | ef | recall@10 | QPS median | QPS all |");
    for (g, &(m, efc)) in graphs.iter().enumerate() {
        for (e, &ef) in efs.iter().enumerate() {
            let mut q = qps[g][e].clone();
            q.sort_by(f64::total_cmp);
            println!(
                "| {m} | {efc} | {ef} | {:.4} | {:.0} | {:?} |",
                recall[g][e],
                q[q.len() / 2],
                q.iter().map(|x| *x as u64).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}
