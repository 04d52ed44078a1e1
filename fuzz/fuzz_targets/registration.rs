//! Fuzz target: see `weir::fuzzing::registration`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::registration(data));
