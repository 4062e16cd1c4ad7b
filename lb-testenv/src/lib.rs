//! Test environment shared by the `tests` crate and `xtask`: RAII network
//! namespaces (`netns`) and the client / gateway / backends topology
//! (`topo`). Kept light (no aya, no lb-userspace) so that xtask builds on a
//! machine without the BPF toolchain.
pub mod netns;
pub mod topo;
