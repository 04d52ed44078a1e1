#!/usr/bin/env bash
# Builds the Python metric provider into target/wasm32-wasip2/plugin/weir_plugin_python.wasm.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup-python.sh >/dev/null
out=target/wasm32-wasip2/plugin/weir_plugin_python.wasm
mkdir -p "$(dirname "$out")"
# Rebuild only when the source or the contract changed.
if [ -f "$out" ] && [ "$out" -nt plugins/python-provider/app.py ] && [ "$out" -nt wit/weir-plugin.wit ]; then
    exit 0
fi
target/pyenv/bin/componentize-py -d wit -w weir:plugin/metric-provider-plugin \
    componentize -p plugins/python-provider app -o "$out.tmp"
mv "$out.tmp" "$out"
