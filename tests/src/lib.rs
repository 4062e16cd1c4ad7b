//! Test support: network namespaces, packets, fixture tables, topologies.
pub mod chart;
pub mod e2e;
pub mod ecmp;
pub mod fixture;
pub mod netns;
pub mod packet;
pub mod topo;
