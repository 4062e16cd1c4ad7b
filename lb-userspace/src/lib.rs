//! The `lb` daemon as a library, so integration tests can drive its parts.
//! Layers, each using only those listed before it: `config`, `model`,
//! `health`, `dataplane`, `telemetry`, `control`; `cli` on top.
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod health;
pub mod model;
pub mod telemetry;
