//! vecshard's Kubernetes operator: the `vecshard.io/v1alpha1` custom resources
//! (`VectorCollection`, `ShardSet`) and, in later slices, the controllers that reconcile them.

pub mod crd;
