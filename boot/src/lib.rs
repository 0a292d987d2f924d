//! `boot`: builds the device kernel and its boot image, judges kernel tests, and is
//! the command behind `cargo run` (`src/main.rs`). The VMs themselves (runner,
//! topologies, guest image, paired VMs) are the `qemu` crate's.

pub mod bench;
pub mod cli;
pub mod image;
pub mod ktest;
pub mod native_host;
pub mod png;
