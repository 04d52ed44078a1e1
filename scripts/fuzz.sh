#!/usr/bin/env bash
# Fuzzing with libFuzzer through cargo-fuzz (nightly; not part of CI, which
# replays the corpora on stable in tests/tests/fuzz_corpus.rs). Builds the
# plugins (the sandboxed targets load them) and the targets, then runs each
# target for a bounded time, growing fuzz/corpus/<target>/; a crash is saved
# in fuzz/artifacts/<target>/ and, once fixed, copied to
# fuzz/regressions/<target>/ so the suite replays it.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60, all)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all=(registration manifests plugin_output staged condition condition_translate fixture api_request)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
bash scripts/build-plugins.sh
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export WEIR_PLUGINS_DIR="$PWD/target/wasm32-wasip2/plugin"
cd fuzz
# No sanitizer: the host is safe Rust; what fuzzing looks for is panics,
# aborts, hangs and runaway memory, which libFuzzer catches by itself.
cargo +nightly fuzz build --sanitizer none
mkdir -p logs
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "== $target: $seconds s"
    cargo +nightly fuzz run --sanitizer none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
        2>&1 | tee "logs/$target.log" | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==|SUMMARY)' || true
done
