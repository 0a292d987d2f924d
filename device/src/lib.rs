//! `device`: everything of cbdfw that does not need the hardware.
//!
//! * [`hw`] — parsers for platform structures the kernel reads at boot
//!   (ACPI CEDT, PCI capability chains, CXL DVSECs). Input is untrusted bytes;
//!   every parser returns an error instead of panicking.
//! * CBD v3 protocol (see `docs/protocol.md`):
//!   [`layout`] (on-memory format, declared once by offset), [`crc`], [`meta`]
//!   (two-copy records), [`shm`] (the shared-memory access layer),
//!   [`transport`], [`backend`] (the device engine; the host role is the `host` crate),
//!   [`media`], [`trace`].
//! * `std` feature: [`native`] (coherent heap/mmap memory) and [`adversary`]
//!   (adversarial non-coherent memory).
//!
//! The crate is `no_std` and allocation-free so that the same code runs in the
//! bare-metal kernel and natively in tests.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod hw;

pub mod backend;
pub mod channel;
pub mod crc;
pub mod durable;
pub mod layout;
pub mod media;
pub mod meta;
pub mod shm;
pub mod trace;
pub mod transport;

#[cfg(feature = "std")]
pub mod adversary;
#[cfg(feature = "std")]
pub mod native;
