#!/usr/bin/env bash
# Builds the Python metric provider into target/wasm32-wasip2/plugin/weir_plugin_python.wasm.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-python.sh >/dev/null
out=target/wasm32-wasip2/plugin/weir_plugin_python.wasm
mkdir -p "$(dirname "$out")"
# Built against the frozen contract 0.1.0 (wit/v0.1/weir-plugin.wit):
# the host keeps serving 0.1 plugins, and this one is how the tests see a
# 0.1 metric provider (from another toolchain) keep working unchanged.
# Rebuild only when the source or that contract changed.
if [ -f "$out" ] && [ "$out" -nt plugins/python-provider/app.py ] && [ "$out" -nt wit/v0.1/weir-plugin.wit ]; then
    exit 0
fi
target/pyenv/bin/componentize-py -d wit/v0.1 -w weir:plugin/metric-provider-plugin@0.1.0 \
    componentize -p plugins/python-provider app -o "$out.tmp"
mv "$out.tmp" "$out"
