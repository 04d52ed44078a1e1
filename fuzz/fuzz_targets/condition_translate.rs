//! Fuzz target: Weir's own parser and translation of conditions (lexer,
//! parser, emitter of `plugins/condition`), natively: a panic here is a bug
//! in Weir's code, whatever the sandbox would have made of it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = weir_condition::translate(text);
    }
});
