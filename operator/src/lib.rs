//! vecshard's Kubernetes operator: the `vecshard.io/v1alpha1` custom resources
//! (`VectorCollection`, `ShardSet`), the controllers that reconcile them into StatefulSets,
//! a router, Services, PDBs and HPAs, leader election and metrics.

pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod names;
