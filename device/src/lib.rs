//! `device`: everything of cbdfw that does not need the hardware.
//!
//! * [`hw`] — parsers for platform structures the kernel reads at boot
//!   (ACPI CEDT, PCI capability chains, CXL DVSECs). Input is untrusted bytes;
//!   every parser returns an error instead of panicking.
//!
//! The crate is `no_std` and allocation-free so that the same code runs in the
//! bare-metal kernel and natively in tests.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod hw;
