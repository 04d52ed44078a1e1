//! Fuzz target: see `weir::fuzzing::plugin_output`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::plugin_output(data));
