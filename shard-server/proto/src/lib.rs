//! vecshard's wire API, package `vecshard.v1`. Generated from `proto/vecshard/v1/points.proto`
//! (`Points`, what clients call) and `internal.proto` (`PointsInternal`, what replicas call on
//! each other); no hand-written logic lives here so that every component agrees on the same
//! types.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("vecshard.v1");
}

/// The subset of Qdrant's gRPC API (package `qdrant`) served beside `vecshard.v1`, from
/// `proto/qdrant/qdrant.proto`: `Points`, `Collections` and `Qdrant` (health check).
#[allow(clippy::all, missing_docs)]
pub mod qdrant {
    tonic::include_proto!("qdrant");
}

/// Encoded `FileDescriptorSet` for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vecshard_descriptor");

pub mod shard_map;

/// gRPC metadata key under which a router sends the version of the shard map it routed a
/// request with; a shard whose partition ownership belongs to a newer version refuses the
/// request (FAILED_PRECONDITION) so that the router reloads its map and retries.
pub const MAP_VERSION_HEADER: &str = "vecshard-map-version";
