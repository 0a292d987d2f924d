//! The host engine against a hostile device (`device_fuzz::host`, docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|input: device_fuzz::host::Input| device_fuzz::host::run(&input));
