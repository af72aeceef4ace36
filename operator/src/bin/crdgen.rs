//! `crdgen`: writes the CRDs of the operator, one file per CRD, to `crds/` and to the Helm
//! chart's `charts/vecshard-operator/crds/` (or only to the directories given). The files are
//! checked in; a test fails when either copy drifts from the Rust types.

use std::path::PathBuf;

use anyhow::Context;
use vecshard_operator::crd::{crd_file_name, crd_yaml, crds, CRD_DIRS};

fn main() -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = CRD_DIRS.iter().map(PathBuf::from).collect();
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for crd in crds() {
            let path = dir.join(crd_file_name(&crd));
            std::fs::write(&path, crd_yaml(&crd))
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
