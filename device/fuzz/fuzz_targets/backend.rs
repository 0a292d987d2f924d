//! The backend engine on sealed SEs and hostile host actions, v3 and non-coherent
//! (`device_fuzz::backend`, docs/fuzzing.md).
#![no_main]
libfuzzer_sys::fuzz_target!(|input: device_fuzz::backend::Input| device_fuzz::backend::run(&input));
