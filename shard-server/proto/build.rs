//! Compiles `proto/vecshard/v1/*.proto` (points.proto: the public API; internal.proto: replica
//! to replica) and `proto/qdrant/qdrant.proto` (the subset of Qdrant's API served beside them)
//! with the vendored protoc, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; tonic-prost-build reads PROTOC.
    std::env::set_var("PROTOC", protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("vecshard_descriptor.bin"))
        .compile_protos(
            &[
                "proto/vecshard/v1/points.proto",
                "proto/vecshard/v1/internal.proto",
                "proto/qdrant/qdrant.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
