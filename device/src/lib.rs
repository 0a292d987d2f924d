//! `device`: everything of cbdfw that does not need the hardware.
//!
//! * [`hw`] — parsers for platform structures the kernel reads at boot
//!   (ACPI CEDT, PCI capability chains, CXL DVSECs). Input is untrusted bytes;
//!   every parser returns an error instead of panicking.
//! * CBD v3 protocol (see `docs/protocol.md`):
//!   [`layout`] (on-memory format, declared once by offset), [`crc`], [`meta`]
//!   (two-copy records), [`shm`] (the shared-memory access layer),
//!   [`transport`], [`backend`] (the device engine; the host role is the `host` crate),
//!   [`media`], [`trace`], [`profile`] (cycles per serve-loop phase, from the trace).
//! * [`ratelimit`] — repeated log lines at most once per interval.
//! * [`rng`] — the one deterministic PRNG (SplitMix64) of tests and simulations.
//! * [`exit_code`] — the exit codes of the kernel and the runner, declared once.
//! * `std` feature: [`native`] (coherent heap/mmap memory), [`adversary`]
//!   (adversarial non-coherent memory) and [`rig`] (a backend on one channel with the
//!   host side played by hand, for tests with hand-made entries), [`inspect`] (the
//!   read-only shared-memory inspector and the layout picture).
//! * `sabotage` feature (tests only): `backend::Sabotage`, deliberate protocol
//!   violations for the adversary's negative tests.
//!
//! The crate is `no_std` and allocation-free so that the same code runs in the
//! bare-metal kernel and natively in tests.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

// The test-only protocol violations never reach the device kernel, whatever feature
// unification does in a build that also contains the lessons or the tests: the kernel's
// target has no OS, the tools' and tests' targets do (docs/lessons.md).
#[cfg(all(feature = "sabotage", target_os = "none"))]
compile_error!(
    "feature `sabotage` (test-only protocol violations) must never be built into the device kernel"
);

pub mod hw;

pub mod backend;
pub mod channel;
pub mod crc;
pub mod durable;
pub mod exit_code;
pub mod layout;
pub mod media;
pub mod meta;
pub mod profile;
pub mod ratelimit;
pub mod rng;
pub mod shm;
pub mod trace;
pub mod transport;

#[cfg(feature = "std")]
pub mod adversary;
#[cfg(feature = "std")]
pub mod inspect;
#[cfg(feature = "std")]
#[allow(unsafe_code)] // platform layer: allocating and mapping the native shared memory
pub mod native;
#[cfg(feature = "std")]
pub mod rig;
