//! Fuzz target: see `weir::fuzzing::api_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::api_request(data));
