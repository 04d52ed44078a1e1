#!/usr/bin/env bash
# The main job: build the plugins and run `weir demo` on them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-plugins.sh >/dev/null
cargo run --release --bin weir -- demo "$@"
