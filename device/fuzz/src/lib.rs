//! Harnesses of the fuzz targets (`fuzz_targets/*.rs`, docs/fuzzing.md). Each takes
//! the fuzzer's input and panics on a property violation; libFuzzer reports the panic.

pub mod backend;
pub mod host;
pub mod hw;
pub mod mem;
pub mod parsers;

/// A few hundred random inputs through each harness on stable (`cargo test --release`
/// here): the harnesses themselves must not report violations on random input.
#[cfg(test)]
mod smoke {
    use arbitrary::{Arbitrary, Unstructured};
    use device::rng::SplitMix64;

    fn inputs(seed: u64, n: usize, len: usize, mut f: impl FnMut(&[u8])) {
        let mut r = SplitMix64::new(seed);
        for _ in 0..n {
            let mut b = vec![0u8; len];
            r.fill(&mut b);
            f(&b);
        }
    }

    #[test]
    fn parsers_and_hw() {
        inputs(1, 2000, 300, |b| {
            super::parsers::run(b);
            super::hw::run(b);
        });
    }

    #[test]
    fn backend() {
        inputs(2, 300, 4000, |b| {
            if let Ok(i) = super::backend::Input::arbitrary(&mut Unstructured::new(b)) {
                super::backend::run(&i);
            }
        });
    }

    #[test]
    fn host_engine() {
        inputs(3, 300, 4000, |b| {
            if let Ok(i) = super::host::Input::arbitrary(&mut Unstructured::new(b)) {
                super::host::run(&i);
            }
        });
    }
}
