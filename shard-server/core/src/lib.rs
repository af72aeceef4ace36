//! vecshard's domain, shared by the engine, the router, the server and the tools: point ids,
//! points and collections (`model`), payload filters (`filter`), partition fingerprints
//! (`partitions`), the one error type (`error`), metrics (`metrics`), the request and answer
//! types every layer passes around (`request`), and the one place where wire messages become
//! domain types and back (`convert`, validation on the receiving side).
//!
//! Nothing here does transport or storage I/O: gRPC and HTTP status mapping live in the
//! server's `api`, sled and usearch in `vecshard-engine`.

pub mod convert;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod model;
pub mod partitions;
pub mod request;
