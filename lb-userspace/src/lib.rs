//! The `lb` daemon as a library, so integration tests can drive its parts.
pub mod admin;
pub mod announce;
pub mod checker;
pub mod cli;
pub mod config;
pub mod ctwalk;
pub mod daemon;
pub mod health;
pub mod model;
pub mod notify;
pub mod plane;
pub mod proxy;
pub mod status;
pub mod xdp;
