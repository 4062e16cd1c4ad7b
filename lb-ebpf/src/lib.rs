// Present only so lb-userspace can name this crate as a build dependency.
#![no_std]
