//! The platform parsers `device::hw::{cedt,pci,cxl}` (`device_fuzz::hw`, docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| device_fuzz::hw::run(data));
