//! Fuzz target: see `weir::fuzzing::manifests`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::manifests(data));
