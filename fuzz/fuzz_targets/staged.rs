//! Fuzz target: see `weir::fuzzing::staged`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::staged(data));
