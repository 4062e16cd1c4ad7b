//! The daemon: its state and event loop (`daemon`), the registered and
//! draining targets (`targets`), route announcement (`announce`), the host
//! checks before a start (`host`), the instance lock (`instance`), `lb run`
//! itself (`start`), `lb stop` / `lb detach` (`stop`), and the VIPs'
//! unreachable routes (`vip_routes`).

pub mod announce;
pub mod attributes;
pub mod daemon;
pub mod host;
pub mod inspect;
pub mod instance;
pub mod registry;
pub mod seed;
pub mod start;
pub mod stop;
pub mod targets;
pub mod vip_routes;

pub use daemon::Daemon;
pub use start::run;
