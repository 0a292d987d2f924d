//! Helpers shared by the tests that drive the device kernel with the native host.
#![allow(dead_code)]

/// Wall-clock nanoseconds (what CBD heartbeats carry).
pub use device::native::now_ns;

/// xorshift64: a small, seedable generator for workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
