//! Test support: network namespaces, packets, fixture tables, topologies.
pub mod chart;
pub mod e2e;
pub mod ecmp;
pub mod fixture;
pub mod flood;
pub mod load;
pub mod measure;
pub mod packet;

// The namespace harness and topology live in lb-testenv (xtask uses them too).
pub use lb_testenv::{netns, topo};
