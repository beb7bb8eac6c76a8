//! Shared workload code for the `pinowner` examples, integration tests and
//! benchmarks. Not published.
