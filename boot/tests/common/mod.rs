//! Helpers shared by the tests that drive the device kernel with the native host.
#![allow(dead_code)]

/// Wall-clock nanoseconds (what CBD heartbeats carry).
pub use device::native::now_ns;

/// The project's one deterministic PRNG (SplitMix64), named as the tests call it.
pub use device::rng::SplitMix64 as Rng;
