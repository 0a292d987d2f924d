//! `host`: the host role of CBD. Its protocol engine ([`engine`]) runs natively against the
//! `device` crate's backend engine in tests and benches, and under the Linux program
//! `cbd-host`, which runs in the Linux guest: it maps the shared transport (devdax from a CXL
//! region, or the ivshmem BAR), registers as a CBD host, dev-starts against the backend, and
//! exposes the disk as a ublk block device. See docs/host.md.
//!
//! * [`engine`]: the host (blkdev) role of the protocol, what the Linux CBD driver does; native,
//!   so tests and benches drive it against the `device` crate's backend engine.
//! * `harness` (cargo feature `harness`): schedules of both engines shared by the tests and
//!   the lessons.
//! * [`journal`]: the journal-commit workload (both roles: benches and the device VM bench).
//! * [`linux`]: the pieces of the Linux program (mapping, CBD path, ublk device).
//! * The `cbd-host` binary (src/bin/cbd-host, cargo feature `ublk`): command line and main loop.

pub mod engine;
#[cfg(feature = "harness")]
pub mod harness;
pub mod journal;
pub mod linux;
