//! Fuzz target: see `weir::fuzzing::condition`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::condition(data));
