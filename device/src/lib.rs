//! `device`: everything of cbdfw that does not need the hardware.
//!
//! * [`hw`] — parsers for platform structures the kernel reads at boot
//!   (ACPI CEDT, PCI capability chains, CXL DVSECs). Input is untrusted bytes;
//!   every parser returns an error instead of panicking.
//! * CBD v3 protocol (see `docs/protocol.md`):
//!   [`layout`] (on-memory format, declared once by offset), [`crc`], [`meta`]
//!   (two-copy records), [`shm`] (the shared-memory access layer),
//!   [`transport`], [`backend`] (the device engine), [`host`] (the blkdev role),
//!   [`media`], [`trace`].
//! * [`rng`] — the one deterministic PRNG (SplitMix64) of tests and simulations.
//! * `std` feature: [`native`] (coherent heap/mmap memory), [`adversary`]
//!   (adversarial non-coherent memory), [`rig`] (a backend on one channel with the
//!   host side played by hand, for tests with hand-made entries) and [`journal`]
//!   (the journal-commit workload).
//! * `sabotage` feature (tests only): `backend::Sabotage`, deliberate protocol
//!   violations for the adversary's negative tests.
//!
//! The crate is `no_std` and allocation-free so that the same code runs in the
//! bare-metal kernel and natively in tests.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod hw;

pub mod backend;
pub mod channel;
pub mod crc;
pub mod durable;
pub mod exit_code;
pub mod host;
pub mod layout;
pub mod media;
pub mod meta;
pub mod rng;
pub mod shm;
pub mod trace;
pub mod transport;

#[cfg(feature = "std")]
pub mod adversary;
#[cfg(feature = "std")]
pub mod journal;
#[cfg(feature = "std")]
pub mod native;
#[cfg(feature = "std")]
pub mod rig;
