//! The selection kernel's CUDA source, run on the CPU: `KERNELS` between a shim of the CUDA
//! execution model (`tests/emulation/shim.hpp`) and a harness that compares every segment's
//! output with a sorted reference (`tests/emulation/harness.cpp`), built with the system's
//! C++ compiler (the one usearch is built with). CI has no GPU; this checks the kernel's
//! logic there: per-thread lists, the block-wide merge, masks, l2 keys, ties.

use std::process::Command;

#[test]
fn the_selection_kernel_matches_a_sorted_reference_when_emulated() {
    let dir = tempfile::tempdir().unwrap();
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulation");
    let source = [
        std::fs::read_to_string(here.join("shim.hpp")).unwrap(),
        vecshard_gpu::cuda::KERNELS.to_string(),
        std::fs::read_to_string(here.join("harness.cpp")).unwrap(),
    ]
    .join("\n");
    let cpp = dir.path().join("emulate.cpp");
    std::fs::write(&cpp, source).unwrap();
    let exe = dir.path().join("emulate");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let built = Command::new(&compiler)
        .args(["-std=c++20", "-O1", "-pthread", "-o"])
        .arg(&exe)
        .arg(&cpp)
        .output()
        .unwrap_or_else(|e| panic!("running the C++ compiler {compiler}: {e}"));
    assert!(
        built.status.success(),
        "the kernel source does not compile under the shim:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{stdout}");
    assert!(stdout.contains("OK (0 failures)"), "{stdout}");
}
