//! Fuzz target: see `weir::fuzzing::fixture`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::fixture(data));
