//! The daemon: its state and event loop (`daemon`), the registered and
//! draining targets (`targets`), route announcement (`announce`), the host
//! checks before a start (`host`), the instance lock (`instance`), `lb run`
//! itself (`start`), and `lb stop` / `lb detach` (`stop`).

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

pub use daemon::Daemon;
pub use start::run;
