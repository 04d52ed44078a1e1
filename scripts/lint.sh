#!/usr/bin/env bash
# Formatting and lints for the host and, on their own target, the plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
plugins=(weir-plugin-sdk $(sed -n 's/^plugins=(\(.*\))$/\1/p' scripts/build-plugins.sh))
args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done
cargo clippy --profile plugin --target wasm32-wasip2 "${args[@]}" -- -D warnings
# The compatibility plugins' other builds (one world per feature).
for feature in contract-0-2 step-0-2 provider-0-2; do
  cargo clippy --profile plugin --target wasm32-wasip2 -p weir-plugin-compat --features "$feature" -- -D warnings
done
