//! The protocol's pure parsers and one hostile SE at a fresh backend
//! (`device_fuzz::parsers`, docs/fuzzing.md). Run all targets: `bash .ci/fuzz`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| device_fuzz::parsers::run(data));
