//! Types that cross the kernel/user boundary and the pure logic both sides
//! share (flow hash, Maglev), kept `no_std` so the XDP program can use them and
//! host unit tests can reach them.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod flow;
pub mod hash;
#[cfg(feature = "user")]
pub mod maglev;
pub mod maps;
pub mod passive;
pub mod select;
pub mod snat;

pub use maps::*;
