//! `crdgen`: writes the CRDs of the operator to `crds/` (or the directory given), one file per
//! CRD. The files are checked in; a test fails when they drift from the Rust types.

use std::path::PathBuf;

use anyhow::Context;
use vecshard_operator::crd::{crd_file_name, crd_yaml, crds};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("crds"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for crd in crds() {
        let path = dir.join(crd_file_name(&crd));
        std::fs::write(&path, crd_yaml(&crd))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
