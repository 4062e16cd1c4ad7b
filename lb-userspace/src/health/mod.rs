//! Target health: NLB's state machine (`tracker`) fed by active TCP and
//! HTTP checks (`probe`), and passive health from the data path
//! (`passive`).

pub mod passive;
pub mod probe;
pub mod tracker;

pub use probe::{CheckResult, CheckSpec, ProbeError, ProbeTask};
pub use tracker::{Health, Tracker};
