//! Replays the fuzzing corpora (`fuzz/corpus/<target>/`, the seeds and what
//! fuzzing kept) and every crash fuzzing found (`fuzz/regressions/<target>/`,
//! each fixed) through the same entry points the fuzz targets call, on the
//! stable toolchain, so CI checks them all without fuzzing. A panic is a
//! failure.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) {
            files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} has no seeds: the corpus is committed"
    );
    for file in &files {
        let data = std::fs::read(file).expect("read input");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&data)));
        assert!(outcome.is_ok(), "{} panicked", file.display());
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn registration() {
    replay("registration", weir::fuzzing::registration);
}

#[test]
fn manifests() {
    replay("manifests", weir::fuzzing::manifests);
}

#[test]
fn plugin_output() {
    replay("plugin_output", weir::fuzzing::plugin_output);
}

#[test]
fn staged() {
    replay("staged", weir::fuzzing::staged);
}

#[test]
fn condition() {
    replay("condition", weir::fuzzing::condition);
}

#[test]
fn condition_translate() {
    replay("condition_translate", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = weir_condition::translate(text);
        }
    });
}

#[test]
fn fixture() {
    replay("fixture", weir::fuzzing::fixture);
}

#[test]
fn api_request() {
    replay("api_request", weir::fuzzing::api_request);
}
